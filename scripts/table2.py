from parrotscope.smk import log_to_file
from parrotscope.tables import run_table2

with log_to_file(snakemake):
    run_table2(snakemake.input.index, snakemake.params.scorers, snakemake.output.table,
               snakemake.output.figure, snakemake.params.decimals)
