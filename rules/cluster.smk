# Stage `cluster`: image clusters as the paper built them (Sec. 3): PCA of the cluster scorer's
# image embeddings, faiss K-means (or released PCA + centroids), then every sample's nearest
# centroid, per part.

from parrotscope.cluster import check_cluster, cluster_scorer

check_cluster(config)

CLUSTER_FIT_KEYS = ("pca_dim", "pca_batch_size", "n_clusters", "niter", "nredo", "seed",
                    "max_points_per_centroid", "min_points_per_centroid", "fit_max_samples", "released")


rule cluster_fit:
    input:
        embed=lambda w: [f"results/{w.dataset}/embed/{w.scorer}/{p}.parquet" for p in part_names(w.dataset)],
        released=released_cluster_files(),
    output:
        model="results/{dataset}/cluster/{scorer}/model.npz",
        summary="results/{dataset}/cluster/{scorer}/fit.json",
    params:
        cfg={k: config["cluster"][k] for k in CLUSTER_FIT_KEYS},
        code=code_version("cluster"),
    wildcard_constraints:
        scorer=r"[A-Za-z0-9_\-]+",
    threads: config["cluster"]["threads"]
    log:
        "logs/cluster/{dataset}/{scorer}/fit.log",
    benchmark:
        "benchmarks/cluster/{dataset}/{scorer}/fit.tsv"
    resources:
        mem_mb=8000,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/cluster_fit.py"


rule cluster_assign:
    input:
        embed="results/{dataset}/embed/{scorer}/{part}.parquet",
        model="results/{dataset}/cluster/{scorer}/model.npz",
    output:
        "results/{dataset}/cluster/{scorer}/assign/{part}.parquet",
    params:
        code=code_version("cluster"),
    wildcard_constraints:
        scorer=r"[A-Za-z0-9_\-]+",
    log:
        "logs/cluster/{dataset}/{scorer}/assign_{part}.log",
    benchmark:
        "benchmarks/cluster/{dataset}/{scorer}/assign_{part}.tsv"
    resources:
        mem_mb=4000,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/cluster_assign.py"
