from parrotscope.db import engine_of
from parrotscope.figures import run_text_figures
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    i, p, o = snakemake.input, snakemake.params, snakemake.output
    run_text_figures(list(i.index), p.spot, p.samples, p.scorer, p.normalisation, p.max_images, p.seed, o.fig4a,
                     o.fig4b, o.fig4c, engine=engine_of(snakemake.resources, snakemake.threads))
