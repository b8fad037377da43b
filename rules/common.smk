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


def library_file(module):
    """The file of library module ``module``, dotted below parrotscope (``io``, ``demo.pool``); a
    package's is its ``__init__.py``."""
    path = LIB.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def library_deps(module, seen=None):
    """The library module and every parrotscope module it imports, transitively. Importing a
    module of a package runs the package's ``__init__`` first, so that counts as imported too."""
    seen = set() if seen is None else seen
    if module in seen:
        return seen
    seen.add(module)
    path = library_file(module)
    # Relative imports start from the module's package: itself for an __init__.py, else its parent.
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for dots, name in re.findall(r"^\s*from (\.+|parrotscope\.)([\w.]+) import", path.read_text(), re.M):
        base = [] if dots == "parrotscope." else package[: len(package) - len(dots) + 1]
        parts = [*base, *name.split(".")]
        for i in range(1, len(parts) + 1):
            dep = ".".join(parts[:i])
            if library_file(dep).exists():
                library_deps(dep, seen)
    return seen


@cache
def score_workers(wildcards, threads):
    """DataLoader workers of a scoring job (score, embed, filter_rescore): `score.workers`, or one per
    job thread beyond the first. A resource, not a param: the scores do not depend on it, so tuning
    it reruns nothing."""
    workers = config["score"]["workers"]
    return max(int(threads) - 1, 0) if workers is None else int(workers)


def code_version(*modules):
    """Hash of the library modules a rule runs, with everything they import from the library.
    Passed as a param, so editing a stage's code reruns that stage (Snakemake does not track
    imported modules by itself)."""
    deps = set()
    for m in modules:
        library_deps(m, deps)
    h = hashlib.sha256()
    for m in sorted(deps | {"smk"}):
        h.update(library_file(m).read_bytes())
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


def model_dir(dataset, subset, arch, seed):
    """Where OpenCLIP's trainer writes the CLIP of one (dataset, subset, architecture, seed)."""
    return f"results/models/{dataset}/{subset}/{arch}/seed{seed}"


def reference_checkpoint(dataset, arch):
    """The reference CLIP (a scorer): trained on the whole pool with `train.seed`."""
    return f"{model_dir(dataset, 'pool', arch, config['train']['seed'])}/checkpoint.pt"


def trained_models(subsets):
    """(subset, arch, seed) of every CLIP trained for these table rows: subset-major, then
    architecture (`train.models`), then seed (`train.seeds`), the order the table builders read."""
    return [(s, a, seed) for s in subsets for a in config["train"]["models"] for seed in config["train"]["seeds"]]


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


def table_dataset(table):
    """The dataset a curation table selects from: `curate.table_datasets`, else the study dataset."""
    return config["curate"]["table_datasets"].get(table, config["study_dataset"])


def curated_models():
    """(dataset, subset, arch, seed) of every CLIP behind a curation table row, in table order,
    once each."""
    models = [(table_dataset(t), *m) for t, subsets in config["curate"]["tables"].items()
              for m in trained_models(subsets)]
    return list(dict.fromkeys(models))


def model_labels(models):
    """Labels of (dataset, subset, arch, seed) models in figures: the dataset when it is not the
    study dataset, the seed only when there are several."""
    several = len(config["train"]["seeds"]) > 1
    return [(f"{d}/" if d != config["study_dataset"] else "") + f"{s} {a}"
            + (f" seed {seed}" if several else "") for d, s, a, seed in models]


def curation_eval_path(dataset, subset, arch, seed, name):
    return f"results/eval/{dataset}/{subset}/{arch}/seed{seed}/{name}"


def curation_table_inputs(wildcards):
    """Per row (subset) and architecture: clip-benchmark results and synthetic-text measures;
    per row the subset's selection stats."""
    dataset = table_dataset(wildcards.table)
    subsets = config["curate"]["tables"][wildcards.table]
    models = trained_models(subsets)
    return {
        "evals": [curation_eval_path(dataset, *m, "benchmark.json") for m in models],
        "syncs": [curation_eval_path(dataset, *m, "sync.json") for m in models],
        "stats": [f"results/{dataset}/subsets/{s}/stats.json" for s in subsets],
        "key_tables": [f"results/{dataset}/subsets/{s}/keys.parquet" for s in subsets],
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
    "results/figures/fig10_text_removal_examples.png",
    "results/figures/fig17_parrot_captions.png",
    "results/table16_parrot_captions.csv",
]


