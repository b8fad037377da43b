from parrotscope.index import run_index
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    i = snakemake.input
    run_index(snakemake.params.parts, list(i.samples), list(i.spot), list(i.match), list(i.get("scores", [])),
              snakemake.params.scorers, snakemake.output[0])
