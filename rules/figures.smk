# Stage `figures`: the paper's profiling figures (Figs. 1, 3, 4, 5 left) of the study dataset, from
# the parrot index, the image clusters and the spot tables. Every figure goes into the report.
# Dataset-wide steps: they query the per-part files through DuckDB (parrotscope.db) with the
# job's memory and threads (config `db`), so their memory does not grow with the dataset.


rule cluster_figures:
    input:
        index=index_parts(config["study_dataset"]),
        assign=cluster_paths("assign"),
        model=cluster_paths("model"),
    output:
        profile="results/cluster_profile.csv",
        fig3a=report("results/figures/fig3a_cluster_text_share.png", caption="../report/fig3a.rst",
                     category="Data profile (Sec. 3)", subcategory="Image clusters"),
        fig5=report("results/figures/fig5_cluster_removal_scores.png", caption="../report/fig5_left.rst",
                    category="Text removal (Sec. 4)", subcategory="Figures"),
    params:
        scorer=cluster_scorer(config),
        max_clusters=config["figures"]["max_clusters"],
        seed=config["figures"]["seed"],
        code=code_version("figures"),
    log:
        "logs/figures/cluster_figures.log",
    benchmark:
        "benchmarks/figures/cluster_figures.tsv"
    threads: config["db"]["threads"]
    resources:
        mem_mb=config["db"]["mem_mb"],
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/cluster_figures.py"


rule galleries:
    input:
        index=index_parts(config["study_dataset"]),
        assign=cluster_paths("assign"),
        spot=list(study_part_paths("spot").values()),
    output:
        fig3b=report("results/figures/fig3b_text_heavy_clusters.png", caption="../report/fig3b.rst",
                     category="Data profile (Sec. 3)", subcategory="Galleries"),
        fig1=report("results/figures/fig1_top_score_pairs.png", caption="../report/fig1.rst",
                    category="Data profile (Sec. 3)", subcategory="Galleries"),
    params:
        spot=study_part_paths("spot"),
        scorer=cluster_scorer(config),
        normalisation=config["match"]["normalisation"],
        share=config["figures"]["text_heavy_share"],
        n_clusters_shown=config["figures"]["gallery_clusters"],
        top_fraction=config["figures"]["top_fraction"],
        n_top=config["figures"]["top_examples"],
        seed=config["figures"]["seed"],
        max_pixels=config["ingest"]["max_pixels"],
        code=code_version("figures"),
    log:
        "logs/figures/galleries.log",
    benchmark:
        "benchmarks/figures/galleries.tsv"
    threads: config["db"]["threads"]
    resources:
        mem_mb=config["db"]["mem_mb"],
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/galleries.py"


rule text_figures:
    input:
        index=index_parts(config["study_dataset"]),
        spot=list(study_part_paths("spot").values()),
        samples=list(study_part_paths("samples").values()),
    output:
        fig4a=report("results/figures/fig4a_word_counts.png", caption="../report/fig4a.rst",
                     category="Data profile (Sec. 3)", subcategory="Text measures"),
        fig4b=report("results/figures/fig4b_area_vs_score.png", caption="../report/fig4b.rst",
                     category="Data profile (Sec. 3)", subcategory="Text measures"),
        fig4c=report("results/figures/fig4c_size_vs_parrot.png", caption="../report/fig4c.rst",
                     category="Data profile (Sec. 3)", subcategory="Text measures"),
    params:
        spot=study_part_paths("spot"),
        samples=study_part_paths("samples"),
        scorer=cluster_scorer(config),
        normalisation=config["match"]["normalisation"],
        max_images=config["figures"]["max_images"],
        seed=config["figures"]["seed"],
        code=code_version("figures"),
    log:
        "logs/figures/text_figures.log",
    benchmark:
        "benchmarks/figures/text_figures.tsv"
    threads: config["db"]["threads"]
    resources:
        mem_mb=config["db"]["mem_mb"],
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/text_figures.py"


rule example_figures:
    # Fig. 10 (images beside their text-removed copies, where removal raises and lowers S) and
    # Table 16 / Fig. 17 (the top-S parrot captions, co-embedded words highlighted).
    input:
        index=index_parts(config["study_dataset"]),
        spot=list(study_part_paths("spot").values()),
        inpaint=list(study_inpaint_paths("all").values()),
    output:
        fig10=report("results/figures/fig10_text_removal_examples.png", caption="../report/fig10.rst",
                     category="Data profile (Sec. 3)", subcategory="Galleries"),
        fig17=report("results/figures/fig17_parrot_captions.png", caption="../report/fig17.rst",
                     category="Data profile (Sec. 3)", subcategory="Galleries"),
        table16="results/table16_parrot_captions.csv",
    params:
        spot=study_part_paths("spot"),
        inpaint=study_inpaint_paths("all"),
        scorer=cluster_scorer(config),
        normalisation=config["match"]["normalisation"],
        n_removal=config["figures"]["removal_examples"],
        n_parrot=config["figures"]["parrot_examples"],
        max_pixels=config["ingest"]["max_pixels"],
        code=code_version("figures"),
    log:
        "logs/figures/example_figures.log",
    benchmark:
        "benchmarks/figures/example_figures.tsv"
    threads: config["db"]["threads"]
    resources:
        mem_mb=config["db"]["mem_mb"],
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/example_figures.py"
