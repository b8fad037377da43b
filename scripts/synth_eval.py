from parrotscope.smk import log_to_file
from parrotscope.synth import run_synth_eval

with log_to_file(snakemake):
    p, o = snakemake.params, snakemake.output
    run_synth_eval(snakemake.input.benchmark, p.spec, o.json, o.table, batch_size=p.batch_size,
                   template=p.template, device=p.device, threads=snakemake.threads, n_bins=p.freq_bins,
                   workers=snakemake.resources.workers, precision=p.precision)
