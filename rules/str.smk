# Stage `str`: CLIP4STR transfer (issue 8). Every source CLIP (the CLIPs trained on the curated
# subsets in `str.sources`, the same architectures from scratch, configured pretrained CLIPs) is
# fine-tuned as a scene-text recogniser on rendered words, scored on each benchmark (rendered
# held-out words, word crops of held-out demo images, standard STR LMDBs), and probed zero-shot;
# results/table_str.csv gathers them.

STR_BUILTIN = ("synth", "demo")
STR_SCRATCH = "scratch"
STR_SOURCE = r"[A-Za-z0-9_.\-]+"


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


check_str_config()


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
    """(source, arch) of every recogniser."""
    archs = config["train"]["models"]
    pairs = [(s, a) for s in config["str"]["sources"] for a in archs]
    if config["str"]["scratch"]:
        pairs += [(STR_SCRATCH, a) for a in archs]
    pairs += [(name, spec["arch"]) for name, spec in config["str"]["pretrained"].items()]
    return pairs


def str_source_spec(source, arch):
    """The source CLIP as parrotscope.str_train.load_source_clip takes it."""
    pretrained = config["str"]["pretrained"]
    if source in pretrained:
        return dict(pretrained[source], name=source, arch=train_arch(pretrained[source]["arch"]))
    if source == STR_SCRATCH:
        return {"name": f"{STR_SCRATCH}/{arch}", "arch": train_arch(arch), "init": "random"}
    return {"name": f"{source}/{arch}", "arch": train_arch(arch),
            "checkpoint": f"results/models/{config['study_dataset']}/{source}/{arch}/checkpoint.pt"}


def str_source_inputs(wildcards):
    """A source CLIP this workflow trains: its checkpoint, so it is built first."""
    ckpt = str_source_spec(wildcards.source, wildcards.arch).get("checkpoint") or ""
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


rule str_data:
    output:
        lmdb=directory("results/str/data/{name}.lmdb"),
        json="results/str/data/{name}.json",
    params:
        data=config["str"]["data"],
        seed=config["str"]["seed"],
        max_length=config["str"]["max_label_length"],
        generator=lambda w: dataset_config(config["study_dataset"]).get("generator") if w.name == "demo" else None,
        exclude=lambda w: str_excluded_words() if w.name != "demo" else [],
        code=code_version("str_data"),
    wildcard_constraints:
        name="train|synth|demo",
    log:
        "logs/str_data/{name}.log",
    benchmark:
        "benchmarks/str_data/{name}.tsv"
    resources:
        mem_mb=2000,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/str_data.py"


rule str_train:
    input:
        train="results/str/data/train.lmdb",
        source=str_source_inputs,
    output:
        model="results/str/models/{source}/{arch}/model.pt",
        json="results/str/models/{source}/{arch}/train.json",
    params:
        spec=lambda w: str_source_spec(w.source, w.arch),
        model=str_model_config(),
        hparams=config["str"]["hparams"],
        seed=config["str"]["seed"],
        device=config["str"]["device"],
        code=code_version("str_train"),
    wildcard_constraints:
        source=STR_SOURCE,
        arch=r"[^/]+",
    threads: config["str"]["threads"]
    log:
        "logs/str_train/{source}/{arch}.log",
    benchmark:
        "benchmarks/str_train/{source}/{arch}.tsv"
    resources:
        mem_mb=6000,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/str_train.py"


rule str_eval:
    input:
        model="results/str/models/{source}/{arch}/model.pt",
        bench=lambda w: str_benchmark_path(w.bench),
        source=str_source_inputs,
    output:
        json="results/str/eval/{source}/{arch}/{bench}.json",
        table="results/str/eval/{source}/{arch}/{bench}.parquet",
    params:
        spec=lambda w: str_source_spec(w.source, w.arch),
        batch_size=config["str"]["eval_batch_size"],
        device=config["str"]["device"],
        code=code_version("str_train"),
    wildcard_constraints:
        source=STR_SOURCE,
        arch=r"[^/]+",
    threads: config["str"]["threads"]
    log:
        "logs/str_eval/{source}/{arch}/{bench}.log",
    benchmark:
        "benchmarks/str_eval/{source}/{arch}/{bench}.tsv"
    resources:
        mem_mb=4000,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/str_eval.py"


rule str_probe:
    # Zero-shot: the source CLIP itself ranks the benchmark's words for each word image.
    input:
        bench=lambda w: str_benchmark_path(w.bench),
        source=str_source_inputs,
    output:
        json="results/str/probe/{source}/{arch}/{bench}.json",
        table="results/str/probe/{source}/{arch}/{bench}.parquet",
    params:
        spec=lambda w: str_source_spec(w.source, w.arch),
        template=config["str"]["probe_template"],
        batch_size=config["str"]["eval_batch_size"],
        max_length=config["str"]["max_label_length"],
        seed=config["str"]["seed"],
        device=config["str"]["device"],
        code=code_version("str_train"),
    wildcard_constraints:
        source=STR_SOURCE,
        arch=r"[^/]+",
    threads: config["str"]["threads"]
    log:
        "logs/str_probe/{source}/{arch}/{bench}.log",
    benchmark:
        "benchmarks/str_probe/{source}/{arch}/{bench}.tsv"
    resources:
        mem_mb=4000,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/str_probe.py"


def str_table_entries():
    return [{"source": s, "arch": a, "benchmark": b,
             "eval": f"results/str/eval/{s}/{a}/{b}.json", "probe": f"results/str/probe/{s}/{a}/{b}.json"}
            for s, a in str_sources() for b in str_benchmarks()]


rule str_table:
    input:
        evals=lambda w: [e["eval"] for e in str_table_entries()],
        probes=lambda w: [e["probe"] for e in str_table_entries()],
    output:
        "results/table_str.csv",
    params:
        entries=lambda w: str_table_entries(),
        decimals=config["tables"]["decimals"],
        code=code_version("str_train"),
    log:
        "logs/str_table/table_str.log",
    benchmark:
        "benchmarks/str_table/table_str.tsv"
    resources:
        mem_mb=1000,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/str_table.py"
