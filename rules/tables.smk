# Stage `tables`: the paper's tables from the per-sample tables.


rule table1:
    input:
        match=lambda w: [f"results/{d}/match/{p}.parquet" for d in config["datasets"] for p in part_names(d)],
        counts=expand("results/{dataset}/parts.json", dataset=list(config["datasets"])),
    output:
        "results/table1.csv",
    params:
        match={d: [f"results/{d}/match/{p}.parquet" for p in part_names(d)] for d in config["datasets"]},
        counts={d: f"results/{d}/parts.json" for d in config["datasets"]},
        decimals=config["tables"]["decimals"],
        code=code_version("tables"),
    log:
        "logs/tables/table1.log",
    benchmark:
        "benchmarks/tables/table1.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/table1.py"


rule table2:
    input:
        index=lambda w: f"results/{config['study_dataset']}/index.parquet",
    output:
        table="results/table2.csv",
        figure="results/figures/fig5_relative_scores.png",
    params:
        scorers=list(config["score"]["scorers"]),
        decimals=config["tables"]["decimals"],
        code=code_version("tables"),
    log:
        "logs/tables/table2.log",
    benchmark:
        "benchmarks/tables/table2.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/table2.py"
