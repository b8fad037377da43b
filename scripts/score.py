from parrotscope.score import run_score
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    p, i = snakemake.params, snakemake.input
    inpainted = {k.removeprefix("inpaint_"): v for k, v in i.items() if k.startswith("inpaint_")}
    run_score(i.samples, p.shards, inpainted, p.spec, snakemake.output[0], batch_size=p.batch_size,
              device=p.device, max_pixels=p.max_pixels, threads=snakemake.threads,
              workers=snakemake.resources.workers, precision=p.precision)
