"""Snakemake script: pre-train one BLIP on a curated subset's shards (torchrun when blip.gpus > 1 on CUDA)."""

from parrotscope.blip_train import launch_pretrain
from parrotscope.devices import resolve_device
from parrotscope.shards import count_training_samples
from parrotscope.smk import log_to_file
from parrotscope.train import check_training_shards

with log_to_file(snakemake):
    p, i, o = snakemake.params, snakemake.input, snakemake.output
    shards = list(i.shards)
    check_training_shards(shards, i.counts)
    processes = int(p.gpus) if resolve_device(p.device).startswith("cuda") else 1
    launch_pretrain(dict(shards=shards, n_samples=count_training_samples(i.counts), tokenizer_dir=i.tokenizer,
                         model=p.model, hparams=p.hparams, seed=p.seed, out_model=o.model, out_json=o.json,
                         device=p.device, threads=snakemake.threads), processes)
