from parrotscope.db import engine_of
from parrotscope.smk import log_to_file
from parrotscope.tables import run_table2

with log_to_file(snakemake):
    run_table2(list(snakemake.input.index), snakemake.params.scorers, snakemake.output.table,
               snakemake.output.figure, snakemake.params.decimals, engine_of(snakemake.resources, snakemake.threads),
               list(snakemake.input.assign))
