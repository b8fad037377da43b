"""The DAG end to end on a tiny config: demo data and a user dataset with bad inputs, to Table 1."""

import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import image_bytes, write_tar
from workflow import planned_jobs, snakemake, tiny_config, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tiny_default):
    return tiny_default


# The profiling figures and the report's HTML tables of the default target, for the report test.
REPORTED = ["results/figures/fig1_top_score_pairs.png", "results/figures/fig3a_cluster_text_share.png",
            "results/figures/fig4a_word_counts.png", "results/report/table1.html",
            "results/report/table3.html", "results/report/cluster_profile.html"]


def test_table1_reconciles_for_every_dataset(tiny_run):
    table = pd.read_csv(tiny_run / "results" / "table1.csv", index_col=0)
    assert {"demo (spotted)", "demo (ground truth)", "mine (spotted)"} <= set(table.columns)
    for col in table.columns:
        t = table[col]
        assert t["Samples in"] == t["Samples processed"] + t["Samples skipped"]
    assert table.loc["Samples in", "demo (spotted)"] == 24
    mine = table["mine (spotted)"]
    assert (mine["Samples in"], mine["Samples processed"], mine["Samples skipped"]) == (4, 1, 3)
    assert mine["Skipped: corrupt_image"] == 1 and mine["Skipped: missing_caption"] == 1


def test_the_whole_default_builds_every_table_figure_and_report_table(tiny_run):
    """`snakemake -c 2` on the tiny config: each table has its configured rows and its columns,
    each figure is a drawn picture, and the selection and materialising counts reconcile."""
    from PIL import Image

    cfg = tiny_config()
    results = tiny_run / "results"
    for table, rows in cfg["curate"]["tables"].items():
        t = pd.read_csv(results / f"{table}.csv", index_col="subset")
        assert list(t.index) == rows, table
        assert (t["samples"] == cfg["curate"]["size"]).all() and (t["eligible"] >= t["samples"]).all()
        assert t["shared with next"].iloc[:-1].between(0, 1).all() and t["shared with next"].iloc[-1:].isna().all()
        for column in ("tiny-rn IN", "tiny-rn Ret.", "tiny-rn Avg.", "tiny-rn word acc."):
            assert t[column].notna().all(), (table, column)
        dataset = cfg["curate"]["table_datasets"].get(table, "demo")
        for subset in rows:
            stats = json.loads((results / dataset / "subsets" / subset / "stats.json").read_text())
            keys = pd.read_parquet(results / dataset / "subsets" / subset / "keys.parquet")
            assert stats["n_selected"] == len(keys) == cfg["curate"]["size"] <= stats["n_eligible"] <= stats["n_ok"]
            written = json.loads((results / dataset / "subsets" / subset / "materialised.json").read_text())
            assert written["samples_written"] == written["n_keys"] == len(keys), (table, subset)
            assert (tiny_run / "results" / "models" / dataset / subset / "tiny-rn" / "seed0" / "checkpoint.pt").is_file()
    # Tables 4-6 trained on the pool named for them, Table 3 on the study dataset.
    assert {d.name for d in (results / "models" / "demo_mix").iterdir()} == {
        s for t in ("table4", "table5", "table6") for s in cfg["curate"]["tables"][t]}
    table1 = pd.read_csv(results / "table1.csv", index_col=0)
    assert {"demo (spotted)", "demo_mix (spotted)", "mine (spotted)"} <= set(table1.columns)
    for dataset in ("demo", "demo_mix"):
        parts = json.loads((results / dataset / "parts.json").read_text())
        column = table1[f"{dataset} (spotted)"]
        assert column["Samples in"] == parts["samples_in"] == column["Samples processed"] + column["Samples skipped"]
    table2 = pd.read_csv(results / "table2.csv", index_col=0)
    assert "Co-Emb. Text Removal" in table2.index
    filters = pd.read_csv(results / "table_filters.csv", index_col=0)
    assert list(filters.index) == ["filter_fix", "filter_clip_score", "filter_tmars", "filter_flip_clip",
                                   "filter_random"]
    table10 = pd.read_csv(results / "table10.csv", index_col=0)
    assert list(table10.columns) == ["filter_fix", "filter_random", "pool"]
    profile = pd.read_csv(results / "cluster_profile.csv")
    assert len(profile) == cfg["cluster"]["n_clusters"]
    figures = sorted((results / "figures").glob("*.png"))
    assert {"fig1_top_score_pairs.png", "fig5_cluster_removal_scores.png", "fig8_sync_trained.png",
            "fig6_7_synth_demo.png"} <= {f.name for f in figures}
    for figure in figures:
        with Image.open(figure) as image:
            pixels = np.asarray(image.convert("L"))
        assert pixels.std() > 5, figure.name  # something drawn, not a blank canvas
    for name in ("table1", "table3", "table4", "table10", "cluster_profile"):
        assert "<table" in (results / "report" / f"{name}.html").read_text()


