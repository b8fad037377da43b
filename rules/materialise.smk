# Stage `materialise`: copying each subset's selected samples out of the source shards
# (parrotscope.materialise). Per part: one map job per pass reads the part's source shards once
# and writes a piece for every subset of the pass (results/{dataset}/pieces/{subset}/{part}.tar +
# .parquet index). Per subset: one reduce job turns its pieces into curate.n_shards training
# shards, byte-identical to copying the subset alone (or, materialise.output: listing, writes
# OpenCLIP's sizes.json for the pieces and copies nothing).
#
# Passes (materialise.passes, parrotscope.materialise.plan_passes): by default one per curation
# table and one for the filters' subsets, so `snakemake results/table3.csv` waits for Table 3's
# selections only (no inpainting, no scoring, no other table's criteria); `single` reads every
# source shard once for all subsets (a cluster run of every table).
#
# Reruns: a reduce takes its keys.parquet as a normal input and its pieces as ancient() ones. When
# one subset's selection changes, the map of its pass reruns and rewrites the pass's pieces (the
# unchanged subsets' byte for byte); the changed subset's reduce follows its new keys, the others'
# reduce and training do not rerun (tests/test_materialise.py checks the plan and the run).
# Snakemake 9 does not check the own params of jobs below a job that must rerun (dag.py,
# update_needrun: such "masked" jobs are reached only through inputs that are not ancient). So the
# reduce's own settings (curate.n_shards, materialise.output, the code of parrotscope.materialise)
# also reach it as a file, materialise_settings.json, written by a rule nothing is upstream of.
# What remains: an edit that reruns a map together with a setting of training or later steps (e.g.
# a subset's criteria and train.hparams at once) plans the unchanged subsets' retraining only in
# the next run; `snakemake -n` after the run shows it.

from parrotscope.curate import needs_scores, subset_wildcard
from parrotscope.filters import filter_subsets
from parrotscope.materialise import COUNTS_FILE, SIZES_FILE, piece_path, plan_passes, shard_names

MATERIALISE = config["materialise"]
LISTING = MATERIALISE["output"] == "listing"
# Subsets materialised here: the curated ones and those the filters stage selects (rules/filters.smk).
SHARDED_SUBSET = subset_wildcard([*config["curate"]["subsets"], *filter_subsets(config)])
MATERIALISE_PASSES = plan_passes(
    config["curate"]["tables"],
    list(config["curate"]["subsets"]),
    [s for s, conds in config["curate"]["subsets"].items() if needs_scores(conds, config["score"]["scorers"])],
    filter_subsets(config),
    MATERIALISE["passes"],
    used=[*config["str"]["sources"], *config["filters"]["references"]],
)


for _pass, _subsets in MATERIALISE_PASSES.items():

    rule:
        name:
            f"materialise_map_{_pass}"
        input:
            key_tables=[f"results/{{dataset}}/subsets/{s}/keys.parquet" for s in _subsets],
            # The part's shards are read from parts.json (ingest's record), not listed as inputs:
            # listed shards cost planning time at LAION-2B size (bench/bench_plan.py).
            parts="results/{dataset}/parts.json",
        output:
            pieces=[f"results/{{dataset}}/pieces/{s}/{{part}}.tar" for s in _subsets],
            indexes=[f"results/{{dataset}}/pieces/{s}/{{part}}.parquet" for s in _subsets],
            counts=f"results/{{dataset}}/materialise/{_pass}/{{part}}.json",
        params:
            subsets=list(_subsets),
            pass_name=_pass,
            code=code_version("materialise"),
        log:
            f"logs/materialise/{{dataset}}/{_pass}/{{part}}.log",
        benchmark:
            f"benchmarks/materialise/{{dataset}}/{_pass}/{{part}}.tsv"
        resources:
            mem_mb=4000,
        conda:
            "../envs/core.yaml"
        script:
            "../scripts/materialise_map.py"


# Only the reshard reads n_shards: in listing mode editing it reruns nothing.
REDUCE_SETTINGS = {
    "output": MATERIALISE["output"],
    "n_shards": None if LISTING else config["curate"]["n_shards"],
    "code": code_version("materialise"),
}


rule materialise_settings:
    # The reduce's settings as a file (see the top of this file): it has no inputs, so Snakemake
    # always compares its params, and a change reruns the reduce even while a map reruns above it.
    output:
        "results/{dataset}/subsets/{subset}/materialise_settings.json",
    wildcard_constraints:
        subset=SHARDED_SUBSET,
    params:
        settings=lambda w: REDUCE_SETTINGS,
    log:
        "logs/materialise/{dataset}/{subset}.settings.log",
    benchmark:
        "benchmarks/materialise/{dataset}/{subset}.settings.tsv"
    resources:
        mem_mb=500,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/materialise_settings.py"


rule materialise_reduce:
    input:
        key_table="results/{dataset}/subsets/{subset}/keys.parquet",
        settings="results/{dataset}/subsets/{subset}/materialise_settings.json",
        # ancient: a map rerun for another subset of the pass rewrites these pieces unchanged.
        pieces=lambda w: [ancient(p) for p in subset_pieces(w.dataset, w.subset)],
        indexes=lambda w: [ancient(p) for p in subset_pieces(w.dataset, w.subset, "parquet")],
    output:
        **reduce_outputs(),
    wildcard_constraints:
        subset=SHARDED_SUBSET,
    params:
        **REDUCE_SETTINGS,
        shards_dir=lambda w: f"results/{w.dataset}/subsets/{w.subset}/shards",
        listing=lambda w: subset_listing(w.dataset, w.subset),
    log:
        "logs/materialise/{dataset}/{subset}.reduce.log",
    benchmark:
        "benchmarks/materialise/{dataset}/{subset}.reduce.tsv"
    resources:
        mem_mb=2000,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/materialise_reduce.py"
