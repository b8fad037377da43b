from parrotscope.index import run_index_part
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    i = snakemake.input
    run_index_part(snakemake.wildcards.part, i.samples, i.spot, i.match,
                   {s: i[f"score_{s}"] for s in snakemake.params.scorers}, snakemake.output[0],
                   snakemake.params.heldout)
