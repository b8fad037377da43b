"""Snakemake script: publish a result under a second name (the first study dataset's tables as
`results/{table}.csv`)."""

from parrotscope.io import copy_file
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    copy_file(snakemake.input[0], snakemake.output[0])
