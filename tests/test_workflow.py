"""The DAG end to end on a tiny config: demo data and a user dataset with bad inputs, to Table 1."""

import json

import pandas as pd
import pytest

from conftest import image_bytes, write_tar
from workflow import snakemake, tiny_config, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("wf")
    cfg = tiny_config()
    good = image_bytes(size=(96, 64))
    bad_shard = write_tar(work / "mine-000.tar", [
        ("a.jpg", good), ("a.txt", b"a red square"),
        ("b.jpg", b"garbage"), ("b.txt", b"broken image"),
        ("c.jpg", good),  # no caption
        ("d.jpg", good), ("d.txt", b"\xff\xfe bad utf-8"),
    ])
    cfg["datasets"]["mine"] = {"shards": bad_shard, "shards_per_part": 1}
    write_config(work, cfg)
    snakemake(work, "-c", "2", "results/table1.csv")
    return work


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
    out = snakemake(tiny_run, "-n", "results/table1.csv").stdout
    assert "Nothing to be done" in out or "nothing to be done" in out.lower()


def test_rulegraph_is_valid_dot(tiny_run):
    out = snakemake(tiny_run, "--rulegraph", "results/table1.csv").stdout
    assert out.lstrip().startswith("digraph") and "spot" in out and "table1" in out
