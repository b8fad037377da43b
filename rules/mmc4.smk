# Stage `mmc4`: MMC4's documents as image-caption samples. Each part's document files become one
# webdataset tar (each image captioned by its assigned sentence; bad documents and images without
# their file as status rows), which ingest and every later stage read as any dataset's shards.


rule mmc4_convert:
    input:
        sources=mmc4_part_inputs,
    output:
        tar="results/{dataset}/mmc4/{part}.tar",
        counts="results/{dataset}/mmc4/{part}.counts.json",
    params:
        docs=lambda w: list(source_parts(w.dataset)[w.part]),
        images=lambda w: mmc4_images(w.dataset),
        on_bad_shard=lambda w: source_mode(w.dataset),
        code=code_version("mmc4"),
    log:
        "logs/mmc4_convert/{dataset}/{part}.log",
    benchmark:
        "benchmarks/mmc4_convert/{dataset}/{part}.tsv"
    resources:
        mem_mb=2000,
    group:
        "part"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/mmc4_convert.py"