def test_every_stage_keeps_every_sample(tiny_run):
    parts = json.loads((tiny_run / "results" / "demo" / "parts.json").read_text())
    assert parts["n_parts"] == 2 and parts["samples_in"] == 24
    for part in parts["parts"]:
        keys = {}
        for stage in ("samples", "spot", "match"):
            df = pd.read_parquet(tiny_run / "results" / "demo" / stage / f"{part}.parquet")
            assert df["__key__"].is_unique
            keys[stage] = set(df["__key__"])
        assert keys["samples"] == keys["spot"] == keys["match"]


def test_demo_text_is_spotted(tiny_run):
    match = pd.concat(pd.read_parquet(p) for p in (tiny_run / "results" / "demo" / "match").glob("*.parquet"))
    with_text = match[match["gt_has_text"].astype(bool)]
    assert len(with_text) > 0
    # The real OCR finds text in most images that have it.
    assert with_text["has_text"].astype(bool).mean() >= 0.6


def test_dry_run_plans_nothing_after_a_run(tiny_run):
    assert planned_jobs(tiny_run) == {}


def test_table2_and_index_from_the_tiny_run(tiny_run):
    table = pd.read_csv(tiny_run / "results" / "table2.csv", index_col=0)
    assert table.loc["Raw w/ Emb. Text", "ref n"] > 0
    assert table.loc["All-Emb. Text Removal", "ref n"] == table.loc["Raw w/ Emb. Text", "ref n"]
    # the random Co-Emb. control takes donors with co-embedded words: it covers the same images
    assert table.loc["Random Co-Emb. Text Removal", "ref n"] == table.loc["Co-Emb. Text Removal", "ref n"] > 0
    index = pd.read_parquet(tiny_run / "results" / "demo" / "index")
    assert len(index) == 24 and index["__key__"].is_unique
    with_text = index[index["has_text"].fillna(False).astype(bool)]
    assert with_text["ref.rsa"].notna().all()
    from PIL import Image

    with Image.open(tiny_run / "results" / "figures" / "fig5_relative_scores.png") as fig:
        pixels = np.asarray(fig.convert("L"))
    # one 5.5 x 4 inch panel per scorer at 110 dpi, with drawn bars (not a blank canvas)
    assert pixels.shape == (440, 605) and (pixels < 250).mean() > 0.02


def test_table3_trains_and_evaluates_each_curated_subset(tiny_run):
    table = pd.read_csv(tiny_run / "results" / "table3.csv", index_col=0)
    assert list(table.index) == ["random", "no_text", "text_only"]
    assert (table["samples"] == 8).all()
    for column in ("tiny-rn IN", "tiny-rn Ret.", "tiny-rn Avg.", "tiny-rn Sync. Score", "tiny-rn word acc."):
        assert table[column].between(-1, 1).all(), column
    stats = json.loads((tiny_run / "results" / "demo" / "subsets" / "no_text" / "stats.json").read_text())
    assert stats["share_has_text"] == 0.0
    model = tiny_run / "results" / "models" / "demo" / "text_only" / "tiny-rn" / "seed0"
    results = json.loads((model / "results.json").read_text())
    assert results["n_samples"] == 8 and results["steps"] >= 1


