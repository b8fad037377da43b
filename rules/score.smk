# Stage `score`: CLIP scores of every sample, raw and after each text removal, per scorer model.


rule score:
    input:
        unpack(score_inputs),
        samples="results/{dataset}/samples/{part}.parquet",
    output:
        "results/{dataset}/score/{scorer}/{part}.parquet",
    params:
        shards=part_shards,
        spec=lambda w: scorer_spec(w.scorer),
        method=config["inpaint"]["method"],
        batch_size=config["score"]["batch_size"],
        device=config["score"]["device"],
        precision=config["score"]["precision"],
        max_pixels=config["ingest"]["max_pixels"],
        code=code_version("score", "inpaint"),
    threads: config["score"]["threads"]
    log:
        "logs/score/{dataset}/{scorer}/{part}.log",
    benchmark:
        "benchmarks/score/{dataset}/{scorer}/{part}.tsv"
    resources:
        mem_mb=6000,
        workers=score_workers,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/score.py"
