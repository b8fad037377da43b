# Stage `curate`: equal-size training subsets chosen by criteria on the parrot index (Curation I-III).
# Selection (keys only) and materialising (copying samples into shards, rules/materialise.smk) are
# separate jobs, as in DataComp: criteria can be inspected, and changed, without copying images.

from parrotscope.curate import check_curate, curate_scorer, needs_scores, subset_size, subset_wildcard

check_curate(config)
CURATE_SUBSET = subset_wildcard(config["curate"]["subsets"])


rule curate_select:
    input:
        index=curate_index,
    output:
        key_table="results/{dataset}/subsets/{subset}/keys.parquet",
        stats="results/{dataset}/subsets/{subset}/stats.json",
    wildcard_constraints:
        subset=CURATE_SUBSET,
    params:
        conditions=lambda w: config["curate"]["subsets"][w.subset],
        size=lambda w: subset_size(config, w.subset, w.dataset),
        seed=config["curate"]["seed"],
        scorer=curate_scorer(config),
        code=code_version("curate"),
    log:
        "logs/curate/{dataset}/{subset}.select.log",
    benchmark:
        "benchmarks/curate/{dataset}/{subset}.select.tsv"
    threads: config["db"]["threads"]
    resources:
        mem_mb=config["db"]["mem_mb"],
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/curate_select.py"
