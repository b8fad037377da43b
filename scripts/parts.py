from parrotscope.ingest import run_parts
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    run_parts(dict(zip(snakemake.params.parts, snakemake.input.counts)), snakemake.output[0])
