from parrotscope.smk import log_to_file
from parrotscope.synth import run_sync_bars

with log_to_file(snakemake):
    run_sync_bars(snakemake.params.labels, list(snakemake.input.sync), snakemake.output[0])
