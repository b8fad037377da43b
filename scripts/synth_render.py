from parrotscope.smk import log_to_file
from parrotscope.synth import run_synth_render

with log_to_file(snakemake):
    p = snakemake.params
    run_synth_render(snakemake.input.vocab, snakemake.output[0], p.font, p.font_px, p.size, p.placement)
