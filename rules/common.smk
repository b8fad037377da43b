# Shared by every stage: config validation, wildcard constraints, shard/part bookkeeping and the
# input functions. Stage files hold rules only.

import hashlib
import math
import os
import re
from functools import cache
from pathlib import Path

import yaml
from snakemake.utils import validate

from parrotscope.config import check_config, check_schema
from parrotscope.shards import expand_shards, is_local

# First a one-line error naming the key and what it expects; Snakemake's validation fills defaults.
check_schema(config, yaml.safe_load((Path(workflow.basedir) / "schemas" / "config.schema.yaml").read_text()))
def graph_output_only():
    """`snakemake -n --dag | dot -Tsvg > dag.svg` (the command users type) must give dot pure dot:
    a dry run logs "Building DAG of jobs..." to stdout, so graph printing moves the log to stderr."""
    import sys

    from snakemake.logging import logger

    if {"--dag", "--rulegraph", "--filegraph", "--d3dag"} & set(sys.argv):
        for handler in logger.handlers:
            if getattr(handler, "stream", None) is sys.stdout:
                handler.setStream(sys.stderr)


graph_output_only()
validate(config, schema="../schemas/config.schema.yaml", set_default=True)
check_config(config)

LIB = Path(workflow.basedir) / "src" / "parrotscope"
PART_FMT = "p{:05d}"


wildcard_constraints:
    dataset=r"[A-Za-z0-9_\-]+",
    part=r"p\d{5}",
    shard=r"\d{5}",


def dataset_config(dataset):
    return config["datasets"][dataset]


def is_generated(dataset):
    """A dataset made by the workflow's own demo generator rather than read from given shards."""
    return "generator" in dataset_config(dataset)


@cache
def dataset_shards(dataset):
    """Ordered shard URLs of a dataset: generated shard paths, or the expanded `shards` spec."""
    cfg = dataset_config(dataset)
    if is_generated(dataset):
        n = cfg["generator"]["n_shards"]
        return tuple(f"results/{dataset}/shards/{i:05d}.tar" for i in range(n))
    return tuple(expand_shards(cfg["shards"]))


@cache
def dataset_parts(dataset):
    """Part name -> its shards: `shards_per_part` consecutive shards each, so the DAG size is a
    choice (a few thousand parts for LAION-2B), not one job per shard."""
    shards = dataset_shards(dataset)
    per = dataset_config(dataset)["shards_per_part"]
    return {PART_FMT.format(i): shards[i * per:(i + 1) * per] for i in range(math.ceil(len(shards) / per))}


def part_names(dataset):
    return list(dataset_parts(dataset))


def part_shards(wildcards):
    return list(dataset_parts(wildcards.dataset)[wildcards.part])


def tracks_shards(dataset):
    """Whether the dataset's shard files are inputs: always for generated shards (made by a job),
    else `datasets.<name>.track_shards`. Each listed shard costs planning time (bench/bench_plan.py)."""
    return is_generated(dataset) or dataset_config(dataset)["track_shards"]


def bad_shard_mode(dataset):
    """`ingest.on_bad_shard` as it applies to a dataset. The demo generator's shards are this
    workflow's own outputs: damage there is a corrupted intermediate to refuse, not a download to
    record, so they are always read in `fail` mode."""
    return "fail" if is_generated(dataset) else config["ingest"]["on_bad_shard"]


def part_shard_files(wildcards):
    """The part's shards that are local files: inputs of `ingest`, so Snakemake knows when they
    change. Only ingest needs them: later per-part stages get the URLs as params and depend on the
    part's samples table, which is rewritten when a shard changes. Every shard listed again by
    each later stage multiplies planning time at LAION-2B size (bench/bench_plan.py).

    In `record` mode a shard missing on disk is no input (ingest records it as missing instead of
    Snakemake refusing the job); once it appears the input set changes and the part reruns."""
    if not tracks_shards(wildcards.dataset):
        return []
    files = [s for s in part_shards(wildcards) if is_local(s)]
    if bad_shard_mode(wildcards.dataset) == "record":
        files = [s for s in files if os.path.exists(s)]
    return files


