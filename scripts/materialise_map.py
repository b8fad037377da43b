from parrotscope.materialise import run_map
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    p = snakemake.params
    run_map(snakemake.input.parts, snakemake.wildcards.part, dict(zip(p.subsets, snakemake.input.key_tables)),
            dict(zip(p.subsets, snakemake.output.pieces)), snakemake.output.counts, p.pass_name)