def change(tiny_run, name, text):
    path = tiny_run / f"{name}.yaml"
    path.write_text(text)
    # --configfile takes several files: it goes last, after the targets.
    return planned_jobs(tiny_run, "results/table1.csv", "results/table2.csv", "--configfile", str(path))


def test_an_ocr_setting_reruns_spot_and_everything_downstream(tiny_run):
    jobs = change(tiny_run, "ocr", "spot:\n  min_score: 0.6\n")
    assert {"spot", "match", "inpaint", "score", "index", "table1", "table2"} <= set(jobs)
    assert not {"demo_shard", "ingest", "train"} & set(jobs)


def test_an_inpainting_setting_reruns_inpaint_onwards_but_not_spot(tiny_run):
    jobs = change(tiny_run, "inpaint", "inpaint:\n  dilate_px: 3\n")
    assert set(jobs) - {"all"} == {"inpaint", "score", "index", "table2", "study_table"}
    # Another method: new inpainted tars (all four masks), then the scores; no spotting.
    jobs = change(tiny_run, "method", "inpaint:\n  method: lama\n  lama:\n    checkpoint: big-lama.pt\n")
    assert set(jobs) - {"all"} == {"inpaint", "score", "index", "table2", "study_table"}


def test_a_training_setting_reruns_train_and_what_uses_the_model(tiny_run):
    # The subsets' training settings: Tables 1-2 are untouched ...
    assert change(tiny_run, "train", "train:\n  hparams:\n    lr: 0.002\n") == {}
    # ... and Table 3 retrains, re-evaluates and rebuilds, nothing else.
    jobs = planned_jobs(tiny_run, "results/table3.csv", "--configfile", str(tiny_run / "train.yaml"))
    assert set(jobs) - {"all"} == {"train", "evaluate", "evaluate_sync", "curation_table", "study_table"}
    # The reference CLIP's settings: it retrains, and everything it scores follows, with the image
    # clusters of its embeddings that Table 2's cluster spread reads (tables.cluster_spread).
    jobs = change(tiny_run, "reference", "train:\n  reference_hparams:\n    lr: 0.002\n")
    assert set(jobs) - {"all"} == {"train", "score", "index", "embed", "cluster_fit", "cluster_assign", "table2",
                                   "study_table"}


def test_a_second_training_seed_trains_only_the_table_rows_again(tiny_run):
    """`train.seeds`: one more seed trains and evaluates each row's CLIP once more and rebuilds the
    table; the reference CLIP (`train.seed`) and everything it scored stay."""
    jobs = change(tiny_run, "seeds", "train:\n  seeds: [0, 1]\n")
    assert jobs == {}  # Tables 1-2 do not use the seeds
    jobs = planned_jobs(tiny_run, "results/table3.csv", "--configfile", str(tiny_run / "seeds.yaml"))
    rows = len(pd.read_csv(tiny_run / "results" / "table3.csv"))
    assert jobs == {"train": rows, "evaluate": rows, "evaluate_sync": rows, "curation_table": 1, "study_table": 1}


def test_a_table_setting_reruns_only_tables(tiny_run):
    jobs = change(tiny_run, "tables", "tables:\n  decimals: 3\n")
    assert set(jobs) - {"all"} == {"table1", "table2", "study_table"}


def test_every_study_dataset_gets_its_tables_and_the_first_the_design_cards(tiny_run):
    """Table 2 of both study datasets, side by side; results/table2.csv is the first one's."""
    results = tiny_run / "results"
    first = pd.read_csv(results / "demo" / "table2.csv", index_col=0)
    assert pd.read_csv(results / "table2.csv", index_col=0).equals(first)
    mix = pd.read_csv(results / "demo_mix" / "table2.csv", index_col=0)
    both = pd.read_csv(results / "table2_all.csv")
    assert both["dataset"].tolist() == ["demo"] * len(first) + ["demo_mix"] * len(mix)
    assert both.iloc[len(first):, 2:].reset_index(drop=True).equals(mix.reset_index(drop=True))
    assert not (results / "demo_mix" / "table3.csv").exists()  # study_tables: Table 2 only


