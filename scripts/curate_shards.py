import os

from parrotscope.curate import run_materialise
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    run_materialise(snakemake.input.key_table, snakemake.params.shards, os.path.dirname(snakemake.output.sizes),
                    snakemake.params.n_shards)
