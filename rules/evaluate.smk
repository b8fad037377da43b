# Stage `evaluate`: zero-shot benchmark of each trained CLIP with clip-benchmark, one job per
# (dataset, subset, architecture). The embedded default uses the demo's held-out sets; a cluster
# points evaluate.datacomp_root at DataComp's evaluation sets (parrotscope.evaluate.DATACOMP_TASKS).

from parrotscope.evaluate import tasks_for, workflow_inputs


rule evaluate:
    input:
        checkpoint="results/models/{dataset}/{subset}/{arch}/seed{seed}/checkpoint.pt",
        # Only the sets this workflow writes (the demo's); DataComp's live outside it.
        evalsets=lambda w: workflow_inputs(tasks_for(config, w.dataset)),
    output:
        "results/eval/{dataset}/{subset}/{arch}/seed{seed}/benchmark.json",
    params:
        name=lambda w: f"{w.dataset}/{w.subset}/{w.arch}/seed{w.seed}",
        arch=lambda w: train_arch(w.arch),
        tasks=lambda w: tasks_for(config, w.dataset),
        batch_size=config["evaluate"]["batch_size"],
        device=config["evaluate"]["device"],
        num_workers=config["evaluate"]["num_workers"],
        amp=config["evaluate"]["amp"],
        code=code_version("evaluate"),
    wildcard_constraints:
        subset=r"[^/]+",
        arch=r"[^/]+",
        seed=r"\d+",
    threads: config["evaluate"]["threads"]
    log:
        "logs/evaluate/{dataset}/{subset}/{arch}/seed{seed}.log",
    benchmark:
        "benchmarks/evaluate/{dataset}/{subset}/{arch}/seed{seed}.tsv"
    resources:
        mem_mb=4000,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/evaluate.py"


rule evaluate_sync:
    # The synthetic-text measures of a trained CLIP (Sync. Score, sync gap, word zero-shot
    # accuracy) on a 1-gram vocabulary of its dataset (`synth.sync_source`), the benchmark of Fig. 8.
    input:
        checkpoint="results/models/{dataset}/{subset}/{arch}/seed{seed}/checkpoint.pt",
        benchmark=f"results/synth/{{dataset}}/{config['synth']['sync_source']}_1gram",
    output:
        json="results/eval/{dataset}/{subset}/{arch}/seed{seed}/sync.json",
        table="results/eval/{dataset}/{subset}/{arch}/seed{seed}/sync.parquet",
    params:
        spec=lambda w: {"name": f"{w.dataset}/{w.subset}/{w.arch}/seed{w.seed}", "arch": train_arch(w.arch),
                        "checkpoint": f"{model_dir(w.dataset, w.subset, w.arch, w.seed)}/checkpoint.pt"},
        batch_size=config["synth"]["batch_size"],
        template=config["synth"]["template"],
        freq_bins=config["synth"]["freq_bins"],
        device=config["synth"]["device"],
        precision=config["score"]["precision"],
        code=code_version("synth"),
    wildcard_constraints:
        subset=r"[^/]+",
        arch=r"[^/]+",
        seed=r"\d+",
    threads: config["synth"]["threads"]
    log:
        "logs/evaluate_sync/{dataset}/{subset}/{arch}/seed{seed}.log",
    benchmark:
        "benchmarks/evaluate_sync/{dataset}/{subset}/{arch}/seed{seed}.tsv"
    resources:
        mem_mb=4000,
        workers=score_workers,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/synth_eval.py"
