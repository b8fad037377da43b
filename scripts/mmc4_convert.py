"""Snakemake script: one part's MMC4 documents as a webdataset tar of image-caption samples."""

from parrotscope.mmc4 import convert_part
from parrotscope.smk import log_to_file

smk = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
with log_to_file(smk):
    convert_part(list(smk.params.docs), smk.params.images, smk.output.tar, smk.output.counts,
                 smk.params.on_bad_shard)
