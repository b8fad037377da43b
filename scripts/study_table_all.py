"""Snakemake script: one study table of every study dataset, side by side."""

from parrotscope.smk import log_to_file
from parrotscope.tables import run_side_by_side

with log_to_file(snakemake):
    run_side_by_side(list(snakemake.input), list(snakemake.params.datasets), snakemake.output[0])
