# Stage `inpaint`: text removal on the images with text, one job per part and (method, mask).
# Masks: all spotted words, only co-embedded words, and the paper's random controls (regions of
# another image of the same part).


rule inpaint:
    input:
        spot="results/{dataset}/spot/{part}.parquet",
        match="results/{dataset}/match/{part}.parquet",
    output:
        tar="results/{dataset}/inpaint/{method}/{mask}/{part}.tar",
        counts="results/{dataset}/inpaint/{method}/{mask}/{part}.counts.json",
    params:
        shards=part_shards,
        options=lambda w: config["inpaint"][w.method],
        seed=config["inpaint"]["seed"],
        dilate_px=config["inpaint"]["dilate_px"],
        batch_size=config["inpaint"]["batch_size"],
        normalisation=config["match"]["normalisation"],
        max_pixels=config["ingest"]["max_pixels"],
        code=code_version("inpaint"),
    wildcard_constraints:
        method="telea|lama|sd",
        mask="all|co|rand_all|rand_co",
    # Telea is single-threaded; LaMa and SD use torch threads (or the GPU).
    threads: lambda w: 1 if w.method == "telea" else config["inpaint"]["threads"]
    log:
        "logs/inpaint/{dataset}/{method}/{mask}/{part}.log",
    benchmark:
        "benchmarks/inpaint/{dataset}/{method}/{mask}/{part}.tsv"
    resources:
        mem_mb=4000,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/inpaint.py"
