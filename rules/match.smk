# Stage `match`: Co-Embedded Text Rate (exact, as the paper's Algorithm 1, and fuzzy) per sample.


rule match:
    input:
        samples="results/{dataset}/samples/{part}.parquet",
        spot="results/{dataset}/spot/{part}.parquet",
    output:
        "results/{dataset}/match/{part}.parquet",
    params:
        normalisation=config["match"]["normalisation"],
        fuzzy_threshold=config["match"]["fuzzy_threshold"],
        code=code_version("match"),
    log:
        "logs/match/{dataset}/{part}.log",
    benchmark:
        "benchmarks/match/{dataset}/{part}.tsv"
    resources:
        mem_mb=2000,
    group:
        "part"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/match.py"
