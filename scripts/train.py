from parrotscope.ingest import read_part_shards
from parrotscope.smk import log_to_file
from parrotscope.train import train_from_counts

with log_to_file(snakemake):
    p = snakemake.params
    shards = read_part_shards(snakemake.input.counts) if p.shards_from_parts else list(snakemake.input.shards)
    train_from_counts(shards, snakemake.input.counts, p.arch, p.hparams, p.run_dir,
                     snakemake.output.checkpoint, snakemake.output.results, device=p.device,
                     seed=p.seed, threads=snakemake.threads)