def test_fig9_scores_every_curated_clip_on_pairs_no_subset_holds(tiny_run):
    results = tiny_run / "results"
    index = pd.read_parquet(results / "demo" / "index_text")
    held = set(index.loc[index["heldout"], "__key__"])
    assert held
    for subset in ("random", "no_text", "text_only", "filter_fix", "filter_random"):
        keys = set(pd.read_parquet(results / "demo" / "subsets" / subset / "keys.parquet")["__key__"])
        assert not keys & held, subset
        assert json.loads((results / "demo" / "subsets" / subset / "stats.json").read_text())["n_heldout"] > 0
    pairs = pd.read_parquet(results / "demo" / "heldout" / "pairs.parquet")
    assert set(pairs["__key__"]) <= held and set(pairs["group"]) == {"with text", "no text"}
    fig9 = pd.read_csv(results / "fig9_heldout_scores.csv")
    models = {f"{s} tiny-rn" for t in ("table3",) for s in tiny_config()["curate"]["tables"][t]}
    assert models <= set(fig9["model"]) and fig9["mean S"].between(-1, 1).all()
    assert (fig9.groupby("model")["group"].count() == 3).all()
    assert (results / "figures" / "fig9_heldout_scores.png").stat().st_size > 5000


def test_a_second_study_datasets_curation_table_trains_on_its_own_pool(tmp_path):
    """Planned only (no run): Table 3 of demo_mix selects from and trains on demo_mix; the old
    `study_dataset` key still names the study pool."""
    cfg = tiny_config()
    cfg["study_tables"] = {"demo_mix": ["table2", "table3"]}
    cfg["curate"]["dataset_sizes"] = {"demo_mix": {"table3": 4}}
    write_config(tmp_path, cfg)
    out = snakemake(tmp_path, "-n", "results/demo_mix/table3.csv", "results/table3_all.csv").stdout
    assert set(re.findall(r"results/models/(\w+)/text_only/", out)) == {"demo", "demo_mix"}
    assert "results/demo_mix/subsets/no_text/keys.parquet" in out
    cfg = tiny_config()
    for key in ("study_datasets", "study_tables"):
        cfg.pop(key)
    cfg["study_dataset"] = "demo_mix"
    write_config(tmp_path, cfg)
    out = snakemake(tmp_path, "-n", "results/table3.csv").stdout
    assert "results/demo_mix/table3.csv" in out and "results/models/demo/" not in out


def readme_plan_commands() -> list[list[str]]:
    """The snakemake arguments of the README's `snakemake ... | dot -Tsvg > X.svg` lines."""
    from workflow import ROOT

    lines = re.findall(r"^snakemake (.*?) \| dot -Tsvg > \S+\.svg", (ROOT / "README.md").read_text(), re.M)
    return [line.split() for line in lines]


def test_readme_shows_every_plan_picture():
    """Each graph once, typed as the design card does (`snakemake -n --dag | dot -Tsvg > dag.svg`)."""
    commands = readme_plan_commands()
    assert sorted(a for args in commands for a in args if a != "-n") == ["--dag", "--filegraph", "--rulegraph"]
    assert ["-n", "--dag"] in commands


@pytest.mark.parametrize("args", readme_plan_commands(), ids=lambda a: " ".join(a))
def test_plan_pictures_are_valid_dot(tiny_run, args, tmp_path):
    """The README's plan pictures, as typed there: stdout is dot (nothing else) that graphviz renders."""
    import shutil
    import subprocess

    dot = snakemake(tiny_run, *args).stdout
    assert dot.startswith("digraph"), dot[:200]
    assert "table1" in dot or "curation_table" in dot
    if shutil.which("dot"):
        svg = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True, check=True).stdout
        assert "<svg" in svg


