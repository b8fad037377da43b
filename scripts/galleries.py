from parrotscope.db import engine_of
from parrotscope.figures import run_galleries
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    i, p, o = snakemake.input, snakemake.params, snakemake.output
    run_galleries(list(i.index), list(i.assign), p.spot, p.scorer, p.normalisation, p.share, p.n_clusters_shown,
                  p.top_fraction, p.n_top, p.seed, p.max_pixels, o.fig3b, o.fig1,
                  engine=engine_of(snakemake.resources, snakemake.threads))
