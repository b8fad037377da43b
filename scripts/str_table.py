"""Snakemake script: results/table_str.csv from every recogniser's and probe's metrics."""

from parrotscope.smk import log_to_file
from parrotscope.tables import run_str_table

with log_to_file(snakemake):
    p = snakemake.params
    print(run_str_table(p.entries, snakemake.output[0], p.decimals).to_string())
