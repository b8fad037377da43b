"""Snakemake script: the held-out pairs of Fig. 9, copied into two small tars."""

from parrotscope.db import engine_of
from parrotscope.heldout import run_pairs
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    i, o, p = snakemake.input, snakemake.output, snakemake.params
    run_pairs(list(i.index), p.part_shards, p.removed, p.max_per_group, p.seed, o.table, o.raw, o.removed, o.counts,
              engine_of(snakemake.resources, snakemake.threads))
