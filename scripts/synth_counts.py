from parrotscope.db import engine_of
from parrotscope.smk import log_to_file
from parrotscope.synth import run_synth_counts

with log_to_file(snakemake):
    w, p = snakemake.wildcards, snakemake.params
    run_synth_counts(snakemake.input.index, w.source, int(w.n), p.normalisation, snakemake.output[0],
                     engine_of(snakemake.resources, snakemake.threads))
