from parrotscope.embed import run_embed
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    p, o = snakemake.params, snakemake.output
    run_embed(snakemake.input.samples, p.shards, p.spec, o.table, o.counts, batch_size=p.batch_size,
              device=p.device, max_pixels=p.max_pixels, threads=snakemake.threads,
              workers=snakemake.resources.workers, precision=p.precision)
