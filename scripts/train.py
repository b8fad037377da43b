from parrotscope.smk import log_to_file
from parrotscope.train import train_from_counts

with log_to_file(snakemake):
    p = snakemake.params
    train_from_counts(list(snakemake.input.shards), snakemake.input.counts, p.arch, p.hparams, p.run_dir,
                     snakemake.output.checkpoint, snakemake.output.results, device=p.device,
                     seed=p.seed, threads=snakemake.threads)
