"""Snakemake script: score a fine-tuned BLIP on its set's test split."""

from parrotscope.blip_data import configured_spec
from parrotscope.blip_train import evaluate_blip
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    p, i, o = snakemake.params, snakemake.input, snakemake.output
    spec = configured_spec(p.set, i.set[0] if i.set else None)
    evaluate_blip(spec, i.model, i.tokenizer, p.settings, o.json, o.table, device=p.device, threads=snakemake.threads)