def per_part(pattern):
    """Input function: `pattern` formatted for every part of the wildcard's dataset."""

    def inputs(wildcards):
        return [pattern.format(dataset=wildcards.dataset, part=p) for p in part_names(wildcards.dataset)]

    return inputs


def index_parts(dataset, scored=True):
    """The dataset's parrot index, one file per part: with every scorer's columns (`index`) or the
    text-only view (`index_text`, no inpainting or scoring needed)."""
    view = "index" if scored else "index_text"
    return [f"results/{dataset}/{view}/{p}.parquet" for p in part_names(dataset)]


def assign_parts(dataset):
    """The dataset's cluster assignment, one file per part (clusters of the cluster scorer)."""
    from parrotscope.cluster import cluster_scorer

    return [f"results/{dataset}/cluster/{cluster_scorer(config)}/assign/{p}.parquet" for p in part_names(dataset)]


def library_deps(module, seen=None):
    """The library module and every parrotscope module it imports, transitively."""
    seen = set() if seen is None else seen
    if module in seen:
        return seen
    seen.add(module)
    source = (LIB / f"{module}.py").read_text()
    for dep in re.findall(r"^\s*from (?:\.|parrotscope\.)(\w+) import", source, re.M):
        if (LIB / f"{dep}.py").exists():
            library_deps(dep, seen)
    return seen


@cache
def code_version(*modules):
    """Hash of the library modules a rule runs, with everything they import from the library.
    Passed as a param, so editing a stage's code reruns that stage (Snakemake does not track
    imported modules by itself)."""
    deps = set()
    for m in modules:
        library_deps(m, deps)
    h = hashlib.sha256()
    for m in sorted(deps | {"smk"}):
        h.update((LIB / f"{m}.py").read_bytes())
    return h.hexdigest()[:16]


def check_local_shards():
    """In `fail` mode, fail before any job runs if a configured local shard is missing. In `record`
    mode ingest records it as missing instead (and planning skips 230k stat calls)."""
    for name in config["datasets"]:
        if is_generated(name) or bad_shard_mode(name) != "fail":
            continue
        missing = [s for s in dataset_shards(name) if is_local(s) and not os.path.exists(s)]
        if missing:
            raise ValueError(
                f"config datasets.{name}.shards: {len(missing)} shard(s) not found, "
                f"e.g. {missing[:3]}. Fix the path or pattern, or set `ingest.on_bad_shard: record` "
                f"to record missing shards and run on the others."
            )


# Jobs (a Slurm job, a group) parse the Snakefile again: the planner has checked already, and 230k
# stat calls per job on a shared file system are slow.
if workflow.is_main_process:
    check_local_shards()


MASK_KINDS = ("all", "co", "rand_all", "rand_co")


def train_arch(name):
    """An architecture by name: a packaged tiny one, an OpenCLIP one, or `train.archs.<name>`."""
    return config["train"]["archs"].get(name, name)


def train_shards(wildcards):
    """Shards a model trains on, as inputs: a subset's shards, or with `materialise.output:
    listing` its pieces (ancient, as for the reduce: rules/materialise.smk). None for subset `pool`
    (the whole dataset): its job reads them from parts.json (train_counts), because ~230k shard
    inputs make planning quadratic (bench/bench_plan.py)."""
    if wildcards.subset == "pool":
        return []
    if config["materialise"]["output"] == "listing":
        return [ancient(p) for p in subset_pieces(wildcards.dataset, wildcards.subset)]
    from parrotscope.materialise import shard_names

    return [f"results/{wildcards.dataset}/subsets/{wildcards.subset}/shards/{name}"
            for name in shard_names(config["curate"]["n_shards"])]


