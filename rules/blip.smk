# Stage `blip`: Table 7 (issue 20). A BLIP (transformers' modules, BLIP's ITC + ITM + LM
# pre-training) is pre-trained on each curated subset in `blip.subsets`, fine-tuned per
# downstream task and set (captioning, VQA, retrieval; "seeing" and "reading" sets in the standard
# datasets' layouts), and scored; results/table7.csv gathers them. Its own target, like
# table_str: the embedded default's Table 7 takes longer than the rest of the study.

BLIP_SET = "|".join(BLIP_SETS)


check_blip_config()


rule blip_data:
    # The demo's miniature downstream sets, in the layouts of COCO Karpathy, TextCaps, VQAv2,
    # TextVQA and ST-VQA (a cluster config points blip.sets at the real ones instead).
    output:
        directory("results/blip/data/{name}"),
    params:
        generator=lambda w: dataset_config(config["study_dataset"]).get("generator"),
        demo=config["blip"]["demo"],
        code=code_version("blip_data"),
    wildcard_constraints:
        name=BLIP_SET,
    log:
        "logs/blip_data/{name}.log",
    benchmark:
        "benchmarks/blip_data/{name}.tsv"
    resources:
        mem_mb=2000,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/blip_data.py"


rule blip_tokenizer:
    # One tokenizer for every subset's BLIP: a configured BERT tokenizer, or one trained on a
    # seeded sample of the study dataset's captions and the sets' training texts.
    input:
        index=lambda w: index_parts(config["study_dataset"], scored=False) if blip_trains_tokenizer() else [],
        sets=lambda w: blip_set_inputs(BLIP_SETS) if blip_trains_tokenizer() else [],
    output:
        directory("results/blip/tokenizer"),
    params:
        tokenizer=config["blip"]["tokenizer"],
        sets=lambda w: {name: config["blip"]["sets"][name] for name in BLIP_SETS},
        seed=config["blip"]["seed"],
        code=code_version("blip_model"),
    log:
        "logs/blip_tokenizer/tokenizer.log",
    benchmark:
        "benchmarks/blip_tokenizer/tokenizer.tsv"
    resources:
        mem_mb=2000,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/blip_tokenizer.py"


rule blip_train:
    input:
        shards=train_shards,
        counts=train_counts,
        tokenizer="results/blip/tokenizer",
    output:
        model="results/blip/models/{dataset}/{subset}/seed{seed}/model.pt",
        json="results/blip/models/{dataset}/{subset}/seed{seed}/train.json",
    params:
        model=config["blip"]["model"],
        hparams=config["blip"]["hparams"]["pretrain"],
        seed=lambda w: int(w.seed),
        device=config["blip"]["device"],
        gpus=config["blip"]["gpus"],
        code=code_version("blip_train"),
    wildcard_constraints:
        subset=r"[^/]+",
        seed=r"\d+",
    threads: config["blip"]["threads"]
    log:
        "logs/blip_train/{dataset}/{subset}/seed{seed}.log",
    benchmark:
        "benchmarks/blip_train/{dataset}/{subset}/seed{seed}.tsv"
    resources:
        mem_mb=8000,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/blip_train.py"


rule blip_finetune:
    input:
        model="results/blip/models/{dataset}/{subset}/seed{seed}/model.pt",
        tokenizer="results/blip/tokenizer",
        set=lambda w: blip_set_inputs([w.set]),
    output:
        model="results/blip/finetune/{dataset}/{subset}/seed{seed}/{task}_{set}/model.pt",
        json="results/blip/finetune/{dataset}/{subset}/seed{seed}/{task}_{set}/train.json",
    params:
        set=lambda w: config["blip"]["sets"][w.set],
        hparams=lambda w: config["blip"]["hparams"][w.task],
        seed=lambda w: int(w.seed),
        device=config["blip"]["device"],
        code=code_version("blip_train"),
    wildcard_constraints:
        subset=r"[^/]+",
        seed=r"\d+",
        task="caption|vqa|retrieval",
        set=BLIP_SET,
    threads: config["blip"]["threads"]
    log:
        "logs/blip_finetune/{dataset}/{subset}/seed{seed}/{task}_{set}.log",
    benchmark:
        "benchmarks/blip_finetune/{dataset}/{subset}/seed{seed}/{task}_{set}.tsv"
    resources:
        mem_mb=8000,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/blip_finetune.py"


rule blip_eval:
    input:
        model="results/blip/finetune/{dataset}/{subset}/seed{seed}/{task}_{set}/model.pt",
        tokenizer="results/blip/tokenizer",
        set=lambda w: blip_set_inputs([w.set]),
    output:
        json="results/blip/eval/{dataset}/{subset}/seed{seed}/{task}_{set}.json",
        table="results/blip/eval/{dataset}/{subset}/seed{seed}/{task}_{set}.parquet",
    params:
        set=lambda w: config["blip"]["sets"][w.set],
        settings=config["blip"]["eval"],
        device=config["blip"]["device"],
        code=code_version("blip_train"),
    wildcard_constraints:
        subset=r"[^/]+",
        seed=r"\d+",
        task="caption|vqa|retrieval",
        set=BLIP_SET,
    threads: config["blip"]["threads"]
    log:
        "logs/blip_eval/{dataset}/{subset}/seed{seed}/{task}_{set}.log",
    benchmark:
        "benchmarks/blip_eval/{dataset}/{subset}/seed{seed}/{task}_{set}.tsv"
    resources:
        mem_mb=4000,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/blip_eval.py"


rule table7:
    input:
        evals=lambda w: [e["eval"] for e in blip_table_entries()],
        stats=lambda w: [e["train"] for e in blip_table_entries()],
    output:
        "results/table7.csv",
    params:
        entries=lambda w: blip_table_entries(),
        decimals=config["tables"]["decimals"],
        code=code_version("tables"),
    log:
        "logs/table7/table7.log",
    benchmark:
        "benchmarks/table7/table7.tsv"
    resources:
        mem_mb=1000,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/table7.py"
