from parrotscope.curate import run_select
from parrotscope.db import engine_of
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    p = snakemake.params
    run_select(list(snakemake.input.index), snakemake.output.key_table, snakemake.output.stats,
               snakemake.wildcards.subset, p.conditions, p.size, p.seed, p.scorer,
               engine_of(snakemake.resources, snakemake.threads))
