"""Curation: criteria pick exactly the matching status-ok rows and sampling is reproducible
(materialising the chosen samples: tests/test_materialise.py)."""

import json
import math
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from parrotscope.curate import (
    PAPER_SUBSETS,
    PAPER_TABLES,
    CriterionError,
    CurateError,
    SubsetTooSmall,
    check_curate,
    needs_scores,
    run_select,
    select_subset,
)
from parrotscope.io import read_json, read_parquet, write_parquet

NAN = float("nan")
COTRS = (0.0, 0.25, 0.3, 0.5, 0.8, 1.0)
RSAS = (-0.2, -0.01, 0.0, 0.1, 0.15, 0.2, 0.35)
RSCS = (-0.05, 0.0, 0.1, 0.25, 0.3)


def make_index(n_no_text=18, n_text=36, n_bad=6) -> pd.DataFrame:
    """A parrot index with known values. Text rows cycle through boundary values of every
    criterion; RSC is undefined without a co-embedded word (CoTR 0), RSA/RSC without text.
    Rows that are not status-ok carry values that would match every criterion, so a criterion
    that forgets eligibility picks them."""
    rows = []
    for i in range(n_no_text):
        rows.append(dict(has_text=False, cotr=0.0, rsa=NAN, rsc=NAN, s_raw=0.30))
    for i in range(n_text):
        cotr = COTRS[i % len(COTRS)]
        rows.append(dict(has_text=True, cotr=cotr, rsa=RSAS[i % len(RSAS)],
                         rsc=NAN if cotr == 0.0 else RSCS[i % len(RSCS)], s_raw=0.32 + 0.001 * i))
    for i in range(n_bad):
        rows.append(dict(status="skipped", has_text=True if i % 2 else False, cotr=1.0, rsa=0.5, rsc=0.5,
                         s_raw=NAN))
    out = []
    for i, r in enumerate(rows):
        out.append({
            "__key__": f"k{(i * 37) % len(rows):03d}",  # keys not in row order
            "part": f"p{i % 2:05d}",
            "shard": ("a.tar", "b.tar")[i % 2],
            "status": r.get("status", "ok"),
            "has_text": r["has_text"],
            "is_parrot": r["cotr"] > 0,
            "cotr": r["cotr"],
            "ref.s_raw": r["s_raw"],
            "ref.rsa": r["rsa"],
            "ref.rsc": r["rsc"],
        })
    index = pd.DataFrame(out)
    index["has_text"] = index["has_text"].astype(object)  # as in the real index, where NaN is possible
    return index


def on_disk(index: pd.DataFrame) -> list[str]:
    """The index as the workflow stores it, one parquet file per part (selection reads files)."""
    root = Path(tempfile.mkdtemp(prefix="index-"))
    paths = []
    for part, frame in index.groupby("part", sort=True):
        path = root / f"{part}.parquet"
        write_parquet(frame, path)
        paths.append(str(path))
    return paths


def _defined(x):
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def _text(r):
    return r["status"] == "ok" and r["has_text"] is True


# An independent, row-by-row statement of each paper criterion.
EXPECTED = {
    "random": lambda r: r["status"] == "ok",
    "no_text": lambda r: r["status"] == "ok" and r["has_text"] is False,
    "text_only": _text,
    "cotr_eq_0.0": lambda r: _text(r) and r["cotr"] == 0.0,
    "cotr_ge_0.3": lambda r: _text(r) and r["cotr"] >= 0.3,
    "cotr_ge_0.5": lambda r: _text(r) and r["cotr"] >= 0.5,
    "cotr_ge_0.8": lambda r: _text(r) and r["cotr"] >= 0.8,
    "cotr_eq_1.0": lambda r: _text(r) and r["cotr"] == 1.0,
    **{f"{m}_lt_0.0": (lambda m: lambda r: _text(r) and _defined(r[f"ref.{m}"]) and r[f"ref.{m}"] < 0)(m)
       for m in ("rsa", "rsc")},
    **{f"{m}_ge_{t}": (lambda m, t: lambda r: _text(r) and _defined(r[f"ref.{m}"]) and r[f"ref.{m}"] >= t)(m, t)
       for m in ("rsa", "rsc") for t in (0.0, 0.1, 0.2, 0.3)},
}


def expected_keys(index, name):
    return {r["__key__"] for r in index.to_dict("records") if EXPECTED[name](r)}


