from parrotscope.db import engine_of
from parrotscope.filters import run_baseline
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    i, p = snakemake.input, snakemake.params
    run_baseline(p.method, list(i.index), i.fix_stats, snakemake.output.key_table, snakemake.output.stats, p.scorer,
                 p.seed, p.fractions, list(i.rescore), engine_of(snakemake.resources, snakemake.threads))
