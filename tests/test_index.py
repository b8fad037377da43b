"""The parrot index joins every stage by key, keeps skipped samples, refuses missing keys."""

import pandas as pd
import pytest

from parrotscope.index import part_index, run_index_part
from parrotscope.io import write_parquet


def tables(keys_order=("b", "a", "c")):
    samples = pd.DataFrame({
        "__key__": ["a", "b", "c"], "shard": ["s.tar"] * 3, "status": ["ok", "ok", "corrupt_image"],
        "error": ["", "", "bad"], "caption": ["sale now", "a red circle", ""],
        "width": [64, 64, 0], "height": [64, 64, 0], "mode": ["RGB"] * 3, "format": ["JPEG"] * 3,
        "n_bytes": [1, 1, 1], "meta": [""] * 3,
    })
    order = list(keys_order)
    spot = pd.DataFrame({
        "__key__": order, "status": [{"a": "ok", "b": "ok", "c": "skipped"}[k] for k in order],
        "error": [{"a": "", "b": "", "c": "corrupt_image"}[k] for k in order],
        "words": [{"a": ["SALE"], "b": [], "c": []}[k] for k in order],
        "n_words": [{"a": 1, "b": 0, "c": 0}[k] for k in order], "n_dropped": [0] * 3,
    })
    match = pd.DataFrame({
        "__key__": ["c", "a", "b"], "status": ["skipped", "ok", "ok"], "error": ["corrupt_image", "", ""],
        "cotr": [None, 0.5, 0.0], "has_text": [None, True, False], "is_parrot": [None, True, False],
    })
    score = pd.DataFrame({
        "__key__": ["a", "c", "b"], "status": ["ok", "corrupt_image", "ok"],
        "s_raw": [0.4, None, 0.3], "s_all": [0.2, None, None], "rsa": [0.2, None, None],
    })
    return samples, spot, match, score


def test_part_index_joins_by_key_not_row_order():
    samples, spot, match, score = tables()
    idx = part_index(samples, spot, match, {"ref": score}).set_index("__key__")
    assert idx.loc["a", "cotr"] == 0.5 and idx.loc["a", "ref.s_raw"] == 0.4 and idx.loc["a", "ref.rsa"] == 0.2
    assert idx.loc["b", "ref.s_raw"] == 0.3 and pd.isna(idx.loc["b", "ref.s_all"])
    assert idx.loc["c", "status"] == "skipped" and idx.loc["c", "ingest_status"] == "corrupt_image"
    assert idx.loc["c", "caption"] == "" and pd.isna(idx.loc["c", "ref.s_raw"])
    assert len(idx) == 3


def test_part_index_refuses_a_stage_missing_keys():
    samples, spot, match, score = tables()
    with pytest.raises(ValueError, match="score ref"):
        part_index(samples, spot, match, {"ref": score[score["__key__"] != "b"]})


def test_index_part_file_has_its_part_and_every_key(tmp_path):
    samples, spot, match, score = tables()
    paths = {}
    for name, df in {"samples": samples, "spot": spot, "match": match, "score": score}.items():
        paths[name] = str(tmp_path / f"{name}.parquet")
        write_parquet(df, paths[name])
    out = tmp_path / "index" / "p00003.parquet"
    n = run_index_part("p00003", paths["samples"], paths["spot"], paths["match"], {"ref": paths["score"]}, str(out))
    idx = pd.read_parquet(out)
    assert n == 3 and list(idx.columns[:2]) == ["__key__", "part"] and set(idx["part"]) == {"p00003"}
    assert sorted(idx["__key__"]) == ["a", "b", "c"] and idx.set_index("__key__").loc["a", "ref.rsa"] == 0.2


def test_a_key_in_two_parts_is_refused_when_selected(tmp_path):
    from parrotscope.curate import CurateError, select_subset

    samples, spot, match, score = tables()
    paths = []
    for part in ("p00000", "p00001"):
        frame = part_index(samples, spot, match, {"ref": score})
        frame.insert(1, "part", part)
        paths.append(str(tmp_path / f"{part}.parquet"))
        write_parquet(frame, paths[-1])
    with pytest.raises(CurateError, match="several parts"):
        select_subset(paths, [], 4, seed=0, scorer="ref")
