# Stage `synth`: the synthetic text benchmark (paper Sec. 5, Figs. 6-8, Table 10's Sync. Score).
# N-gram vocabularies of captions and of Co-Emb. text -> each rendered in four styles -> measured
# per model (Sync. Score, sync gap, word zero-shot accuracy) -> figures.


rule synth_counts:
    # Per part: the part's gram counts (the Python normalisation runs here, in parallel).
    input:
        # Captions and Co-Emb. words only: the text index, so the benchmark needs no scoring.
        index="results/{dataset}/index_text/{part}.parquet",
    output:
        "results/synth/{dataset}/counts/{source}_{n}gram/{part}.parquet",
    params:
        normalisation=config["match"]["normalisation"],
        code=code_version("synth", "match"),
    wildcard_constraints:
        source="caption|coemb",
        n=r"\d+",
    log:
        "logs/synth/{dataset}/counts_{source}_{n}gram/{part}.log",
    benchmark:
        "benchmarks/synth/{dataset}/counts_{source}_{n}gram/{part}.tsv"
    resources:
        mem_mb=2000,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/synth_counts.py"


rule synth_vocab:
    # Dataset-wide: the parts' counts summed and ranked by DuckDB (a GROUP BY over every gram).
    input:
        counts=lambda w: [f"results/synth/{w.dataset}/counts/{w.source}_{w.n}gram/{p}.parquet"
                          for p in part_names(w.dataset)],
    output:
        "results/synth/{dataset}/{source}_{n}gram.parquet",
    params:
        top_k=config["synth"]["top_k"],
        code=code_version("synth", "match"),
    wildcard_constraints:
        source="caption|coemb",
        n=r"\d+",
    log:
        "logs/synth/{dataset}/vocab_{source}_{n}gram.log",
    benchmark:
        "benchmarks/synth/{dataset}/vocab_{source}_{n}gram.tsv"
    threads: config["db"]["threads"]
    resources:
        mem_mb=config["db"]["mem_mb"],
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/synth_vocab.py"


rule synth_render:
    input:
        vocab="results/synth/{dataset}/{source}_{n}gram.parquet",
    output:
        directory("results/synth/{dataset}/{source}_{n}gram"),
    params:
        font=config["synth"]["font"],
        font_px=config["synth"]["font_px"],
        size=config["synth"]["size"],
        placement=config["synth"]["placement"],
        code=code_version("synth", "match"),
    wildcard_constraints:
        source="caption|coemb",
        n=r"\d+",
    log:
        "logs/synth/{dataset}/render_{source}_{n}gram.log",
    benchmark:
        "benchmarks/synth/{dataset}/render_{source}_{n}gram.tsv"
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/synth_render.py"


rule synth_eval:
    input:
        benchmark="results/synth/{dataset}/{source}_{n}gram",
        # A scorer the workflow trains itself: its checkpoint is an input, so it is built first.
        checkpoint=lambda w: [c for c in [scorer_spec(w.model).get("checkpoint") or ""] if c.startswith("results/")],
    output:
        json="results/synth/{dataset}/eval/{model}/{source}_{n}gram.json",
        table="results/synth/{dataset}/eval/{model}/{source}_{n}gram.parquet",
    params:
        spec=lambda w: scorer_spec(w.model),
        batch_size=config["synth"]["batch_size"],
        template=config["synth"]["template"],
        freq_bins=config["synth"]["freq_bins"],
        device=config["synth"]["device"],
        precision=config["score"]["precision"],
        code=code_version("synth", "match", "score", "train"),
    wildcard_constraints:
        source="caption|coemb",
        n=r"\d+",
        model=r"[A-Za-z0-9_\-]+",
    threads: config["synth"]["threads"]
    log:
        "logs/synth/{dataset}/eval_{model}_{source}_{n}gram.log",
    benchmark:
        "benchmarks/synth/{dataset}/eval_{model}_{source}_{n}gram.tsv"
    resources:
        mem_mb=6000,
        workers=score_workers,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/synth_eval.py"


rule synth_figures:
    # Figs. 6-7: every model on every vocabulary (source x n); Fig. 8: every model on the 1-gram
    # caption vocabulary, the benchmark of the paper's Fig. 8 and Table 10.
    input:
        tables=lambda w: [synth_eval_path(w.dataset, m, s, n, "parquet") for m in synth_models()
                          for s in config["synth"]["sources"] for n in config["synth"]["ngrams"]],
        metrics=lambda w: [synth_eval_path(w.dataset, m, "caption", 1, "json") for m in synth_models()],
    output:
        curves=report("results/figures/fig6_7_synth_{dataset}.png", caption="../report/synth_figures.rst",
                      category="Synthetic text (Sec. 5)"),
        bars=report("results/figures/fig8_synth_{dataset}.png", caption="../report/synth_figures.rst",
                    category="Synthetic text (Sec. 5)"),
    params:
        tables=lambda w: {f"{m} {s} {n}-gram": synth_eval_path(w.dataset, m, s, n, "parquet") for m in synth_models()
                          for s in config["synth"]["sources"] for n in config["synth"]["ngrams"]},
        metrics=lambda w: {m: synth_eval_path(w.dataset, m, "caption", 1, "json") for m in synth_models()},
        freq_bins=config["synth"]["freq_bins"],
        code=code_version("synth", "match"),
    log:
        "logs/synth/{dataset}/figures.log",
    benchmark:
        "benchmarks/synth/{dataset}/figures.tsv"
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/synth_figures.py"