def train_counts(wildcards):
    """How many samples the training shards hold: parts.json for the pool, else the subset's
    sizes.json (OpenCLIP's: shard file name -> samples), beside its shards or its pieces."""
    if wildcards.subset == "pool":
        return f"results/{wildcards.dataset}/parts.json"
    if config["materialise"]["output"] == "listing":
        return subset_listing(wildcards.dataset, wildcards.subset)
    return f"results/{wildcards.dataset}/subsets/{wildcards.subset}/shards/sizes.json"


def part_shard_files_of(dataset):
    """Every local shard of the dataset, as inputs (none when its shards are not tracked; in
    `record` mode none that is missing on disk, as in part_shard_files)."""
    if not tracks_shards(dataset):
        return []
    files = [s for s in dataset_shards(dataset) if is_local(s)]
    if bad_shard_mode(dataset) == "record":
        files = [s for s in files if os.path.exists(s)]
    return files


def scorer_spec(name):
    """The scorer config as parrotscope.score.load_scorer takes it; `trained_on` becomes the
    checkpoint of the reference CLIP this workflow trains on that dataset's pool."""
    spec = dict(config["score"]["scorers"][name], name=name)
    trained_on = spec.pop("trained_on", None)
    if trained_on:
        spec["checkpoint"] = reference_checkpoint(trained_on, spec["arch"])
    return spec


def reference_checkpoint(dataset, arch):
    return f"results/models/{dataset}/pool/{arch}/checkpoint.pt"


def score_inputs(wildcards):
    """Inpainted tars of every mask kind for the configured method, and a trained scorer's weights."""
    method = config["inpaint"]["method"]
    inputs = {
        f"inpaint_{m}": f"results/{wildcards.dataset}/inpaint/{method}/{m}/{wildcards.part}.tar"
        for m in MASK_KINDS
    }
    spec = scorer_spec(wildcards.scorer)
    if (spec.get("checkpoint") or "").startswith("results/"):
        inputs["checkpoint"] = spec["checkpoint"]
    return inputs


def curated_subsets():
    """Every subset named in a curation table, in table order, once each."""
    names = [s for table in config["curate"]["tables"].values() for s in table]
    return list(dict.fromkeys(names))


def curation_eval_path(subset, arch, name):
    return f"results/eval/{config['study_dataset']}/{subset}/{arch}/{name}"


def curation_table_inputs(wildcards):
    """Per row (subset) and architecture: clip-benchmark results and synthetic-text measures;
    per row the subset's selection stats."""
    dataset = config["study_dataset"]
    subsets = config["curate"]["tables"][wildcards.table]
    archs = config["train"]["models"]
    return {
        "evals": [curation_eval_path(s, a, "benchmark.json") for s in subsets for a in archs],
        "syncs": [curation_eval_path(s, a, "sync.json") for s in subsets for a in archs],
        "stats": [f"results/{dataset}/subsets/{s}/stats.json" for s in subsets],
    }


def default_targets():
    tables = [f"results/{t}.csv" for t in config["curate"]["tables"]]
    study = config["study_dataset"]
    return ["results/table1.csv", "results/table2.csv", *tables, "results/table10.csv",
            "results/table_filters.csv", "results/figures/fig8_sync_trained.png",
            f"results/figures/fig6_7_synth_{study}.png", *PROFILE_FIGURES, *report_targets()]


# The data-profile figures (rules/figures.smk): Figs. 1, 3a-b, 4a-c, 5 (left) and the cluster profile.
PROFILE_FIGURES = [
    "results/cluster_profile.csv",
    "results/figures/fig1_top_score_pairs.png",
    "results/figures/fig3a_cluster_text_share.png",
    "results/figures/fig3b_text_heavy_clusters.png",
    "results/figures/fig4a_word_counts.png",
    "results/figures/fig4b_area_vs_score.png",
    "results/figures/fig4c_size_vs_parrot.png",
    "results/figures/fig5_cluster_removal_scores.png",
]
