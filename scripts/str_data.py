"""Snakemake script: one built-in STR word set (rendered train/test words, or demo crops) as an LMDB."""

from parrotscope.smk import log_to_file
from parrotscope.str_data import run_str_data

with log_to_file(snakemake):
    p, o = snakemake.params, snakemake.output
    print(run_str_data(snakemake.wildcards.name, o.lmdb, o.json, p.data, p.seed, p.max_length,
                       generator=p.generator, exclude=p.exclude))