# --- stage `curate` (rules/curate.smk) ---


def curate_index(wildcards):
    """The full parrot index for criteria on CLIP scores, else the text-only index (no scoring)."""
    scored = needs_scores(config["curate"]["subsets"][wildcards.subset], config["score"]["scorers"])
    return index_parts(wildcards.dataset, scored)


# --- stage `materialise` (rules/materialise.smk) ---


def subset_pieces(dataset, subset, ext="tar"):
    """A subset's pieces (or their `parquet` indexes), one per part, in the dataset's part order."""
    return [piece_path(dataset, subset, part, ext) for part in part_names(dataset)]


def subset_listing(dataset, subset):
    """The listing (`materialise.output: listing`): OpenCLIP's sizes.json beside the pieces."""
    return f"results/{dataset}/pieces/{subset}/{SIZES_FILE}"


def reduce_outputs():
    """The reshard's shards and sizes.json, or the listing; materialised.json either way."""
    subset_dir = "results/{dataset}/subsets/{subset}"
    if LISTING:
        outputs = {"sizes": subset_listing("{dataset}", "{subset}")}
    else:
        outputs = {
            "shards": [f"{subset_dir}/shards/{name}" for name in shard_names(config["curate"]["n_shards"])],
            "sizes": f"{subset_dir}/shards/{SIZES_FILE}",
        }
    return {**outputs, "counts": f"{subset_dir}/{COUNTS_FILE}"}


# --- stage `synth` (rules/synth.smk) ---


def synth_models():
    """Models measured on the benchmark: `synth.models`, by default every configured scorer."""
    return config["synth"]["models"] or list(config["score"]["scorers"])


def synth_eval_path(dataset, model, source, n, ext):
    return f"results/synth/{dataset}/eval/{model}/{source}_{n}gram.{ext}"


# --- stage `cluster` (rules/cluster.smk) ---


def released_cluster_files():
    released = config["cluster"]["released"] or {}
    return [p for p in (released.get("pca"), released.get("centroids")) if p]


# --- stage `figures` (rules/figures.smk) ---


def cluster_paths(kind):
    """The study dataset's cluster model or per-part assignments, for the cluster scorer."""
    dataset, scorer = config["study_dataset"], cluster_scorer(config)
    if kind == "model":
        return f"results/{dataset}/cluster/{scorer}/model.npz"
    return assign_parts(dataset)


def study_part_paths(stage):
    """Part -> the study dataset's per-part table of ``stage`` (spot, samples)."""
    dataset = config["study_dataset"]
    return {p: f"results/{dataset}/{stage}/{p}.parquet" for p in part_names(dataset)}


def study_inpaint_paths(mask):
    """Part -> the study dataset's inpainted tar of mask kind ``mask`` (the configured method)."""
    dataset, method = config["study_dataset"], config["inpaint"]["method"]
    return {p: f"results/{dataset}/inpaint/{method}/{mask}/{p}.tar" for p in part_names(dataset)}


# --- stage `report` (rules/report.smk) ---


def report_targets():
    """The HTML tables of the report; the figures are marked for it in their own rules."""
    return [f"results/report/{name}.html" for name in REPORT_TABLES if name not in OWN_TARGET_TABLES]


# --- stage `filters` (rules/filters.smk) ---


def rescore_inputs(wildcards):
    """A trained scorer's checkpoint, so re-scoring waits for (and follows) its training."""
    weights = scorer_spec(wildcards.scorer).get("checkpoint") or ""
    return {"checkpoint": weights} if weights.startswith("results/") else {}


def rescore_parts(wildcards):
    """Per-part re-scores a baseline ranks by (T-MARS: masked; flip-CLIP: flipped), else none."""
    variant = VARIANT_OF.get(method_of(wildcards.subset))
    if variant is None:
        return []
    return [f"results/{wildcards.dataset}/filters/{variant}/{FILTERS_SCORER}/{p}.parquet"
            for p in part_names(wildcards.dataset)]


