# Stage `heldout`: Fig. 9, every trained CLIP's mean S on the study pool's held-out split (raw
# pairs without text, raw pairs with text, the same pairs with their text removed). The index
# flags the split (`heldout`); no curated or filtered subset takes those samples.


rule heldout_pairs:
    # The held-out pairs of the first `figures.fig9_parts` parts, copied once into two small tars
    # (raw images, text-removed images), so each model's job reads those alone.
    input:
        # The shards are read by URL, as by every stage after ingest: the index follows them.
        index=lambda w: [f"results/{w.dataset}/index_text/{p}.parquet" for p in heldout_parts(w.dataset)],
        removed=lambda w: list(heldout_removed_tars(w.dataset).values()),
    output:
        table="results/{dataset}/heldout/pairs.parquet",
        raw="results/{dataset}/heldout/raw.tar",
        removed="results/{dataset}/heldout/removed.tar",
        counts="results/{dataset}/heldout/pairs.json",
    params:
        part_shards=lambda w: {p: list(dataset_parts(w.dataset)[p]) for p in heldout_parts(w.dataset)},
        removed=lambda w: heldout_removed_tars(w.dataset),
        max_per_group=config["figures"]["fig9_pairs"],
        seed=config["heldout"]["seed"],
        code=code_version("heldout"),
    wildcard_constraints:
        dataset=STUDY_DATASET,
    log:
        "logs/heldout/{dataset}/pairs.log",
    benchmark:
        "benchmarks/heldout/{dataset}/pairs.tsv"
    threads: config["db"]["threads"]
    resources:
        mem_mb=config["db"]["mem_mb"],
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/heldout_pairs.py"


rule heldout_score:
    # One trained CLIP's S on the study dataset's held-out pairs, per group.
    input:
        checkpoint="results/models/{dataset}/{subset}/{arch}/seed{seed}/checkpoint.pt",
        pairs=f"results/{config['study_dataset']}/heldout/pairs.parquet",
        raw=f"results/{config['study_dataset']}/heldout/raw.tar",
        removed=f"results/{config['study_dataset']}/heldout/removed.tar",
    output:
        json="results/eval/{dataset}/{subset}/{arch}/seed{seed}/heldout.json",
        table="results/eval/{dataset}/{subset}/{arch}/seed{seed}/heldout.parquet",
    params:
        spec=lambda w: {"name": f"{w.dataset}/{w.subset}/{w.arch}/seed{w.seed}", "arch": train_arch(w.arch),
                        "checkpoint": f"{model_dir(w.dataset, w.subset, w.arch, w.seed)}/checkpoint.pt"},
        batch_size=config["score"]["batch_size"],
        device=config["score"]["device"],
        precision=config["score"]["precision"],
        max_pixels=config["ingest"]["max_pixels"],
        code=code_version("heldout"),
    wildcard_constraints:
        subset=r"[^/]+",
        arch=r"[^/]+",
        seed=r"\d+",
    threads: config["score"]["threads"]
    log:
        "logs/heldout/{dataset}/{subset}/{arch}/seed{seed}.log",
    benchmark:
        "benchmarks/heldout/{dataset}/{subset}/{arch}/seed{seed}.tsv"
    resources:
        mem_mb=4000,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/heldout_score.py"


rule fig9:
    input:
        lambda w: [curation_eval_path(*m, "heldout.json") for m in curated_models()],
    output:
        figure=report("results/figures/fig9_heldout_scores.png", caption="../report/fig9.rst",
                      category="Trained CLIPs (Sec. 6)"),
        table="results/fig9_heldout_scores.csv",
    params:
        labels=lambda w: model_labels(curated_models(), with_seed=False),
        seeds=lambda w: [m[3] for m in curated_models()],
        decimals=config["tables"]["decimals"],
        code=code_version("heldout"),
    log:
        "logs/heldout/fig9.log",
    benchmark:
        "benchmarks/heldout/fig9.tsv"
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/fig9.py"
