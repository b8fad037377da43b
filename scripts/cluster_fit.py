from parrotscope.cluster import run_cluster_fit
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    run_cluster_fit(list(snakemake.input.embed), snakemake.params.cfg, snakemake.output.model,
                    snakemake.output.summary, threads=snakemake.threads)
