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
