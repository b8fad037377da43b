from parrotscope.db import engine_of
from parrotscope.figures import run_cluster_figures
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    i, p, o = snakemake.input, snakemake.params, snakemake.output
    run_cluster_figures(list(i.index), list(i.assign), i.model, p.scorer, p.max_clusters, p.seed, o.profile,
                        o.fig3a, o.fig5, engine=engine_of(snakemake.resources, snakemake.threads))
