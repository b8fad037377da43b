"""The held-out split (index flag, left out of every subset) and Fig. 9's pairs, scores and figure."""

import io
import json

import numpy as np
import pandas as pd
import pytest
import webdataset as wds

from conftest import image_bytes, write_tar
from parrotscope.curate import select_subset
from parrotscope.heldout import (GROUPS, HeldoutError, extract_pairs, fig9_table, group_means, run_fig9, score_model,
                                 select_pairs)
from parrotscope.inpainted import encode_png
from parrotscope.io import KEY, write_parquet
from parrotscope.keyhash import heldout_flags
from parrotscope.score import clip_scores


def test_the_split_depends_on_the_key_and_seed_alone():
    keys = np.array([f"{i:09d}" for i in range(20000)], dtype=object)
    flags = heldout_flags(keys, 0.05, 3)
    assert abs(flags.mean() - 0.05) < 0.01
    order = np.random.default_rng(0).permutation(len(keys))
    assert (heldout_flags(keys[order], 0.05, 3) == flags[order]).all()
    assert (heldout_flags(keys, 0.05, 4) != flags).any()
    assert not heldout_flags(keys, 0.0, 3).any()
    # A larger fraction holds out a superset: the split grows, it does not reshuffle.
    assert (heldout_flags(keys, 0.1, 3) >= flags).all()
    with pytest.raises(ValueError, match="fraction"):
        heldout_flags(keys, 1.0, 3)


