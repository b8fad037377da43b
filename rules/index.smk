# Stage `index`: the parrot index, one row per sample joining everything known about it.
# Two views: `index_text` joins ingest, spot and match only (enough for the text criteria of
# Curation I-II and the synthetic vocabularies, so Tables 3-4 need no inpainting or scoring);
# `index` adds every scorer's columns (Table 2, Curation III).


rule index_text:
    input:
        samples=per_part("results/{dataset}/samples/{part}.parquet"),
        spot=per_part("results/{dataset}/spot/{part}.parquet"),
        match=per_part("results/{dataset}/match/{part}.parquet"),
    output:
        "results/{dataset}/index_text.parquet",
    params:
        scorers=[],
        parts=lambda w: part_names(w.dataset),
        code=code_version("index"),
    log:
        "logs/index/{dataset}_text.log",
    benchmark:
        "benchmarks/index/{dataset}_text.tsv"
    resources:
        mem_mb=8000,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/index.py"


rule index:
    input:
        samples=per_part("results/{dataset}/samples/{part}.parquet"),
        spot=per_part("results/{dataset}/spot/{part}.parquet"),
        match=per_part("results/{dataset}/match/{part}.parquet"),
        scores=lambda w: [f"results/{w.dataset}/score/{s}/{p}.parquet"
                          for s in config["score"]["scorers"] for p in part_names(w.dataset)],
    output:
        "results/{dataset}/index.parquet",
    params:
        scorers=list(config["score"]["scorers"]),
        parts=lambda w: part_names(w.dataset),
        code=code_version("index"),
    log:
        "logs/index/{dataset}.log",
    benchmark:
        "benchmarks/index/{dataset}.tsv"
    resources:
        mem_mb=8000,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/index.py"