def test_paper_subsets_and_tables_are_the_papers_curations():
    assert set(PAPER_SUBSETS) == set(EXPECTED)
    listed = [s for names in PAPER_TABLES.values() for s in names]
    assert sorted(listed) == sorted(PAPER_SUBSETS) and len(listed) == len(set(listed))
    assert PAPER_TABLES["table3"] == ["random", "no_text", "text_only"]
    assert PAPER_SUBSETS["cotr_ge_0.5"] == [["has_text", "==", True], ["cotr", ">=", 0.5]]
    assert PAPER_SUBSETS["rsc_lt_0.0"] == [["has_text", "==", True], ["{scorer}.rsc", "<", 0.0]]


@pytest.mark.parametrize("name", list(PAPER_SUBSETS))
def test_paper_criterion_picks_exactly_the_matching_ok_rows(name):
    index = make_index()
    expected = expected_keys(index, name)
    assert 0 < len(expected) < (index["status"] == "ok").sum() or name == "random"
    whole = select_subset(on_disk(index), PAPER_SUBSETS[name], len(expected), seed=0, scorer="ref", name=name)
    assert set(whole.keys["__key__"]) == expected
    assert whole.stats["n_eligible"] == len(expected)
    part = select_subset(on_disk(index), PAPER_SUBSETS[name], max(1, len(expected) // 2), seed=3, scorer="ref", name=name)
    assert set(part.keys["__key__"]) <= expected
    assert list(part.keys.columns) == ["__key__", "part", "shard"]
    assert part.keys["__key__"].is_monotonic_increasing


def test_not_ok_rows_are_never_chosen():
    index = make_index()
    n_ok = int((index["status"] == "ok").sum())
    chosen = select_subset(on_disk(index), [], n_ok, seed=0, scorer="ref").keys
    bad = set(index.loc[index["status"] != "ok", "__key__"])
    assert len(chosen) == n_ok and not bad & set(chosen["__key__"])
    with pytest.raises(SubsetTooSmall):
        select_subset(on_disk(index), [], n_ok + 1, seed=0, scorer="ref")


def test_undefined_values_never_match_even_not_equal():
    index = make_index()
    chosen = select_subset(on_disk(index), [["ref.rsa", "!=", 0.0]], 10, seed=0, scorer="ref", name="x")
    assert chosen.stats["n_eligible"] == sum(
        1 for r in index.to_dict("records") if r["status"] == "ok" and _defined(r["ref.rsa"]) and r["ref.rsa"] != 0)


def test_selection_is_seeded_and_independent_of_row_order():
    index = make_index()
    a = select_subset(on_disk(index), [], 12, seed=7, scorer="ref").keys
    shuffled = index.sample(frac=1.0, random_state=1).reset_index(drop=True)
    b = select_subset(on_disk(shuffled), [], 12, seed=7, scorer="ref").keys
    pd.testing.assert_frame_equal(a, b)
    c = select_subset(on_disk(index), [], 12, seed=8, scorer="ref").keys
    assert set(c["__key__"]) != set(a["__key__"])
    # A smaller subset with the same criterion and seed lies inside the larger one.
    small = select_subset(on_disk(index), [], 5, seed=7, scorer="ref").keys
    assert set(small["__key__"]) <= set(a["__key__"])


def test_too_small_message_names_criterion_count_size_and_key():
    index = make_index()
    n = len(expected_keys(index, "cotr_eq_1.0"))
    with pytest.raises(SubsetTooSmall) as err:
        select_subset(on_disk(index), PAPER_SUBSETS["cotr_eq_1.0"], 1000, seed=0, scorer="ref", name="cotr_eq_1.0")
    msg = str(err.value)
    for part in ("cotr_eq_1.0", "cotr == 1.0", f"{n} status-ok", "1000", "curate.size"):
        assert part in msg


def test_stats_are_means_of_the_chosen_samples():
    index = make_index()
    sel = select_subset(on_disk(index), PAPER_SUBSETS["text_only"], 10, seed=0, scorer="ref", name="text_only")
    chosen = index.set_index("__key__").loc[sel.keys["__key__"]]
    assert sel.stats["mean_s_raw"] == pytest.approx(chosen["ref.s_raw"].mean())
    assert sel.stats["mean_cotr"] == pytest.approx(chosen["cotr"].mean())
    assert sel.stats["share_has_text"] == 1.0
    assert sel.stats["mean_rsa"] == pytest.approx(chosen["ref.rsa"].mean())
    assert sel.stats["conditions"] == [["has_text", "==", True]] and sel.stats["scorer"] == "ref"


@pytest.mark.parametrize("conditions, message", [
    ([["has_text", "==", "false"]], "holds boolean values"),
    ([["cotr", ">=", True]], "needs a number"),
    ([["cotr", "=>", 0.3]], "unknown operator"),
    ([["rsa", ">=", 0.3]], "columns with that measure: ['ref.rsa']"),
    ([["cotr", ">="]], "expected [column, op, value]"),
])
def test_malformed_conditions_are_errors(conditions, message):
    with pytest.raises(CriterionError) as err:
        select_subset(on_disk(make_index()), conditions, 1, seed=0, scorer="ref", name="bad")
    assert message in str(err.value)


def test_scorer_placeholder_needs_a_scorer():
    with pytest.raises(CriterionError, match="curate.scorer"):
        select_subset(on_disk(make_index()), PAPER_SUBSETS["rsa_ge_0.1"], 1, seed=0, scorer=None)


def test_run_select_writes_keys_and_stats(tmp_path):
    index_path = tmp_path / "index.parquet"
    index = make_index()
    index["caption"] = "unused"
    write_parquet(index, index_path)
    stats = run_select([str(index_path)], str(tmp_path / "s/keys.parquet"), str(tmp_path / "s/stats.json"),
                       "rsc_ge_0.1", PAPER_SUBSETS["rsc_ge_0.1"], 4, 0, "ref")
    keys = read_parquet(tmp_path / "s/keys.parquet")
    assert len(keys) == 4 and set(keys["__key__"]) <= expected_keys(index, "rsc_ge_0.1")
    assert read_json(tmp_path / "s/stats.json") == json.loads(json.dumps(stats))


def test_check_curate_accepts_the_paper_config_and_names_mistakes():
    config = {"score": {"scorers": {"ref": {}}}, "datasets": {"demo": {}, "demo_mix": {}},
              "curate": {"size": 10, "table_datasets": {"table4": "demo_mix"}, "n_shards": 2, "seed": 0, "scorer": None,
                         "subsets": PAPER_SUBSETS, "tables": PAPER_TABLES}}
    check_curate(config)
    for change, message in [
        ({"tables": {"table4": ["cotr_eq_2.0"]}}, "curate.tables.table4"),
        ({"subsets": {"pool": []}, "tables": {}}, "curate.subsets.pool"),
        ({"scorer": "openai"}, "curate.scorer"),
        ({"n_shards": 11}, "curate.n_shards"),
        ({"table_datasets": {"table9": "demo"}}, "curate.table_datasets.table9"),
        ({"table_datasets": {"table4": "laion"}}, "'laion' is not one of datasets"),
    ]:
        with pytest.raises(CurateError) as err:
            check_curate({**config, "curate": {**config["curate"], **change}})
        assert message in str(err.value)


def test_subset_size_follows_its_table():
    from parrotscope.curate import subset_size

    cfg = {"curate": {"size": 60, "table_sizes": {"table3": 1000},
                      "tables": {"table3": ["random", "no_text"], "table5": ["rsa_ge_0.3"]}}}
    assert subset_size(cfg, "no_text") == 1000
    assert subset_size(cfg, "rsa_ge_0.3") == 60
    assert subset_size(cfg, "not_in_a_table") == 60
    # Per dataset: one number for all its subsets, or per table (else the table's or the global size).
    cfg["curate"]["dataset_sizes"] = {"cc12m": {"table5": 7}, "mmc4": 9}
    assert [subset_size(cfg, s, "cc12m") for s in ("no_text", "rsa_ge_0.3", "x")] == [1000, 7, 60]
    assert [subset_size(cfg, s, "mmc4") for s in ("no_text", "rsa_ge_0.3", "x")] == [9, 9, 9]
    assert subset_size(cfg, "rsa_ge_0.3", "laion") == 60


def test_only_score_criteria_need_the_scored_index():
    scorers = ["ref", "openai"]
    for name in PAPER_TABLES["table3"] + PAPER_TABLES["table4"]:
        assert not needs_scores(PAPER_SUBSETS[name], scorers), name
    for name in PAPER_TABLES["table5"] + PAPER_TABLES["table6"]:
        assert needs_scores(PAPER_SUBSETS[name], scorers), name
    assert needs_scores([["openai.s_raw", ">", 0.3]], scorers)
    assert not needs_scores([["reference_text", "==", True]], scorers)