def write_index(root, n=40, fraction=0.25, seed=1):
    """Two parts of an index with text flags, captions and the held-out flag; their shards hold
    red images (with text) and blue ones, and the inpainted tars the text-removed (grey) images."""
    rows, paths, shards, removed = [], [], {}, {}
    for p in range(2):
        part = f"p{p:05d}"
        keys = [f"{p}{i:04d}" for i in range(n // 2)]
        text = [i % 2 == 0 for i in range(len(keys))]
        frame = pd.DataFrame({KEY: keys, "part": part, "shard": str(root / f"{part}.tar"), "status": "ok",
                              "caption": [f"caption {k}" for k in keys], "has_text": text, "cotr": 0.5})
        frame["heldout"] = heldout_flags(frame[KEY].to_numpy(), fraction, seed)
        frame.loc[0, "status"] = "skipped"
        path = root / f"{part}.parquet"
        write_parquet(frame, path)
        paths.append(str(path))
        rows.append(frame)
        members = []
        for k, t in zip(keys, text):
            members += [(f"{k}.jpg", image_bytes(size=(40, 30), color=(200, 30, 30) if t else (30, 30, 200))),
                        (f"{k}.txt", f"caption {k}".encode())]
        shards[part] = [write_tar(root / f"{part}.tar", members)]
        removed[part] = str(root / f"{part}.removed.tar")
        with open(removed[part], "wb") as fh:
            writer = wds.TarWriter(fh, mtime=0.0)
            for k in (k for k, t in zip(keys, text) if t):
                grey = np.full((30, 40, 3), 128, np.uint8)
                writer.write({KEY: k, "png": encode_png(grey, True), "mask.png": encode_png(grey[..., 0], False),
                              "json": json.dumps({"status": "inpainted"}).encode()})
            writer.close()
    return paths, pd.concat(rows, ignore_index=True), shards, removed


def test_no_curated_subset_takes_a_held_out_sample(tmp_path):
    paths, index, _, _ = write_index(tmp_path)
    held = set(index.loc[index["heldout"], KEY])
    ok_kept = int(((index["status"] == "ok") & ~index["heldout"]).sum())
    selection = select_subset(paths, [], ok_kept, 0, None, "random")
    assert not held & set(selection.keys[KEY])
    assert selection.stats["n_heldout"] == int(((index["status"] == "ok") & index["heldout"]).sum()) > 0
    assert selection.stats["n_eligible"] == ok_kept


def test_the_filters_pool_leaves_the_held_out_split_out(tmp_path):
    from parrotscope.db import connect, one_row
    from parrotscope.filters import heldout_count, pool_view

    paths, index, _, _ = write_index(tmp_path)
    frames = [pd.read_parquet(p).assign(**{"ref.s_raw": 0.1}) for p in paths]
    for frame, path in zip(frames, paths):
        write_parquet(frame, path)
    con = connect()
    assert "heldout" not in pool_view(con, paths, "ref")
    (n,) = one_row(con, "SELECT count(*) FROM pool")
    assert n == int((~index["heldout"]).sum()) and heldout_count(con, paths) == int(index["heldout"].sum()) > 0


def test_pairs_are_a_capped_uniform_draw_of_each_group_and_are_copied_whole(tmp_path):
    paths, index, shards, removed = write_index(tmp_path)
    pairs = select_pairs(paths, 3, 0)
    eligible = index[index["heldout"] & (index["status"] == "ok")]
    for group, text in (("with text", True), ("no text", False)):
        chosen = pairs[pairs["group"] == group]
        assert len(chosen) == min(3, int((eligible["has_text"] == text).sum()))
        assert set(chosen[KEY]) <= set(eligible.loc[eligible["has_text"] == text, KEY])
    counts = extract_pairs(pairs, shards, removed, str(tmp_path / "raw.tar"), str(tmp_path / "removed.tar"))
    assert counts["pairs"] == len(pairs) and counts["with_text"] == int((pairs["group"] == "with text").sum())
    raw = {s["__key__"]: s for s in wds.WebDataset(str(tmp_path / "raw.tar"), shardshuffle=False)}
    assert set(raw) == set(pairs[KEY]) and all(s["txt"] == f"caption {k}".encode() for k, s in raw.items())
    with pytest.raises(HeldoutError, match="not found"):
        extract_pairs(pairs.assign(**{KEY: pairs[KEY] + "x"}), shards, removed, str(tmp_path / "r2.tar"),
                      str(tmp_path / "m2.tar"))
    assert not (tmp_path / "r2.tar").exists()
    nothing = [str(tmp_path / "none.parquet")]
    write_parquet(index.assign(heldout=False), nothing[0])
    with pytest.raises(HeldoutError, match="no status-ok pair"):
        select_pairs(nothing, 3, 0)


def test_each_model_scores_every_pair_as_clip_scores_does(tmp_path, scorer):
    import torch
    from PIL import Image

    paths, _, shards, removed = write_index(tmp_path)
    pairs = select_pairs(paths, 4, 0)
    write_parquet(pairs, tmp_path / "pairs.parquet")
    extract_pairs(pairs, shards, removed, str(tmp_path / "raw.tar"), str(tmp_path / "removed.tar"))
    torch.save({"state_dict": scorer.model.state_dict()}, tmp_path / "model.pt")
    spec = {"name": "m", "arch": "tiny-rn", "checkpoint": str(tmp_path / "model.pt")}
    scores = score_model(spec, str(tmp_path / "pairs.parquet"), str(tmp_path / "raw.tar"),
                         str(tmp_path / "removed.tar"), 4, "cpu", 10**8)
    text = pairs[pairs["group"] == "with text"]
    assert scores[KEY].tolist() == pairs[KEY].tolist() and scores["s_raw"].notna().all()
    assert scores["s_removed"].notna().tolist() == (pairs["group"] == "with text").tolist()
    one = pairs.iloc[0]
    color = (200, 30, 30) if one["group"] == "with text" else (30, 30, 200)
    decoded = np.asarray(Image.open(io.BytesIO(image_bytes(size=(40, 30), color=color))).convert("RGB"))
    got = scores.loc[scores[KEY] == one[KEY], "s_raw"].item()
    assert got == pytest.approx(float(clip_scores(scorer, [decoded], [one["caption"]])[0]), abs=1e-5)
    grey = np.full((30, 40, 3), 128, np.uint8)
    key = text.iloc[0]
    removed_s = scores.loc[scores[KEY] == key[KEY], "s_removed"].item()
    assert removed_s == pytest.approx(float(clip_scores(scorer, [grey], [key["caption"]])[0]), abs=1e-5)
    means = group_means(scores)
    assert means["n"] == {GROUPS[0]: len(pairs) - len(text), GROUPS[1]: len(text), GROUPS[2]: len(text)}
    assert means["mean_s"][GROUPS[2]] == pytest.approx(scores["s_removed"].mean())


def test_fig9_averages_seeds_per_model_and_group(tmp_path):
    def summary(shift):
        return {"mean_s": {g: 0.1 * i + shift for i, g in enumerate(GROUPS)}, "n": {g: 5 for g in GROUPS}}

    table = fig9_table(["a", "a", "b"], [0, 1, 0], [summary(0.0), summary(0.02), summary(0.5)])
    assert table["model"].tolist() == ["a"] * 3 + ["b"] * 3 and table["group"].tolist() == list(GROUPS) * 2
    assert table["mean S"].tolist() == pytest.approx([0.01, 0.11, 0.21, 0.5, 0.6, 0.7])
    assert table["seeds"].tolist() == [2, 2, 2, 1, 1, 1] and table["mean S seed std"].iloc[3:].isna().all()
    paths = []
    for i, s in enumerate([summary(0.0), summary(0.02), summary(0.5)]):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(s))
    run_fig9(["a", "a", "b"], [0, 1, 0], [str(p) for p in paths], str(tmp_path / "f.csv"), str(tmp_path / "f.png"), 4)
    assert (tmp_path / "f.png").stat().st_size > 5000
    assert pd.read_csv(tmp_path / "f.csv")["mean S"].round(4).tolist() == [0.01, 0.11, 0.21, 0.5, 0.6, 0.7]
