from parrotscope.ingest import run_ingest
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    run_ingest(snakemake.params.shards, snakemake.params.max_pixels,
               snakemake.output.table, snakemake.output.counts, snakemake.params.on_bad_shard)
