from parrotscope.materialise import run_reduce
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    p = snakemake.params
    run_reduce(snakemake.input.key_table, list(snakemake.input.pieces), p.output, snakemake.wildcards.subset,
               p.n_shards, p.shards_dir, p.listing)
