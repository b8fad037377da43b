"""Snakemake script: results/table7.csv from every fine-tuned BLIP's scores."""

from parrotscope.smk import log_to_file
from parrotscope.tables import run_table7

with log_to_file(snakemake):
    p = snakemake.params
    print(run_table7(p.entries, snakemake.output[0], p.decimals).to_string())
