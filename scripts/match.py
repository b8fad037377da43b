from parrotscope.match import run_match
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    run_match(snakemake.input.samples, snakemake.input.spot, snakemake.output[0],
              snakemake.params.normalisation, snakemake.params.fuzzy_threshold)
