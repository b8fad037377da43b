"""The tables from fixed inputs: Table 1's statistics and sample accounting, Table 2, the curation
tables, Table 10 and the filters table."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from parrotscope.db import connect
from parrotscope.io import write_parquet
from parrotscope.tables import (build_curation_table, build_filters_table, build_table1, build_table10, dataset_columns,
                                format_table1, run_curation_table, run_filters_table, table1_stats)


def match_frame():
    # 5 samples: 2 without text, 2 with text (one parroted), 1 skipped at ingest, 1 OCR error.
    return pd.DataFrame({
        "__key__": ["a", "b", "c", "d", "e", "f"],
        "status": ["ok", "ok", "ok", "ok", "skipped", "error"],
        "error": ["", "", "", "", "corrupt_image", "boom"],
        "has_text": [False, False, True, True, None, None],
        "is_parrot": [False, False, True, False, None, None],
        "cotr": [0.0, 0.0, 0.5, 0.0, None, None],
        "cotr_fuzzy": [0.0, 0.0, 1.0, 0.25, None, None],
        "gt_has_text": [False, True, True, True, None, None],
        "gt_is_parrot": [False, False, True, True, None, None],
        "gt_cotr": [0.0, 0.0, 1.0, 0.5, None, None],
        "gt_cotr_fuzzy": [0.0, 0.0, 1.0, 0.5, None, None],
    })


COUNTS = {"samples_in": 7, "ok": 5, "skipped": 2,
          "skipped_by_reason": {"corrupt_image": 1, "duplicate_key": 1},
          "parts": {"p00000": {"duplicates": [{"__key__": "a", "shard": "s"}]}}}


def parts(frame: pd.DataFrame, tmp_path, name="match") -> list[str]:
    """The frame as the workflow stores it: per-part parquet files (here two, split by row)."""
    paths = []
    for i, rows in enumerate((frame.iloc[: len(frame) // 2], frame.iloc[len(frame) // 2:])):
        path = tmp_path / f"{name}-p{i:05d}.parquet"
        write_parquet(rows, path)
        paths.append(str(path))
    return paths


def table1_of(frame, counts, tmp_path, name="demo"):
    return build_table1(dataset_columns(connect(), name, parts(frame, tmp_path), counts))


def test_table1_stats_hand_worked(tmp_path):
    paths = parts(match_frame(), tmp_path)
    s = table1_stats(connect(), paths)
    assert s["Num. of Total Img."] == 4
    assert s["Num. of Img. w/ Emb. Text"] == 2
    assert s["Img. w/ Emb. Text Rate"] == pytest.approx(0.5)
    assert s["Num. of Img. w/ Co-Emb. Text"] == 1
    assert s["Co-Emb. Text Rate (in Total)"] == pytest.approx(0.5 / 4)
    assert s["Co-Emb. Text Rate (in Img. w/ Emb. Text)"] == pytest.approx(0.25)
    assert s["Fuzzy Co-Emb. Text Rate (in Img. w/ Emb. Text)"] == pytest.approx(0.625)
    gt = table1_stats(connect(), paths, "gt_")
    assert gt["Num. of Img. w/ Emb. Text"] == 3 and gt["Co-Emb. Text Rate (in Img. w/ Emb. Text)"] == pytest.approx(0.5)


def test_build_table1_columns_and_accounting(tmp_path):
    t = table1_of(match_frame(), COUNTS, tmp_path)
    assert list(t.columns) == ["demo (spotted)", "demo (ground truth)"]
    col = t["demo (spotted)"]
    assert col["Samples in"] == 7 and col["Samples processed"] == 4 and col["Samples skipped"] == 3
    assert col["Skipped: spot_error"] == 1 and col["Skipped: duplicate_key"] == 1
    out = format_table1(t, 3)
    assert out.loc["Co-Emb. Text Rate (in Total)", "demo (spotted)"] == 0.125
    assert out.loc["Samples in", "demo (ground truth)"] == 7


def test_accounting_that_does_not_reconcile_is_an_error(tmp_path):
    bad = dict(COUNTS, samples_in=9)
    with pytest.raises(ValueError, match="reconcile"):
        table1_of(match_frame(), bad, tmp_path)


def test_shard_rows_only_where_a_dataset_has_damaged_shards(tmp_path):
    clean = table1_of(match_frame(), COUNTS, tmp_path)
    assert not [r for r in clean.index if r.startswith("Shards ")]
    # counts written with the keys but nothing damaged: the same rows as before the keys existed
    empty = dict(COUNTS, shards_truncated=[], shards_missing=[])
    assert table1_of(match_frame(), empty, tmp_path).equals(clean)
    damaged = dict(COUNTS, shards_truncated=["s1.tar", "s2.tar"], shards_missing=[])
    con, paths = connect(), parts(match_frame(), tmp_path)
    t = format_table1(build_table1({**dataset_columns(con, "demo", paths, COUNTS),
                                    **dataset_columns(con, "mine", paths, damaged)}), 3)
    assert t.loc["Shards truncated"].tolist() == [0, 0, 2, 2] and "Shards missing" not in t.index


def test_no_ground_truth_column_for_data_without_truth(tmp_path):
    m = match_frame().drop(columns=[c for c in match_frame().columns if c.startswith("gt_")])
    assert list(table1_of(m, COUNTS, tmp_path, "laion").columns) == ["laion (spotted)"]


def test_table2_rows_from_a_fixed_index(tmp_path):
    from parrotscope.tables import build_table2, plot_relative_scores

    index = pd.DataFrame({
        "__key__": list("abcde"),
        "status": ["ok", "ok", "ok", "ok", "skipped"],
        "has_text": [False, True, True, True, None],
        "is_parrot": [False, True, False, True, None],
        "ref.s_raw": [0.30, 0.40, 0.36, 0.50, None],
        "ref.s_all": [None, 0.20, 0.30, 0.30, None],
        "ref.s_co": [None, 0.25, None, 0.35, None],
        "ref.s_rand_all": [None, 0.39, 0.35, 0.49, None],
        "ref.s_rand_co": [None, 0.40, None, 0.50, None],
    })
    paths = parts(index, tmp_path, "index")
    t = build_table2(connect(), paths, ["ref"])
    assert t.loc["Raw w/o Emb. Text", "ref mean"] == pytest.approx(0.30)
    assert t.loc["Raw w/ Emb. Text", "ref mean"] == pytest.approx(0.42)
    assert t.loc["Raw w/ Emb. Text", "ref n"] == 3
    assert t.loc["All-Emb. Text Removal", "ref mean"] == pytest.approx(0.80 / 3)
    assert t.loc["Co-Emb. Text Removal", "ref mean"] == pytest.approx(0.30)
    assert t.loc["Co-Emb. Text Removal", "ref std (per image)"] == pytest.approx(0.05)
    assert t.loc["Raw w/ Co-Emb. Text", "ref mean"] == pytest.approx(0.45)
    assert t.loc["Random Co-Emb. Text Removal", "ref n"] == 2
    out = tmp_path / "fig.png"
    plot_relative_scores(connect(), paths, ["ref"], str(out))
    assert out.stat().st_size > 5000 and out.read_bytes()[:4] == b"\x89PNG"


def test_table2_spread_of_cluster_means(tmp_path):
    from parrotscope.tables import build_table2

    index = pd.DataFrame({
        "__key__": list("abcdef"), "status": ["ok"] * 6, "has_text": [True] * 6, "is_parrot": [True] * 6,
        "ref.s_raw": [0.2, 0.4, 0.5, 0.7, 0.9, None],
        **{f"ref.{c}": [None] * 6 for c in ("s_all", "s_co", "s_rand_all", "s_rand_co")},
    })
    assign = pd.DataFrame({"__key__": list("fedcba"), "cluster": [2, 2, 1, 1, 0, 0]})
    t = build_table2(connect(), parts(index, tmp_path, "index"), ["ref"], parts(assign, tmp_path, "assign"))
    # cluster means 0.3, 0.6, 0.9 (cluster 2 has one defined score): population std sqrt(0.06)
    assert t.loc["Raw w/ Emb. Text", "ref std (cluster means)"] == pytest.approx(0.06 ** 0.5)
    assert list(t.columns) == ["ref mean", "ref std (per image)", "ref std (cluster means)", "ref n"]
    assert math.isnan(t.loc["Raw w/o Emb. Text", "ref std (cluster means)"])


def _eval(imagenet, retrieval, average):
    return {"groups": {"ImageNet": {"value": imagenet}, "Retrieval": {"value": retrieval},
                       "Average": {"value": average}}}


def _sync(mean, std, gap, acc):
    return {"sync_score_mean": mean, "sync_score_std": std, "sync_gap_mean": gap, "word_accuracy": acc}


def json_files(folder: Path, **kinds: list) -> dict[str, list[str]]:
    """Each kind's items written as ``{kind}{i}.json`` under ``folder``: their paths, by kind."""
    paths = {}
    for kind, items in kinds.items():
        paths[kind] = [str(folder / f"{kind}{i}.json") for i in range(len(items))]
        for path, item in zip(paths[kind], items):
            Path(path).write_text(json.dumps(item))
    return paths


