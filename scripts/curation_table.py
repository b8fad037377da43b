from parrotscope.smk import log_to_file
from parrotscope.tables import run_curation_table

with log_to_file(snakemake):
    i, p = snakemake.input, snakemake.params
    run_curation_table(p.subsets, p.archs, list(i.evals), list(i.syncs), list(i.stats), list(i.key_tables),
                       snakemake.output[0], p.decimals, len(p.seeds))
