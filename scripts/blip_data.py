"""Snakemake script: one of the demo's miniature BLIP downstream sets, in its dataset's layout."""

from parrotscope.blip_data import write_demo_set
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    p = snakemake.params
    print(write_demo_set(p.generator, snakemake.wildcards.name, p.demo["train"], p.demo["test"],
                         snakemake.output[0], p.demo["captions"]))
