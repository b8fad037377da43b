"""Snakemake script: write one document file (and its images) of an MMC4-like demo dataset."""

from parrotscope.demo.documents import write_document_shard
from parrotscope.smk import log_to_file

smk = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
with log_to_file(smk):
    print(write_document_shard(smk.params.demo, int(smk.wildcards.shard), smk.output.docs, smk.output.images))
