"""Snakemake script: Fig. 10, Table 16 and Fig. 17, examples picked from the parrot index."""

from parrotscope.db import engine_of
from parrotscope.figures import run_example_figures
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    i, p, o = snakemake.input, snakemake.params, snakemake.output
    run_example_figures(list(i.index), p.spot, p.inpaint, p.scorer, p.normalisation, p.n_removal, p.n_parrot,
                        p.max_pixels, o.fig10, o.fig17, o.table16, engine=engine_of(snakemake.resources, snakemake.threads))
