# Stage `curate`: equal-size training subsets chosen by criteria on the parrot index (Curation I-III).
# Selection (keys only) and materialising (copying samples into shards) are separate jobs, as in
# DataComp: criteria can be inspected, and changed, without copying images.

from parrotscope.curate import (SIZES_FILE, check_curate, curate_scorer, needs_scores, shard_names, subset_size,
                                subset_wildcard)
from parrotscope.filters import filter_subsets

check_curate(config)
CURATE_SUBSET = subset_wildcard(config["curate"]["subsets"])
# Subsets materialised here: the curated ones and those the filters stage selects (rules/filters.smk).
SHARDED_SUBSET = subset_wildcard([*config["curate"]["subsets"], *filter_subsets(config)])


def curate_index(wildcards):
    """The full parrot index for criteria on CLIP scores, else the text-only index (no scoring)."""
    scored = needs_scores(config["curate"]["subsets"][wildcards.subset], config["score"]["scorers"])
    return index_parts(wildcards.dataset, scored)


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
        size=lambda w: subset_size(config, w.subset),
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


rule curate_shards:
    input:
        key_table="results/{dataset}/subsets/{subset}/keys.parquet",
        # The dataset's shards are read from parts.json, not listed as inputs: with ~230k shards,
        # every subset job listing them all makes planning quadratic (bench/bench_plan.py).
        parts="results/{dataset}/parts.json",
    output:
        shards=[f"results/{{dataset}}/subsets/{{subset}}/shards/{name}"
                for name in shard_names(config["curate"]["n_shards"])],
        sizes=f"results/{{dataset}}/subsets/{{subset}}/shards/{SIZES_FILE}",
    wildcard_constraints:
        subset=SHARDED_SUBSET,
    params:
        n_shards=config["curate"]["n_shards"],
        code=code_version("curate", "shards", "ingest"),
    log:
        "logs/curate/{dataset}/{subset}.shards.log",
    benchmark:
        "benchmarks/curate/{dataset}/{subset}.shards.tsv"
    resources:
        mem_mb=2000,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/curate_shards.py"
