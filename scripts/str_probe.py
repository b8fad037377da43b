"""Snakemake script: zero-shot word reading of one source CLIP on one benchmark."""

from parrotscope.smk import log_to_file
from parrotscope.str_train import probe_str

with log_to_file(snakemake):
    p, i, o = snakemake.params, snakemake.input, snakemake.output
    probe_str(p.spec, i.bench, o.json, o.table, benchmark=snakemake.wildcards.bench, template=p.template,
              batch_size=p.batch_size, max_length=p.max_length, device=p.device,
              threads=snakemake.threads, seed=p.seed)