def test_curation_table_from_fixed_evaluation_files(tmp_path):
    subsets, archs = ["no_text", "text_only"], ["tiny-rn", "tiny-vit"]
    evals = [_eval(0.8, 0.5, 0.65), _eval(0.7, 0.4, 0.55), _eval(0.3, 0.2, 0.25), _eval(None, 0.1, 0.1)]
    syncs = [_sync(0.2, 0.1, 0.01, 0.05), _sync(0.3, 0.1, 0.02, 0.06),
             _sync(0.6, 0.2, 0.3, 0.45), _sync(0.5, 0.2, 0.2, 0.4)]
    stats = [{"n_selected": 100, "n_eligible": 900, "mean_s_raw": None},
             {"n_selected": 100, "n_eligible": 400, "mean_s_raw": None}]
    paths = json_files(tmp_path, eval=evals, sync=syncs, stats=stats)
    # no_text's 4 keys: 3 also in text_only's subset (a key in no other row is ignored).
    keys = [tmp_path / "no_text.parquet", tmp_path / "text_only.parquet"]
    pd.DataFrame({"__key__": ["a", "b", "c", "d"]}).to_parquet(keys[0])
    pd.DataFrame({"__key__": ["d", "c", "b", "x"]}).to_parquet(keys[1])
    out = tmp_path / "table.csv"
    run_curation_table(subsets, archs, paths["eval"], paths["sync"], paths["stats"], [str(k) for k in keys],
                       str(out), 3)
    table = pd.read_csv(out, index_col="subset")
    assert table.loc["no_text", "shared with next"] == 0.75 and math.isnan(table.loc["text_only", "shared with next"])
    assert list(table.columns[:3]) == ["samples", "eligible", "shared with next"]
    assert list(table.index) == subsets
    assert "Avg. S(raw)" not in table.columns  # no subset read a score
    assert table.loc["no_text", "tiny-rn IN"] == 0.8
    assert table.loc["no_text", "tiny-vit Ret."] == 0.4
    assert table.loc["text_only", "tiny-rn word acc."] == 0.45
    assert table.loc["text_only", "tiny-vit sync gap"] == 0.2
    assert math.isnan(table.loc["text_only", "tiny-vit IN"])
    assert table.loc["text_only", "eligible"] == 400


