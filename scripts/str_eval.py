"""Snakemake script: word accuracy of one recogniser on one benchmark (predict-and-refine)."""

from parrotscope.smk import log_to_file
from parrotscope.str_train import evaluate_str

with log_to_file(snakemake):
    p, i, o = snakemake.params, snakemake.input, snakemake.output
    evaluate_str(i.model, i.bench, o.json, o.table, benchmark=snakemake.wildcards.bench,
                 batch_size=p.batch_size, device=p.device, threads=snakemake.threads, spec=p.spec)
