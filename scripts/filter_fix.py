from parrotscope.db import engine_of
from parrotscope.filters import run_fix
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    i, p = snakemake.input, snakemake.params
    run_fix(list(i.index), snakemake.output.key_table, snakemake.output.stats, p.scorer, p.fix, list(i.assign),
            list(i.embed), list(i.aesthetic), engine_of(snakemake.resources, snakemake.threads))
