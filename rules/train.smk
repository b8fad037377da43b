# Stage `train`: CLIP training with OpenCLIP's own trainer (open_clip_train), one job per
# (dataset, subset, architecture, seed). Subset `pool` is every sample of the dataset: trained with
# `train.seed` it is the reference CLIP that scores the embedded default; the table rows are
# trained with every seed of `train.seeds`.


rule train:
    input:
        shards=train_shards,
        counts=train_counts,
    output:
        checkpoint="results/models/{dataset}/{subset}/{arch}/seed{seed}/checkpoint.pt",
        results="results/models/{dataset}/{subset}/{arch}/seed{seed}/results.json",
    params:
        arch=lambda w: train_arch(w.arch),
        # The reference CLIP (subset `pool`, a scorer) has its own settings: an experiment on the
        # subsets must not change the instrument that scored and selected them.
        hparams=lambda w: config["train"]["reference_hparams" if w.subset == "pool" else "hparams"],
        seed=lambda w: int(w.seed),
        device=config["train"]["device"],
        run_dir=lambda w: f"{model_dir(w.dataset, w.subset, w.arch, w.seed)}/run",
        # The pool's shards come from parts.json (see train_shards in common.smk).
        shards_from_parts=lambda w: w.subset == "pool",
        code=code_version("train", "ingest", "openclip_main"),  # the trainer runs as openclip_main
    wildcard_constraints:
        subset=r"[^/]+",
        arch=r"[^/]+",
        seed=r"\d+",
    threads: config["train"]["threads"]
    log:
        "logs/train/{dataset}/{subset}/{arch}/seed{seed}.log",
    benchmark:
        "benchmarks/train/{dataset}/{subset}/{arch}/seed{seed}.tsv"
    resources:
        mem_mb=8000,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/train.py"