def filter_model_paths(subsets, name):
    return [curation_eval_path(config["study_dataset"], *m, name) for m in trained_models(subsets)]


def table10_models():
    """The fix, then the configured reference models (Table 10's columns)."""
    return [FIX_SUBSET, *FILTERS["references"]]


def training_size_file(subset):
    """A subset's stats (its size), or parts.json for the model trained on the whole pool."""
    dataset = config["study_dataset"]
    return f"results/{dataset}/parts.json" if subset == "pool" else f"results/{dataset}/subsets/{subset}/stats.json"


# --- stage `str` (rules/str.smk) ---


def str_lmdb_benchmarks():
    """Standard STR LMDB benchmarks: folder name -> path, from str.lmdb_root and str.lmdb_names."""
    root = config["str"]["lmdb_root"]
    if not root:
        return {}
    return {name: os.path.join(root, name) for name in config["str"]["lmdb_names"]}


def check_str_config():
    """Cross-key checks of the `str` section, before any job runs."""
    cfg = config["str"]
    subsets = set(config["curate"]["subsets"]) | {"pool"}
    for name in cfg["pretrained"]:
        if name == STR_SCRATCH or name in cfg["sources"]:
            raise ValueError(f"config str.pretrained.{name}: the name is taken by a subset source or `scratch`")
        spec = cfg["pretrained"][name]
        if (spec.get("pretrained") is None) == (spec.get("checkpoint") is None):
            raise ValueError(f"config str.pretrained.{name}: give exactly one of `pretrained` and `checkpoint`")
    unknown = [s for s in cfg["sources"] if s not in subsets]
    if unknown:
        raise ValueError(f"config str.sources: {unknown} are not curated subsets (curate.subsets) or `pool`")
    clash = set(str_lmdb_benchmarks()) & set(STR_BUILTIN)
    if clash:
        raise ValueError(f"config str.lmdb_names: {sorted(clash)} collide with built-in benchmark names")
    missing = [p for p in str_lmdb_benchmarks().values() if not os.path.isfile(os.path.join(p, "data.mdb"))]
    if missing:
        raise ValueError(f"config str.lmdb_root: no LMDB (data.mdb) in {missing}")


def str_benchmarks():
    """Every benchmark of the STR table. Checked here rather than at parse time: a config for real
    data keeps the default `str.benchmarks` and still runs every other table."""
    if "demo" in config["str"]["benchmarks"] and not is_generated(config["study_dataset"]):
        raise ValueError("config str.benchmarks: `demo` crops need a generated study dataset (its ground-truth "
                         "word boxes); drop it or point str.lmdb_root at real benchmarks")
    return list(config["str"]["benchmarks"]) + list(str_lmdb_benchmarks())


def str_benchmark_path(name):
    if name in STR_BUILTIN:
        return f"results/str/data/{name}.lmdb"
    return str_lmdb_benchmarks()[name]


def str_sources():
    """(source, arch, seed) of every recogniser: one per training seed (`train.seeds`), so the STR
    table reports the mean and spread over seeds as the curation tables do."""
    archs = config["train"]["models"]
    pairs = [(s, a) for s in config["str"]["sources"] for a in archs]
    if config["str"]["scratch"]:
        pairs += [(STR_SCRATCH, a) for a in archs]
    pairs += [(name, spec["arch"]) for name, spec in config["str"]["pretrained"].items()]
    return [(s, a, seed) for s, a in pairs for seed in config["train"]["seeds"]]


def str_seed(seed):
    """The fine-tuning (and scratch initialisation) seed of the recogniser of training seed ``seed``:
    `str.seed` plus the seed's place in `train.seeds`, so the first seed's recogniser is the same
    whatever the other seeds are."""
    return config["str"]["seed"] + config["train"]["seeds"].index(int(seed))