def test_curation_table_keeps_mean_score_when_subsets_read_scores():
    stats = [{"n_selected": 5, "n_eligible": 9, "mean_s_raw": 0.31}]
    table = build_curation_table(["rsa_ge_0.3"], ["tiny-rn"], [_eval(0.1, 0.1, 0.1)],
                                 [_sync(0.1, 0.1, 0.1, 0.1)], stats)
    assert table.loc["rsa_ge_0.3", "Avg. S(raw)"] == 0.31


def test_curation_table_over_seeds_has_each_measure_beside_its_spread():
    """Evaluations subset-major, then arch, then seed: two seeds give means and sample stds."""
    stats = [{"n_selected": 5, "n_eligible": 9}, {"n_selected": 5, "n_eligible": 7}]
    evals = [_eval(0.2, 0.1, 0.15), _eval(0.4, 0.3, 0.35),    # random, seeds 0 and 1
             _eval(0.5, 0.1, 0.3), _eval(0.5, float("nan"), 0.3)]  # text_only: Ret. undefined in seed 1
    syncs = [_sync(0.1, 0.01, 0.0, 0.1), _sync(0.3, 0.01, 0.2, 0.3),
             _sync(0.2, 0.01, 0.1, 0.5), _sync(0.2, 0.01, 0.1, 0.5)]
    table = build_curation_table(["random", "text_only"], ["tiny-rn"], evals, syncs, stats, n_seeds=2)
    columns = list(table.columns)
    assert columns[columns.index("tiny-rn IN") + 1] == "tiny-rn IN seed std"
    assert table.loc["random", "tiny-rn IN"] == pytest.approx(0.3)
    assert table.loc["random", "tiny-rn IN seed std"] == pytest.approx(0.1414, abs=1e-4)
    assert table.loc["text_only", "tiny-rn IN seed std"] == 0.0
    assert math.isnan(table.loc["text_only", "tiny-rn Ret."])  # not a mean over the seed that had it
    assert table.loc["random", "tiny-rn word acc."] == pytest.approx(0.2)
    assert table.loc["text_only", "eligible"] == 7 and "eligible seed std" not in columns
    assert (table["seeds"] == 2).all()
    one = build_curation_table(["random", "text_only"], ["tiny-rn"], evals[::2], syncs[::2], stats)
    assert "seeds" not in one.columns and not any(c.endswith("seed std") for c in one.columns)


