from parrotscope.cluster import run_cluster_assign
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    run_cluster_assign(snakemake.input.embed, snakemake.input.model, snakemake.output[0])
