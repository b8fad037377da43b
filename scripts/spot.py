from parrotscope.spot import run_spot
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    p = snakemake.params
    run_spot(snakemake.input.samples, p.shards, snakemake.output[0], backend=p.backend,
             options=p.options, threads=snakemake.threads, min_score=p.min_score,
             min_alnum=p.min_alnum, max_pixels=p.max_pixels, device=p.device)
