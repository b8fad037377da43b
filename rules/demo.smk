# Stage `demo`: the embedded default's input, a LAION-like dataset made by the workflow itself
# (deterministic by seed, ground truth in each sample's json), and its held-out evaluation sets.


rule demo_shard:
    output:
        tar="results/{dataset}/shards/{shard}.tar",
    params:
        demo=lambda w: dataset_config(w.dataset)["generator"],
        code=code_version("demo"),
    log:
        "logs/demo_shard/{dataset}/{shard}.log",
    benchmark:
        "benchmarks/demo_shard/{dataset}/{shard}.tsv"
    resources:
        mem_mb=1000,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/demo_shard.py"


rule demo_eval:
    output:
        dir=directory("results/{dataset}/eval/{evalset}"),
    params:
        demo=lambda w: dataset_config(w.dataset)["generator"],
        code=code_version("demo"),
    wildcard_constraints:
        evalset="concepts|retrieval",
    log:
        "logs/demo_eval/{dataset}/{evalset}.log",
    benchmark:
        "benchmarks/demo_eval/{dataset}/{evalset}.tsv"
    resources:
        mem_mb=1000,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/demo_eval.py"


rule demo_documents:
    # An MMC4-like dataset (`format: mmc4` with a generator): one document file (jsonl) and the
    # tar of its images, read by mmc4_convert as MMC4's own files are.
    output:
        docs="results/{dataset}/mmc4_source/{shard}.jsonl",
        images="results/{dataset}/mmc4_source/{shard}.images.tar",
    params:
        demo=lambda w: dataset_config(w.dataset)["generator"],
        code=code_version("demo.documents"),
    log:
        "logs/demo_documents/{dataset}/{shard}.log",
    benchmark:
        "benchmarks/demo_documents/{dataset}/{shard}.tsv"
    resources:
        mem_mb=1000,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/demo_documents.py"
