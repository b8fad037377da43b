from parrotscope.db import engine_of
from parrotscope.smk import log_to_file
from parrotscope.tables import run_table1

with log_to_file(snakemake):
    run_table1(snakemake.params.match, snakemake.params.counts, snakemake.output[0],
               snakemake.params.decimals, engine_of(snakemake.resources, snakemake.threads))