def test_curation_table_writes_each_seeds_rows_beside_the_means(tmp_path):
    """The per-seed file holds each seed's own numbers, subsets in table order, seeds by their value."""
    stats = [{"n_selected": 5, "n_eligible": 9}, {"n_selected": 5, "n_eligible": 7}]
    evals = [_eval(0.2, 0.1, 0.15), _eval(0.4, 0.3, 0.35), _eval(0.5, 0.1, 0.3), _eval(0.7, 0.2, 0.3)]
    syncs = [_sync(0.1, 0.01, 0.0, 0.1)] * 4
    paths = json_files(tmp_path, eval=evals, sync=syncs, stats=stats)
    keys = [str(tmp_path / "random.parquet"), str(tmp_path / "text_only.parquet")]
    pd.DataFrame({"__key__": ["a", "b"]}).to_parquet(keys[0])
    pd.DataFrame({"__key__": ["b", "c"]}).to_parquet(keys[1])
    run_curation_table(["random", "text_only"], ["tiny-rn"], paths["eval"], paths["sync"], paths["stats"], keys,
                       str(tmp_path / "t.csv"), 3, seeds=[3, 7], out_seeds_csv=str(tmp_path / "t_seeds.csv"))
    rows = pd.read_csv(tmp_path / "t_seeds.csv")
    assert rows[["subset", "seed"]].values.tolist() == [["random", 3], ["random", 7], ["text_only", 3], ["text_only", 7]]
    assert rows["tiny-rn IN"].tolist() == [0.2, 0.4, 0.5, 0.7]
    assert rows["shared with next"].iloc[0] == 0.5 and not any(c.endswith("seed std") for c in rows.columns)
    means = pd.read_csv(tmp_path / "t.csv", index_col="subset")
    assert means.loc["text_only", "tiny-rn IN"] == 0.6
    assert means.loc["random", "shared with next"] == 0.5 and (means["seeds"] == 2).all()


# --- Table 10 and the filters table ----------------------------------------------------------------


def _eval_empty_groups(inet, ret):
    """Every DataComp group, ImageNet dist. shifts and VTAB without a value."""
    return {"groups": {"ImageNet": {"value": inet}, "ImageNet dist. shifts": {"value": None},
                       "VTAB": {"value": None}, "Retrieval": {"value": ret}, "Average": {"value": (inet + ret) / 2}}}


def test_table10_has_the_papers_rows_for_each_model():
    table = build_table10([("filter_fix", "tiny-rn"), ("pool", "tiny-rn")], ["tiny-rn"],
                          [_eval_empty_groups(0.5, 0.1), _eval_empty_groups(0.4, 0.2)],
                          [_sync(0.163, 0.0659, 0.01, 0.0), _sync(0.368, 0.0427, 0.2, 0.4)],
                          [1200, 4000], "demo", 3)
    assert list(table.columns) == ["filter_fix", "pool"]
    assert table.loc["Sync. Score ↓", "filter_fix"] == "0.163 ± 0.066"
    assert table.loc["Data", "pool"] == "4000 (demo)"
    assert list(table.index) == ["Data", "Sync. Score ↓", "IN", "Retrieval", "Avg.", "sync gap ↓ (added)",
                                 "word acc. ↓ (added)"]  # groups no model has are left out
    assert table.loc["Avg.", "pool"] == "0.300"


def test_filters_table_adds_the_parrot_shares():
    stats = [{"n_selected": 2, "n_eligible": 2, "mean_s_raw": 0.4,
              "shares": {"share w/ text": 0.0, "share parrot": 0.0, "share parrot (truth)": None}},
             {"n_selected": 2, "n_eligible": 3, "mean_s_raw": 0.43,
              "shares": {"share w/ text": 1.0, "share parrot": 0.5, "share parrot (truth)": None}}]
    table = build_filters_table(["filter_fix", "filter_clip_score"], ["tiny-rn"],
                                [_eval_empty_groups(0.5, 0.1), _eval_empty_groups(0.3, 0.1)],
                                [_sync(0.1, 0.01, 0.0, 0.0), _sync(0.3, 0.02, 0.1, 0.2)], stats)
    assert table["filter"].tolist() == ["fix", "clip_score"]
    assert table.loc["filter_clip_score", "share parrot"] == 0.5
    assert "share parrot (truth)" not in table.columns  # no data has it here
    assert table.loc["filter_fix", "tiny-rn IN"] == 0.5 and table.loc["filter_clip_score", "eligible"] == 3


