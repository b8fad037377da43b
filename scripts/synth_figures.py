from parrotscope.smk import log_to_file
from parrotscope.synth import run_synth_figures

with log_to_file(snakemake):
    p, o = snakemake.params, snakemake.output
    run_synth_figures(p.tables, p.metrics, o.curves, o.bars, n_bins=p.freq_bins)
