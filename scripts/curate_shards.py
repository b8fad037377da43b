import os

from parrotscope.curate import run_materialise
from parrotscope.ingest import read_part_shards
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    run_materialise(snakemake.input.key_table, read_part_shards(snakemake.input.parts),
                    os.path.dirname(snakemake.output.sizes), snakemake.params.n_shards)
