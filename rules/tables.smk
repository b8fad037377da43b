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
    threads: config["db"]["threads"]
    resources:
        mem_mb=config["db"]["mem_mb"],
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
        index=lambda w: index_parts(w.dataset),
        assign=lambda w: assign_parts(w.dataset) if config["tables"]["cluster_spread"] else [],
    output:
        table="results/{dataset}/table2.csv",
        figure="results/{dataset}/figures/fig5_relative_scores.png",
    params:
        scorers=list(config["score"]["scorers"]),
        decimals=config["tables"]["decimals"],
        code=code_version("tables"),
    wildcard_constraints:
        dataset=STUDY_DATASET,
    threads: config["db"]["threads"]
    resources:
        mem_mb=config["db"]["mem_mb"],
    log:
        "logs/tables/{dataset}/table2.log",
    benchmark:
        "benchmarks/tables/{dataset}/table2.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/table2.py"


rule curation_table:
    # Tables 3-6: one row per curated subset, per architecture the DataComp-style columns (IN,
    # Ret., Avg.) and the synthetic-text measures; Avg. S(raw) of each subset (Tables 5-6).
    input:
        unpack(curation_table_inputs),
    output:
        table="results/{dataset}/{table}.csv",
        # Each training seed's own rows, to check a claim seed by seed.
        seeds="results/{dataset}/{table}_seeds.csv",
    params:
        subsets=lambda w: config["curate"]["tables"][w.table],
        archs=config["train"]["models"],
        seeds=config["train"]["seeds"],
        decimals=config["tables"]["decimals"],
        code=code_version("tables"),
    wildcard_constraints:
        dataset=STUDY_DATASET,
        table="|".join(config["curate"]["tables"]) or "(?!)",
    log:
        "logs/tables/{dataset}/{table}.log",
    benchmark:
        "benchmarks/tables/{dataset}/{table}.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/curation_table.py"


rule study_table:
    # The first study dataset's tables are the design card's `results/table3.csv` and so on.
    input:
        lambda w: study_table_path(config["study_dataset"], w.table),
    output:
        "results/{table}.csv",
    params:
        dataset=config["study_dataset"],
    wildcard_constraints:
        table=STUDY_TABLE,
    log:
        "logs/tables/{table}.study.log",
    benchmark:
        "benchmarks/tables/{table}.study.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/copy_result.py"


rule study_fig5:
    input:
        f"results/{config['study_dataset']}/figures/fig5_relative_scores.png",
    output:
        report("results/figures/fig5_relative_scores.png", caption="../report/fig5_right.rst",
               category="Text removal (Sec. 4)", subcategory="Figures"),
    params:
        dataset=config["study_dataset"],
    log:
        "logs/tables/fig5_relative_scores.study.log",
    benchmark:
        "benchmarks/tables/fig5_relative_scores.study.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/copy_result.py"


rule study_table_all:
    # A study table of every study dataset side by side, a `dataset` column first (the paper's
    # Tables 11-12 are Tables 2-3 on CC12M).
    input:
        lambda w: [study_table_path(d, w.table) for d in study_datasets_with(w.table)],
    output:
        "results/{table}_all.csv",
    params:
        datasets=lambda w: study_datasets_with(w.table),
        code=code_version("tables"),
    wildcard_constraints:
        table=STUDY_TABLE,
    log:
        "logs/tables/{table}_all.log",
    benchmark:
        "benchmarks/tables/{table}_all.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/study_table_all.py"


rule fig8:
    # Fig. 8: the synthetic-text measures of every model trained on a curated subset.
    input:
        sync=lambda w: [curation_eval_path(*m, "sync.json") for m in curated_models()],
    output:
        report("results/figures/fig8_sync_trained.png", caption="../report/fig8.rst",
               category="Trained CLIPs (Sec. 6)"),
    params:
        labels=lambda w: model_labels(curated_models()),
        code=code_version("synth"),
    log:
        "logs/tables/fig8.log",
    benchmark:
        "benchmarks/tables/fig8.tsv"
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/fig8.py"
