"""Snakemake script: benchmark one trained CLIP with clip-benchmark (parrotscope.evaluate)."""

from parrotscope.evaluate import evaluate_model
from parrotscope.smk import log_to_file

smk = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
with log_to_file(smk):
    p = smk.params
    evaluate_model({"name": p.name, "arch": p.arch, "checkpoint": smk.input.checkpoint}, p.tasks, smk.output[0],
                   batch_size=p.batch_size, device=p.device, num_workers=p.num_workers, amp=p.amp,
                   threads=smk.threads)
