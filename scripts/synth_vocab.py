from parrotscope.db import engine_of
from parrotscope.smk import log_to_file
from parrotscope.synth import run_vocab_from_counts

with log_to_file(snakemake):
    run_vocab_from_counts(list(snakemake.input.counts), snakemake.params.top_k, snakemake.output[0],
                          engine_of(snakemake.resources, snakemake.threads))
