# Stage `report`: what `snakemake --report report.html` gathers besides the figures: every CSV
# table rendered as HTML (the report shows HTML inline; CSV files it only offers as downloads).

from pathlib import Path

# Table name -> (title, caption file under report/).
REPORT_TABLES = {
    "table1": ("Table 1: text in images and parrot captions", "table1.rst"),
    "table2": ("Table 2: mean CLIP score under text removal", "table2.rst"),
    **{t: (f"{t.replace('table', 'Table ')}: CLIP trained on curated subsets", "curation_table.rst")
       for t in config["curate"]["tables"]},
    "cluster_profile": ("Cluster profile (Figs. 3a, 5 left)", "cluster_profile.rst"),
    "table10": ("Table 10: the simple fix against reference models", "table10.rst"),
    "table_filters": ("Filters compared: fix, CLIP-score, T-MARS, flip-CLIP, random", "table_filters.rst"),
    "table7": ("Table 7: BLIP pre-trained on curated subsets", "table7.rst"),
}
# A study table of several study datasets, side by side (`results/{table}_all.csv`).
REPORT_TABLES.update({f"{t}_all": (f"{REPORT_TABLES[t][0]}, every study dataset", "side_by_side.rst")
                      for t in shared_study_tables()})
# Tables that are their own targets (not in the default run): in the report when asked for,
# e.g. `snakemake --report report.html all results/report/table7.html`.
OWN_TARGET_TABLES = ("table7",)


rule report_table:
    input:
        "results/{name}.csv",
    output:
        report("results/report/{name}.html", caption="../report/table.rst", category="Tables"),
    params:
        title=lambda w: REPORT_TABLES[w.name][0],
        # The caption text travels as a param: one caption template serves every table.
        caption=lambda w: (Path(workflow.basedir) / "report" / REPORT_TABLES[w.name][1]).read_text(),
        code=code_version("report"),
    wildcard_constraints:
        name="|".join(REPORT_TABLES),
    log:
        "logs/report/{name}.log",
    benchmark:
        "benchmarks/report/{name}.tsv"
    resources:
        mem_mb=1000,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/report_table.py"
