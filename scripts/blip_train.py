"""Snakemake script: pre-train one BLIP on a curated subset's shards."""

from parrotscope.blip_train import pretrain_blip
from parrotscope.shards import count_training_samples
from parrotscope.smk import log_to_file
from parrotscope.train import check_training_shards

with log_to_file(snakemake):
    p, i, o = snakemake.params, snakemake.input, snakemake.output
    shards = list(i.shards)
    check_training_shards(shards, i.counts)
    pretrain_blip(shards, count_training_samples(i.counts), i.tokenizer, p.model, p.hparams, p.seed, o.model, o.json,
                  device=p.device, threads=snakemake.threads)
