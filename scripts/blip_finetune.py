"""Snakemake script: fine-tune a pre-trained BLIP on one downstream task and set."""

from parrotscope.blip_data import configured_spec
from parrotscope.blip_train import finetune_blip
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    p, i, o = snakemake.params, snakemake.input, snakemake.output
    spec = configured_spec(p.set, i.set[0] if i.set else None)
    finetune_blip(snakemake.wildcards.task, spec, i.model, i.tokenizer, p.hparams, p.seed, o.model, o.json,
                  device=p.device, threads=snakemake.threads)
