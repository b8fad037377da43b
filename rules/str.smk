# Stage `str`: CLIP4STR transfer (issue 8). Every source CLIP (the CLIPs trained on the curated
# subsets in `str.sources`, the same architectures from scratch, configured pretrained CLIPs) is
# fine-tuned as a scene-text recogniser on rendered words, scored on each benchmark (rendered
# held-out words, word crops of held-out demo images, standard STR LMDBs), and probed zero-shot;
# results/table_str.csv gathers them.

STR_BUILTIN = ("synth", "demo")
STR_SCRATCH = "scratch"
STR_SOURCE = r"[A-Za-z0-9_.\-]+"


check_str_config()


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
        model="results/str/models/{source}/{arch}/seed{seed}/model.pt",
        json="results/str/models/{source}/{arch}/seed{seed}/train.json",
    params:
        spec=lambda w: str_source_spec(w.source, w.arch, w.seed),
        model=str_model_config(),
        hparams=config["str"]["hparams"],
        seed=lambda w: str_seed(w.seed),
        device=config["str"]["device"],
        code=code_version("str_train"),
    wildcard_constraints:
        source=STR_SOURCE,
        arch=r"[^/]+",
        seed=r"\d+",
    threads: config["str"]["threads"]
    log:
        "logs/str_train/{source}/{arch}/seed{seed}.log",
    benchmark:
        "benchmarks/str_train/{source}/{arch}/seed{seed}.tsv"
    resources:
        mem_mb=6000,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/str_train.py"


rule str_eval:
    input:
        model="results/str/models/{source}/{arch}/seed{seed}/model.pt",
        bench=lambda w: str_benchmark_path(w.bench),
        source=str_source_inputs,
    output:
        json="results/str/eval/{source}/{arch}/seed{seed}/{bench}.json",
        table="results/str/eval/{source}/{arch}/seed{seed}/{bench}.parquet",
    params:
        spec=lambda w: str_source_spec(w.source, w.arch, w.seed),
        batch_size=config["str"]["eval_batch_size"],
        device=config["str"]["device"],
        code=code_version("str_train"),
    wildcard_constraints:
        source=STR_SOURCE,
        arch=r"[^/]+",
        seed=r"\d+",
    threads: config["str"]["threads"]
    log:
        "logs/str_eval/{source}/{arch}/seed{seed}/{bench}.log",
    benchmark:
        "benchmarks/str_eval/{source}/{arch}/seed{seed}/{bench}.tsv"
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
        json="results/str/probe/{source}/{arch}/seed{seed}/{bench}.json",
        table="results/str/probe/{source}/{arch}/seed{seed}/{bench}.parquet",
    params:
        spec=lambda w: str_source_spec(w.source, w.arch, w.seed),
        template=config["str"]["probe_template"],
        batch_size=config["str"]["eval_batch_size"],
        max_length=config["str"]["max_label_length"],
        seed=lambda w: str_seed(w.seed),
        device=config["str"]["device"],
        code=code_version("str_train"),
    wildcard_constraints:
        source=STR_SOURCE,
        arch=r"[^/]+",
        seed=r"\d+",
    threads: config["str"]["threads"]
    log:
        "logs/str_probe/{source}/{arch}/seed{seed}/{bench}.log",
    benchmark:
        "benchmarks/str_probe/{source}/{arch}/seed{seed}/{bench}.tsv"
    resources:
        mem_mb=4000,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/str_probe.py"


rule str_table:
    input:
        evals=lambda w: [e["eval"] for e in str_table_entries()],
        probes=lambda w: [e["probe"] for e in str_table_entries()],
    output:
        "results/table_str.csv",
    params:
        entries=lambda w: str_table_entries(),
        decimals=config["tables"]["decimals"],
        code=code_version("tables"),
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
