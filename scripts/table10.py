from parrotscope.tables import run_table10
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    i, p = snakemake.input, snakemake.params
    run_table10(p.subsets, p.archs, list(i.evals), list(i.syncs), list(i.sizes), snakemake.wildcards.dataset, snakemake.output[0],
                p.decimals, len(p.seeds))
