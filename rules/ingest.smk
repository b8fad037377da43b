# Stage `ingest`: one row per sample with its status, and the part's sample counts; parts.json
# gathers them per dataset.


rule ingest:
    input:
        shards=part_shard_files,
    output:
        table="results/{dataset}/samples/{part}.parquet",
        counts="results/{dataset}/samples/{part}.counts.json",
    params:
        shards=part_shards,
        max_pixels=config["ingest"]["max_pixels"],
        on_bad_shard=lambda w: bad_shard_mode(w.dataset),
        code=code_version("ingest"),
    log:
        "logs/ingest/{dataset}/{part}.log",
    benchmark:
        "benchmarks/ingest/{dataset}/{part}.tsv"
    resources:
        mem_mb=2000,
    group:
        "part"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/ingest.py"


rule parts:
    input:
        counts=per_part("results/{dataset}/samples/{part}.counts.json"),
    output:
        "results/{dataset}/parts.json",
    params:
        parts=lambda w: part_names(w.dataset),
        code=code_version("ingest"),
    log:
        "logs/parts/{dataset}.log",
    benchmark:
        "benchmarks/parts/{dataset}.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/parts.py"
