from parrotscope.tables import run_filters_table
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    i, p = snakemake.input, snakemake.params
    run_filters_table(p.subsets, p.archs, list(i.evals), list(i.syncs), list(i.stats), snakemake.output[0],
                      p.decimals, len(p.seeds))
