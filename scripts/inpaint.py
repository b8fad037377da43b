from parrotscope.inpaint import run_inpaint
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    p, w = snakemake.params, snakemake.wildcards
    options = dict(p.options)
    if w.method != "telea":  # torch backends: as many CPU threads as the job was given
        options.setdefault("threads", snakemake.threads)
    run_inpaint(snakemake.input.spot, snakemake.input.match, p.shards, snakemake.output.tar,
                snakemake.output.counts, method=w.method, options=options, mask_kind=w.mask,
                seed=p.seed, dilate_px=p.dilate_px, normalisation=p.normalisation,
                max_pixels=p.max_pixels, batch_size=p.batch_size)
