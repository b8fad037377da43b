from parrotscope.filters import run_rescore
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    p, i = snakemake.params, snakemake.input
    run_rescore(snakemake.wildcards.variant, i.samples, i.spot, i.match, p.shards, p.spec, snakemake.output[0],
                batch_size=p.batch_size, device=p.device, max_pixels=p.max_pixels, threads=snakemake.threads,
                workers=snakemake.resources.workers, precision=p.precision, **(p.tmars or {}))
