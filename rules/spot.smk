# Stage `spot`: text spotting on every usable image of a part (RapidOCR by default).


rule spot:
    input:
        samples="results/{dataset}/samples/{part}.parquet",
    output:
        "results/{dataset}/spot/{part}.parquet",
    params:
        shards=part_shards,
        backend=config["spot"]["backend"],
        options=config["spot"]["options"],
        min_score=config["spot"]["min_score"],
        min_alnum=config["spot"]["min_alnum"],
        max_pixels=config["ingest"]["max_pixels"],
        device=config["spot"]["device"],
        code=code_version("spot"),
    threads: config["spot"]["threads"]
    log:
        "logs/spot/{dataset}/{part}.log",
    benchmark:
        "benchmarks/spot/{dataset}/{part}.tsv"
    resources:
        mem_mb=3000,
    group:
        "part"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/spot.py"