def test_table10_and_filters_table_over_seeds(tmp_path):
    """Two seeds per model: Table 10 gets a `seed std` row under each measure, the filters table a
    `seed std` column beside each; the selection's own columns stay single."""
    evals = [_eval_empty_groups(0.5, 0.1), _eval_empty_groups(0.7, 0.3),   # filter_fix, seeds 0 and 1
             _eval_empty_groups(0.4, 0.2), _eval_empty_groups(0.4, 0.2)]   # pool
    syncs = [_sync(0.1, 0.05, 0.0, 0.0), _sync(0.3, 0.07, 0.2, 0.5),
             _sync(0.3, 0.04, 0.2, 0.4), _sync(0.3, 0.04, 0.2, 0.4)]
    table = build_table10([("filter_fix", "tiny-rn"), ("pool", "tiny-rn")], ["tiny-rn"], evals, syncs,
                          [1200, 4000], "demo", 3, n_seeds=2)
    assert list(table.index) == ["Data", "Sync. Score ↓", "Sync. Score ↓ seed std", "IN", "IN seed std",
                                 "Retrieval", "Retrieval seed std", "Avg.", "Avg. seed std", "sync gap ↓ (added)",
                                 "sync gap ↓ (added) seed std", "word acc. ↓ (added)", "word acc. ↓ (added) seed std"]
    assert table.loc["Sync. Score ↓", "filter_fix"] == "0.200 ± 0.060"  # seeds' means of mean and word std
    assert table.loc["Sync. Score ↓ seed std", "filter_fix"] == "0.141"
    assert table.loc["IN", "filter_fix"] == "0.600" and table.loc["IN seed std", "pool"] == "0.000"
    stats = [{"n_selected": 2, "n_eligible": 2, "mean_s_raw": 0.4, "shares": {"share parrot": 0.0}},
             {"n_selected": 2, "n_eligible": 3, "mean_s_raw": 0.43, "shares": {"share parrot": 0.5}}]
    filters = build_filters_table(["filter_fix", "filter_clip_score"], ["tiny-rn"], evals, syncs, stats, n_seeds=2)
    assert filters.loc["filter_fix", "tiny-rn IN"] == pytest.approx(0.6)
    assert filters.loc["filter_fix", "tiny-rn IN seed std"] == pytest.approx(0.1414, abs=1e-4)
    assert filters.loc["filter_clip_score", "share parrot"] == 0.5 and "share parrot seed std" not in filters
    paths = json_files(tmp_path, eval=evals, sync=syncs, stats=stats)
    run_filters_table(["filter_fix", "filter_clip_score"], ["tiny-rn"], paths["eval"], paths["sync"], paths["stats"],
                      str(tmp_path / "f.csv"), 3, seeds=[0, 1], out_seeds_csv=str(tmp_path / "f_seeds.csv"))
    rows = pd.read_csv(tmp_path / "f_seeds.csv")
    assert rows[["filter", "subset", "seed"]].values.tolist() == [["fix", "filter_fix", 0], ["fix", "filter_fix", 1],
                                                                 ["clip_score", "filter_clip_score", 0],
                                                                 ["clip_score", "filter_clip_score", 1]]
    assert rows["tiny-rn IN"].tolist() == [0.5, 0.7, 0.4, 0.4] and rows["share parrot"].tolist() == [0, 0, 0.5, 0.5]
    assert pd.read_csv(tmp_path / "f.csv", index_col="subset").equals(filters.round(3))


def test_side_by_side_keeps_each_datasets_rows_in_order_with_the_dataset_first():
    from parrotscope.tables import side_by_side

    laion = pd.DataFrame({"IN": [0.1, 0.2]}, index=pd.Index(["random", "no_text"], name="subset"))
    cc12m = pd.DataFrame({"IN": [0.3], "Ret.": [0.4]}, index=pd.Index(["random"], name="subset"))
    table = side_by_side({"laion": laion, "cc12m": cc12m})
    assert list(table.columns) == ["dataset", "subset", "IN", "Ret."]
    assert table[["dataset", "subset"]].values.tolist() == [["laion", "random"], ["laion", "no_text"], ["cc12m", "random"]]
    assert table["IN"].tolist() == [0.1, 0.2, 0.3] and table["Ret."].isna().tolist() == [True, True, False]
