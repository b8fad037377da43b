from parrotscope.smk import log_to_file
from parrotscope.tables import run_filters_table

with log_to_file(snakemake):
    i, p, o = snakemake.input, snakemake.params, snakemake.output
    run_filters_table(p.subsets, p.archs, list(i.evals), list(i.syncs), list(i.stats), o.table, p.decimals,
                      p.seeds, o.seeds)
