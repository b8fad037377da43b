# Stage `index`: the parrot index, one row per sample joining everything known about it, one file
# per part (per-part jobs, parallel on a cluster like spot and match); the index of a dataset is
# its folder of parts, which dataset-wide steps query through DuckDB (parrotscope.db).
# Two views: `index_text` joins ingest, spot and match only (enough for the text criteria of
# Curation I-II and the synthetic vocabularies, so Tables 3-4 need no inpainting or scoring);
# `index` adds every scorer's columns (Table 2, Curation III).


rule index_text:
    input:
        samples="results/{dataset}/samples/{part}.parquet",
        spot="results/{dataset}/spot/{part}.parquet",
        match="results/{dataset}/match/{part}.parquet",
    output:
        "results/{dataset}/index_text/{part}.parquet",
    params:
        scorers=[],
        heldout=config["heldout"],
        code=code_version("index"),
    log:
        "logs/index/{dataset}/text_{part}.log",
    benchmark:
        "benchmarks/index/{dataset}/text_{part}.tsv"
    resources:
        mem_mb=2000,
    group:
        "part"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/index.py"


rule index:
    input:
        unpack(lambda w: {f"score_{s}": f"results/{w.dataset}/score/{s}/{w.part}.parquet"
                          for s in config["score"]["scorers"]}),
        samples="results/{dataset}/samples/{part}.parquet",
        spot="results/{dataset}/spot/{part}.parquet",
        match="results/{dataset}/match/{part}.parquet",
    output:
        "results/{dataset}/index/{part}.parquet",
    params:
        scorers=list(config["score"]["scorers"]),
        heldout=config["heldout"],
        code=code_version("index"),
    log:
        "logs/index/{dataset}/{part}.log",
    benchmark:
        "benchmarks/index/{dataset}/{part}.tsv"
    resources:
        mem_mb=2000,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/index.py"
