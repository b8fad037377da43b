"""Snakemake script: one trained CLIP's S on the held-out pairs of Fig. 9."""

from parrotscope.heldout import run_score
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    i, o, p = snakemake.input, snakemake.output, snakemake.params
    run_score(p.spec, i.pairs, i.raw, i.removed, o.table, o.json, p.batch_size, p.device, p.max_pixels, p.precision,
              snakemake.threads)
