"""Snakemake script: write one held-out, text-free demo evaluation set (clip-benchmark layout)."""

from parrotscope.demo.eval_sets import write_eval_set
from parrotscope.smk import log_to_file

smk = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
with log_to_file(smk):
    print(write_eval_set(smk.params.demo, smk.wildcards.evalset, smk.output.dir))
