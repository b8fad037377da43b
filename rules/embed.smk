# Stage `embed`: image and caption embeddings of one scorer per part (for clustering, near-duplicate
# removal and later analyses); the same embeddings the score stage computes.


rule embed:
    input:
        samples="results/{dataset}/samples/{part}.parquet",
        # A scorer the workflow trains itself: its checkpoint is an input, so it is built first.
        checkpoint=lambda w: [c for c in [scorer_spec(w.scorer).get("checkpoint") or ""] if c.startswith("results/")],
    output:
        table="results/{dataset}/embed/{scorer}/{part}.parquet",
        counts="results/{dataset}/embed/{scorer}/{part}.counts.json",
    params:
        shards=part_shards,
        spec=lambda w: scorer_spec(w.scorer),
        batch_size=config["score"]["batch_size"],
        device=config["score"]["device"],
        precision=config["score"]["precision"],
        max_pixels=config["ingest"]["max_pixels"],
        code=code_version("embed"),
    wildcard_constraints:
        scorer=r"[A-Za-z0-9_\-]+",
    threads: config["score"]["threads"]
    log:
        "logs/embed/{dataset}/{scorer}/{part}.log",
    benchmark:
        "benchmarks/embed/{dataset}/{scorer}/{part}.tsv"
    resources:
        mem_mb=6000,
        workers=score_workers,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/embed.py"
