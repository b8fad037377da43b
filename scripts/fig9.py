"""Snakemake script: Fig. 9 and its table from every trained CLIP's held-out scores."""

from parrotscope.heldout import run_fig9
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    p = snakemake.params
    run_fig9(p.labels, p.seeds, list(snakemake.input), snakemake.output.table, snakemake.output.figure, p.decimals)
