# Stage `filters`: the paper's text-oriented filter ("a simple fix", Sec. 8, Table 10) and the
# filters it is compared with (CLIP-score top fraction, T-MARS, flip-CLIP, random), each written as
# a subset (results/{dataset}/subsets/filter_<name>/keys.parquet + stats.json) that the materialise,
# train and evaluate rules materialise, train and evaluate like any curated subset.

from parrotscope.cluster import cluster_scorer
from parrotscope.curate import subset_wildcard
from parrotscope.filter_names import FIX, method_of, subset_name
from parrotscope.filters import VARIANT_OF, VARIANTS, check_filters, filter_subsets, filters_scorer

check_filters(config)
FILTERS = config["filters"]
FILTERS_SCORER = filters_scorer(config)
FIX_SUBSET = subset_name(FIX)
FILTER_BASELINE = subset_wildcard([subset_name(b) for b in FILTERS["baselines"]])


rule aesthetic:
    # The LAION improved aesthetic predictor on a ViT-L/14 scorer's image embeddings (embed stage).
    input:
        embed=lambda w: f"results/{w.dataset}/embed/{FILTERS['aesthetic']['scorer']}/{w.part}.parquet",
        weights=lambda w: FILTERS["aesthetic"]["weights"],
    output:
        "results/{dataset}/filters/aesthetic/{part}.parquet",
    params:
        batch_size=lambda w: FILTERS["aesthetic"].get("batch_size", 4096),
        code=code_version("aesthetic"),
    threads: 1
    log:
        "logs/filters/{dataset}/aesthetic/{part}.log",
    benchmark:
        "benchmarks/filters/{dataset}/aesthetic/{part}.tsv"
    resources:
        mem_mb=2000,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/aesthetic.py"


rule filter_rescore:
    # CLIP scores of transformed images: T-MARS (text mean-filled) or flip-CLIP (mirrored).
    input:
        unpack(rescore_inputs),
        samples="results/{dataset}/samples/{part}.parquet",
        spot="results/{dataset}/spot/{part}.parquet",
        match="results/{dataset}/match/{part}.parquet",
        shards=part_shard_files,
    output:
        "results/{dataset}/filters/{variant}/{scorer}/{part}.parquet",
    wildcard_constraints:
        variant="|".join(VARIANTS),
    params:
        shards=part_shards,
        spec=lambda w: scorer_spec(w.scorer),
        batch_size=config["score"]["batch_size"],
        device=config["score"]["device"],
        precision=config["score"]["precision"],
        max_pixels=config["ingest"]["max_pixels"],
        # T-MARS's masking settings only reach T-MARS jobs: editing them leaves flip-CLIP alone.
        tmars=lambda w: FILTERS["tmars"] if w.variant == "tmars" else None,
        code=code_version("filters"),
    threads: config["score"]["threads"]
    log:
        "logs/filters/{dataset}/{variant}/{scorer}/{part}.log",
    benchmark:
        "benchmarks/filters/{dataset}/{variant}/{scorer}/{part}.tsv"
    resources:
        mem_mb=6000,
        workers=score_workers,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/filter_rescore.py"


rule filter_fix:
    # The paper's fix: no spotted text, CLIP score and aesthetic thresholds, dedup per cluster
    # (queries over the per-part tables; the survivors are deduplicated one cluster at a time).
    input:
        index=per_part("results/{dataset}/index/{part}.parquet"),
        assign=per_part(f"results/{{dataset}}/cluster/{cluster_scorer(config)}/assign/{{part}}.parquet"),
        embed=per_part(f"results/{{dataset}}/embed/{cluster_scorer(config)}/{{part}}.parquet"),
        aesthetic=per_part("results/{dataset}/filters/aesthetic/{part}.parquet") if FILTERS["aesthetic"] else [],
    output:
        key_table=f"results/{{dataset}}/subsets/{FIX_SUBSET}/keys.parquet",
        stats=f"results/{{dataset}}/subsets/{FIX_SUBSET}/stats.json",
    params:
        scorer=FILTERS_SCORER,
        fix=FILTERS["fix"],
        code=code_version("filters"),
    log:
        "logs/filters/{dataset}/fix.log",
    benchmark:
        "benchmarks/filters/{dataset}/fix.tsv"
    # Dataset-wide: DuckDB over the parts within the job's memory; the dedup holds one cluster.
    threads: config["db"]["threads"]
    resources:
        mem_mb=config["db"]["mem_mb"],
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/filter_fix.py"


rule filter_baseline:
    # A baseline filter of the fix's size: CLIP-score top fraction, T-MARS, flip-CLIP or random.
    input:
        index=per_part("results/{dataset}/index/{part}.parquet"),
        fix_stats=f"results/{{dataset}}/subsets/{FIX_SUBSET}/stats.json",
        rescore=rescore_parts,
    output:
        key_table="results/{dataset}/subsets/{subset}/keys.parquet",
        stats="results/{dataset}/subsets/{subset}/stats.json",
    wildcard_constraints:
        subset=FILTER_BASELINE,
    params:
        method=lambda w: method_of(w.subset),
        scorer=FILTERS_SCORER,
        seed=FILTERS["seed"],
        fractions={"clip_score": FILTERS["clip_fraction"], "flip_clip": FILTERS["flip_fraction"]},
        code=code_version("filters"),
    log:
        "logs/filters/{dataset}/{subset}.log",
    benchmark:
        "benchmarks/filters/{dataset}/{subset}.tsv"
    threads: config["db"]["threads"]
    resources:
        mem_mb=config["db"]["mem_mb"],
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/filter_baseline.py"


rule table10:
    # Table 10: the fix against the configured reference models (Sync. Score and DataComp groups).
    input:
        evals=lambda w: filter_model_paths(w.dataset, table10_models(), "benchmark.json"),
        syncs=lambda w: filter_model_paths(w.dataset, table10_models(), "sync.json"),
        sizes=lambda w: [training_size_file(w.dataset, s) for s in table10_models()],
    output:
        "results/{dataset}/table10.csv",
    params:
        subsets=table10_models(),
        archs=config["train"]["models"],
        seeds=config["train"]["seeds"],
        decimals=config["tables"]["decimals"],
        code=code_version("tables"),
    wildcard_constraints:
        dataset=STUDY_DATASET,
    log:
        "logs/tables/{dataset}/table10.log",
    benchmark:
        "benchmarks/tables/{dataset}/table10.tsv"
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/table10.py"


rule table_filters:
    # Every filter trained and evaluated the same way, with the parrot captions each one leaves.
    input:
        evals=lambda w: filter_model_paths(w.dataset, filter_subsets(config), "benchmark.json"),
        syncs=lambda w: filter_model_paths(w.dataset, filter_subsets(config), "sync.json"),
        stats=lambda w: [f"results/{w.dataset}/subsets/{s}/stats.json" for s in filter_subsets(config)],
    output:
        table="results/{dataset}/table_filters.csv",
        # Each training seed's own rows, to check a claim seed by seed.
        seeds="results/{dataset}/table_filters_seeds.csv",
    params:
        subsets=filter_subsets(config),
        archs=config["train"]["models"],
        seeds=config["train"]["seeds"],
        decimals=config["tables"]["decimals"],
        code=code_version("tables"),
    wildcard_constraints:
        dataset=STUDY_DATASET,
    log:
        "logs/tables/{dataset}/table_filters.log",
    benchmark:
        "benchmarks/tables/{dataset}/table_filters.tsv"
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/filters_table.py"