def str_source_spec(source, arch, seed):
    """The source CLIP as parrotscope.str_train.load_source_clip takes it."""
    pretrained = config["str"]["pretrained"]
    if source in pretrained:
        return dict(pretrained[source], name=source, arch=train_arch(pretrained[source]["arch"]))
    if source == STR_SCRATCH:
        return {"name": f"{STR_SCRATCH}/{arch}", "arch": train_arch(arch), "init": "random"}
    return {"name": f"{source}/{arch}", "arch": train_arch(arch),
            "checkpoint": f"{model_dir(config['study_dataset'], source, arch, seed)}/checkpoint.pt"}


def str_source_inputs(wildcards):
    """A source CLIP this workflow trains: its checkpoint, so it is built first."""
    ckpt = str_source_spec(wildcards.source, wildcards.arch, wildcards.seed).get("checkpoint") or ""
    return [ckpt] if ckpt.startswith("results/") else []


def str_model_config():
    """parrotscope.str_model.STRConfig's keyword arguments."""
    cfg = config["str"]
    return {"charset": cfg["charset"], "max_label_length": cfg["max_label_length"],
            "image_size": cfg["image_size"], **cfg["decoder"],
            "text_frozen_layers": cfg["text_frozen_layers"], "perm_num": cfg["perm_num"],
            "perm_mirrored": cfg["perm_mirrored"], "refine_iters": cfg["refine_iters"],
            "cross_loss_weight": cfg["cross_loss_weight"]}


def str_excluded_words():
    """Training words must not include the demo's poster words: the demo crops then test words
    that only the source CLIP can have seen (in its pool images and their parrot captions)."""
    study = config["study_dataset"]
    if not is_generated(study):
        return []
    from parrotscope.demo import demo_config

    return list(demo_config(dataset_config(study)["generator"])["vocabulary"])


def str_table_entries():
    return [{"source": s, "arch": a, "seed": seed, "benchmark": b,
             "eval": f"results/str/eval/{s}/{a}/seed{seed}/{b}.json",
             "probe": f"results/str/probe/{s}/{a}/seed{seed}/{b}.json"}
            for s, a, seed in str_sources() for b in str_benchmarks()]


# --- BLIP (Table 7) -----------------------------------------------------------------------------

from parrotscope.blip_data import DEMO_SETS as BLIP_SETS, TABLE7_COLUMNS


def check_blip_config():
    """Cross-key checks of the `blip` section, before any job runs."""
    cfg = config["blip"]
    missing = [name for name in BLIP_SETS if name not in cfg["sets"]]
    if missing:
        raise ValueError(f"config blip.sets: give {missing} (`demo`, or a layout with its files)")


def blip_trains_tokenizer():
    """blip.tokenizer is trained here (a vocabulary size) rather than a BERT tokenizer's path or id."""
    return isinstance(config["blip"]["tokenizer"], dict)


def blip_set_inputs(names):
    """The demo sets among ``names``, as inputs (a configured real set is read where it lies).
    Checked here rather than at parse time: a config for real data keeps the default `demo` sets
    and still runs every other table; asking for Table 7 names the key to change."""
    demo = [n for n in names if config["blip"]["sets"][n] == "demo"]
    if demo and not is_generated(config["study_dataset"]):
        raise ValueError(f"config blip.sets: {demo} are `demo` sets, which need a generated study dataset "
                         f"(its generator draws them); point them at the real datasets' files")
    return [f"results/blip/data/{n}" for n in demo]


def blip_table_entries():
    """Every fine-tuned and scored BLIP of Table 7: (subset, seed, task, set) with its files.
    The subsets are checked here, not at parse time: a config with other curated subsets than the
    default `blip.subsets` still runs every other table."""
    unknown = [s for s in config["blip"]["subsets"] if s not in config["curate"]["subsets"]]
    if unknown:
        raise ValueError(f"config blip.subsets: {unknown} are not curated subsets (curate.subsets)")
    dataset = config["study_dataset"]
    jobs = dict.fromkeys((task, name) for _, task, name, _ in TABLE7_COLUMNS)
    return [{"subset": s, "seed": seed, "task": task, "set": name,
             "eval": f"results/blip/eval/{dataset}/{s}/seed{seed}/{task}_{name}.json",
             "train": f"results/blip/models/{dataset}/{s}/seed{seed}/train.json"}
            for s in config["blip"]["subsets"] for seed in config["blip"]["seeds"] for task, name in jobs]
