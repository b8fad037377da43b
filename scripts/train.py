from parrotscope.smk import log_to_file
from parrotscope.train import train_from_parts

with log_to_file(snakemake):
    p = snakemake.params
    train_from_parts(list(snakemake.input.shards), snakemake.input.parts, p.arch, p.hparams, p.run_dir,
                     snakemake.output.checkpoint, snakemake.output.results, device=p.device,
                     seed=p.seed, threads=snakemake.threads)
