"""Snakemake script: write one training shard of the built-in demo dataset."""

from parrotscope.demo.pool import write_demo_shard
from parrotscope.smk import log_to_file

smk = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
with log_to_file(smk):
    print(write_demo_shard(smk.params.demo, int(smk.wildcards.shard), smk.output.tar))
