"""Snakemake script: fine-tune one source CLIP as a CLIP4STR recogniser."""

from parrotscope.smk import log_to_file
from parrotscope.str_model import STRConfig
from parrotscope.str_train import train_str

with log_to_file(snakemake):
    p, o = snakemake.params, snakemake.output
    train_str(p.spec, snakemake.input.train, STRConfig(**p.model), p.hparams, o.model, o.json,
              device=p.device, seed=p.seed, threads=snakemake.threads)