def test_editing_a_stage_module_reruns_that_stage(tiny_run, tmp_path):
    """A copy of the workflow whose match module differs by one comment plans match onwards."""
    from workflow import plan_after_editing

    proc = plan_after_editing(tmp_path, "match", tiny_run, "results/table1.csv", "results/table2.csv", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = proc.stdout.split("Job stats:", 1)[1]
    assert "match" in stats and "table1" in stats
    assert "spot " not in stats and "ingest" not in stats and "train" not in stats


def test_report_gathers_tables_and_figures(tiny_run):
    """`snakemake --report` builds one self-contained HTML file with the captions and results."""
    snakemake(tiny_run, "--report", "report.html", *REPORTED)
    html = (tiny_run / "report.html").read_text()
    assert len(html) > 100_000
    for text in ("Fig. 3a", "Fig. 1", "Fig. 4a", "Table 1", "fig3a_cluster_text_share.png", "table1.html",
                 "cluster_profile.html", "ground truth"):
        assert text in html, text
    assert "src=\"http" not in html  # self-contained: nothing fetched when opened



def test_truncated_and_missing_shards_are_recorded_through_table1(tmp_path):
    """A dataset as a real download leaves it (one shard cut mid-sample, one never arrived) runs to
    Table 1 in the default `record` mode: the whole samples count, the damage is listed."""
    good = image_bytes(size=(96, 64))
    sample = lambda k: [(f"{k}.jpg", good), (f"{k}.txt", f"sample {k}".encode())]  # noqa: E731
    write_tar(tmp_path / "broken-000.tar", sample("a") + sample("b"))
    cut = Path(write_tar(tmp_path / "broken-001.tar", sample("c") + sample("d") + sample("e")))
    with tarfile.open(cut) as tar:
        at = tar.getmember("e.jpg").offset_data + 100
    cut.write_bytes(cut.read_bytes()[:at])  # inside e.jpg: c and d are whole, e is cut mid-way
    clean = write_tar(tmp_path / "clean-000.tar", sample("z"))
    # shards_per_part 2: p00000 holds the good and the cut shard, p00001 only the missing one
    cfg = tiny_config({"broken": {"shards": str(tmp_path / "broken-{000..002}.tar"), "shards_per_part": 2},
                       "clean": {"shards": clean, "shards_per_part": 1}})
    write_config(tmp_path, cfg)
    snakemake(tmp_path, "-c", "2", "results/table1.csv")

    table = pd.read_csv(tmp_path / "results" / "table1.csv", index_col=0)
    for col in table.columns:
        t = table[col]
        assert t["Samples in"] == t["Samples processed"] + t["Samples skipped"]
    broken, clean_col = table["broken (spotted)"], table["clean (spotted)"]
    assert (broken["Samples in"], broken["Samples skipped"], broken["Skipped: truncated_shard"]) == (5, 1, 1)
    assert (broken["Shards truncated"], broken["Shards missing"]) == (1, 1)
    assert (clean_col["Shards truncated"], clean_col["Shards missing"]) == (0, 0)
    parts = json.loads((tmp_path / "results" / "broken" / "parts.json").read_text())
    assert parts["shards_truncated"] == [str(cut)]
    assert parts["shards_missing"] == [str(tmp_path / "broken-002.tar")]
    assert parts["parts"]["p00001"]["samples_in"] == 0
    match = pd.read_parquet(tmp_path / "results" / "broken" / "match" / "p00000.parquet")
    assert match.set_index("__key__").loc["e", "error"] == "truncated_shard"
    assert "broken-001.tar" in (tmp_path / "logs" / "ingest" / "broken" / "p00000.log").read_text()
    assert planned_jobs(tmp_path, "results/table1.csv") == {}  # the missing shard is no pending input
    write_tar(tmp_path / "broken-002.tar", sample("f"))  # it arrives: its part is ingested again
    assert planned_jobs(tmp_path, "results/table1.csv").get("ingest") == 1
