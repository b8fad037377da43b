"""Snakemake script: BLIP's tokenizer, trained on the study captions and the sets' texts, or loaded."""

from parrotscope.blip_model import build_tokenizer
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    p = snakemake.params
    demo = {path.rsplit("/", 1)[-1]: path for path in snakemake.input.sets}
    print(build_tokenizer(p.tokenizer, list(snakemake.input.index), p.sets, demo, p.seed, snakemake.output[0]))
