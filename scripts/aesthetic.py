from parrotscope.aesthetic import run_aesthetic
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    run_aesthetic(snakemake.input.embed, snakemake.input.weights, snakemake.output[0],
                  batch_size=snakemake.params.batch_size, threads=snakemake.threads)
