"""The profiling figures (Figs. 1, 3a-b, 4a-c, 5 left) on a tiny hand-made study, and their SQL
aggregates against the pandas computation they replaced on random multi-part inputs."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import image_bytes, write_tar
from parrotscope import figures as F
from parrotscope.cluster import ClusterModel, save_model
from parrotscope.curate import sample_keys
from parrotscope.db import connect
from parrotscope.io import KEY, write_parquet
from parrotscope.match import Normalisation

NORM = {"lowercase": True, "strip_punctuation": True, "strip_accents": True}
N = 16
# Per sample: cluster, spotted words, caption (co-embedded = spotted words in the caption).
CLUSTER = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]
WORDS = [["SALE"], ["OPEN", "now"], ["cafe"], ["big", "DEAL"], [], ["shop"], [], [],
         [], [], [], ["menu"], [], [], [], []]
CAPTIONS = ["sale", "open now", "a red cup", "big deal today", "a blue star", "shop on the corner",
            "a green circle", "a cat", "a dog", "a tree", "a car", "a menu board", "a hill", "a sky",
            "a road", "a boat"]
# Every cluster has samples in both parts, and cluster 4 of the model has none.
PART = ["p00000" if i % 2 == 0 else "p00001" for i in range(N)]


def box(x, y, w, h):
    return [x, y, x + w, y, x + w, y + h, x, y + h]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    shards = {}
    for part in ("p00000", "p00001"):
        members = []
        for i in range(N):
            if PART[i] == part:
                members += [(f"{i:03d}.jpg", image_bytes(size=(64, 48), color=(20 * i, 100, 200))),
                            (f"{i:03d}.txt", CAPTIONS[i].encode())]
        shards[part] = write_tar(tmp / f"{part}.tar", members)
    rows, spots, samples = [], {}, {}
    for i in range(N):
        part = PART[i]
        words = WORDS[i]
        polys = [box(4 + 20 * j, 4 + 2 * i % 20, 18, 6 + i % 10) for j in range(len(words))]
        caption_words = {w.lower() for w in CAPTIONS[i].split()}
        co = sorted({w.lower() for w in words} & caption_words)
        rows.append({KEY: f"{i:03d}", "part": part, "shard": shards[part], "status": "ok",
                     "caption": CAPTIONS[i], "width": 64, "height": 48, "words": words,
                     "n_caption_words": len(caption_words), "co_words": co, "has_text": bool(words),
                     "is_parrot": bool(co), "gt_co_words": co, "gt_cotr": len(co) / len(caption_words),
                     "gt_has_text": bool(words), "gt_is_parrot": bool(co),
                     "ref.s_raw": 0.30 + 0.01 * i, "ref.s_all": 0.25 if words else np.nan,
                     "ref.s_rand_all": 0.29 if words else np.nan, "ref.s_co": 0.24 if co else np.nan,
                     "ref.s_rand_co": 0.30 if co else np.nan})
        spots.setdefault(part, []).append({KEY: f"{i:03d}", "words": words, "polygons": polys,
                                           "width": 64, "height": 48})
        truth = {"words": words, "word_polygons": [np.reshape(p, (4, 2)).tolist() for p in polys]}
        samples.setdefault(part, []).append({KEY: f"{i:03d}", "meta": json.dumps({"truth": truth})})
    index = pd.DataFrame(rows)
    paths = {"index": [], "spot": {}, "samples": {}, "assign": []}
    for part in ("p00000", "p00001"):
        paths["index"].append(str(tmp / f"index_{part}.parquet"))
        write_parquet(index[index["part"] == part], paths["index"][-1])
        paths["spot"][part] = str(tmp / f"spot_{part}.parquet")
        paths["samples"][part] = str(tmp / f"samples_{part}.parquet")
        pd.DataFrame(spots[part]).to_parquet(paths["spot"][part])
        pd.DataFrame(samples[part]).to_parquet(paths["samples"][part])
        keys = [r[KEY] for r in spots[part]]
        assign = pd.DataFrame({KEY: keys, "cluster": np.array([CLUSTER[int(k)] for k in keys], np.int32),
                               "distance": np.zeros(len(keys), np.float32)})
        paths["assign"].append(str(tmp / f"assign_{part}.parquet"))
        assign.to_parquet(paths["assign"][-1])
    save_model(ClusterModel(mean=np.zeros(2), components=np.eye(2), explained_variance=[1, 1],
                            centroids=[[0, 0], [0, 1], [5, 5], [5, 6], [9, 9]]), tmp / "model.npz")
    paths["model"] = str(tmp / "model.npz")
    return tmp, paths


def study_of(paths):
    con = connect()
    return con, F.cluster_study(con, paths["index"], paths["assign"], "ref")


def labels(fig):
    return [(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes if ax.get_xlabel() or ax.get_ylabel()]


def assert_png(path):
    assert path.stat().st_size > 0
    with Image.open(path) as im:
        assert im.format == "PNG" and min(im.size) > 100


def test_cluster_profile_counts_by_hand(study):
    _, paths = study
    prof = F.cluster_profile(study_of(paths)[1])
    assert prof.index.tolist() == [0, 1, 2, 3] and prof["n"].tolist() == [4, 4, 4, 4]  # empty cluster 4 left out
    # Cluster 0: all with text, 3 of 4 parrots ("cafe" is not in "a red cup").
    assert prof.loc[0, ["share_no_text", "share_text_no_co", "share_co"]].tolist() == [0, 0.25, 0.75]
    assert prof.loc[1, "share_text"] == 0.25 and prof.loc[3, "share_text"] == 0
    assert np.allclose(prof[["share_no_text", "share_text_no_co", "share_co"]].sum(axis=1), 1)
    assert prof.loc[0, "mean_s_all"] == pytest.approx(0.25) and np.isnan(prof.loc[3, "mean_s_all"])
    assert prof.loc[0, "mean_s_raw"] == pytest.approx(np.mean([0.30, 0.31, 0.32, 0.33]))
    assert prof["n_text"].tolist() == [4, 1, 1, 0] and prof["n_co"].tolist() == [3, 1, 1, 0]
    assert (prof["gt_share_co"] == prof["share_co"]).all()
    assert F.sorted_by_text(prof).index.tolist()[:2] == [0, 1]


def test_fig3a_and_fig5_axes(study):
    _, paths = study
    prof = F.cluster_profile(study_of(paths)[1])
    fig = F.plot_cluster_text_share(prof)
    assert labels(fig)[0][1] == "share of images" and "ground truth" in fig.axes[1].get_title()
    assert labels(fig)[-1][0].startswith("image cluster")
    fig = F.plot_cluster_removal_scores(prof)
    assert labels(fig) == [("image cluster (sorted by mean raw S of its images with text)", "mean CLIP score S")]
    assert len(fig.axes[0].get_lines()) == len(F.REMOVALS)


def test_fig4_axes(study):
    _, paths = study
    con = connect()
    assert F.has_truth(con, paths["index"])
    grids = {p: F.word_count_grid(con, paths["index"], p) for p in ("", "gt_")}
    fig = F.plot_word_count_heatmap(grids)
    assert labels(fig)[:2] == [("number of caption words", "number of co-embedded words")] * 2
    grid = grids[""]
    assert grid.loc[1, 1] == 1 and grid.loc[2, 2] == 1 and grid.loc[0, 3] == 1 and grid.to_numpy().sum() == 6
    measures = F.text_measures(con, paths["index"], paths["spot"], paths["samples"], "ref",
                               Normalisation.from_config(NORM), 1000, 0)
    assert len(measures["spotted_words"]) == 8 and measures["spotted_words"]["co"].sum() == 7
    images = measures["spotted_images"].set_index(KEY)
    assert sorted(images.index) == ["000", "001", "002", "003", "005", "011"]
    assert images.loc["003", "s_raw"] == pytest.approx(0.33) and not images.loc["002", "is_parrot"]
    fig = F.plot_area_vs_score(measures, "ref")
    assert labels(fig)[0] == ("co-embedded text area (share of the image)", "CLIP score S(raw) (ref)")
    assert len(labels(fig)) == 2  # spotted and ground truth
    fig = F.plot_size_vs_parrot(measures)
    assert labels(fig) == [("text height (share of the image height)", "P(word is co-embedded in the caption)")]


def test_text_size_and_area_by_hand():
    poly = np.array([[0, 0], [20, 0], [20, 5], [0, 5]], float)
    assert F.polygon_area(poly) == 100 and F.text_height(poly) == 5
    rotated = poly @ np.array([[0.6, -0.8], [0.8, 0.6]])
    assert F.text_height(rotated) == pytest.approx(5)
    rel_h, co, area = F.word_measures(["Sale", "x1"], [poly, poly], {"sale"}, 40, 50, Normalisation())
    assert rel_h.tolist() == [0.1, 0.1] and co.tolist() == [True, False] and area == pytest.approx(100 / 2000)


def test_gallery_picks(study):
    _, paths = study
    con, cs = study_of(paths)
    prof = F.cluster_profile(cs)
    picks, n_heavy = F.text_heavy_picks(con, paths["index"], cs, prof, "ref", share=0.8, n=5)
    assert n_heavy == 1 and picks[KEY].tolist() == ["003"] and picks["cluster"].tolist() == [0]  # cluster 0's top S
    assert picks.loc[0, "caption"] == "big deal today" and picks.loc[0, "ref.s_raw"] == pytest.approx(0.33)
    picks, n_heavy = F.text_heavy_picks(con, paths["index"], cs, prof, "ref", share=0.99, n=5)
    assert n_heavy == 1
    picks, n_heavy = F.text_heavy_picks(con, paths["index"], cs, prof, "ref", share=1.0 + 1e-9, n=2)
    assert n_heavy == 0 and picks["cluster"].tolist() == [0, 1]  # the most text-heavy instead
    assert picks[KEY].tolist() == ["003", "007"]
    shown, stats = F.top_score_picks(con, paths["index"], "ref", fraction=0.25, n=3, seed=0)
    assert stats["n_top"] == 4 and stats["top_share_text"] == 0 and stats["all_share_text"] == 6 / 16
    assert stats["threshold"] == pytest.approx(0.42)
    assert len(shown) == 3 and shown[KEY].isin(["012", "013", "014", "015"]).all()
    assert shown["ref.s_raw"].is_monotonic_decreasing and list(shown.columns) == F.gallery_columns("ref")


def test_tile_highlights_co_embedded_words():
    image = np.full((48, 64, 3), 255, np.uint8)
    poly = np.reshape(box(4, 4, 30, 10), (4, 2))
    tile = np.asarray(F.render_tile(image, [poly, poly + 20], [True, False], "big SALE today", {"sale"},
                                    Normalisation(), tile_px=128))
    colours = {tuple(c) for c in tile.reshape(-1, 3)}
    assert F.HIGHLIGHT in colours and F.CO_COLOUR in colours and F.OTHER_COLOUR in colours
    plain = np.asarray(F.render_tile(image, [], [], "big sale today", set(), Normalisation(), tile_px=128))
    assert F.HIGHLIGHT not in {tuple(c) for c in plain.reshape(-1, 3)}


def test_run_functions_write_every_figure(study):
    tmp, paths = study
    out = tmp / "out"
    F.run_cluster_figures(paths["index"], paths["assign"], paths["model"], "ref", 100, 0,
                          str(out / "profile.csv"), str(out / "fig3a.png"), str(out / "fig5.png"))
    F.run_galleries(paths["index"], paths["assign"], paths["spot"], "ref", NORM, 0.8, 4, 0.25, 3, 0,
                    10**7, str(out / "fig3b.png"), str(out / "fig1.png"))
    F.run_text_figures(paths["index"], paths["spot"], paths["samples"], "ref", NORM, 1000, 0,
                       str(out / "fig4a.png"), str(out / "fig4b.png"), str(out / "fig4c.png"))
    for name in ("fig3a", "fig5", "fig3b", "fig1", "fig4a", "fig4b", "fig4c"):
        assert_png(out / f"{name}.png")
    profile = pd.read_csv(out / "profile.csv", index_col=0)
    assert profile.index.tolist() == [0, 1, 2, 3] and profile["n"].sum() == N


def test_many_clusters_are_merged_for_display(study):
    tmp, paths = study
    groups = F.merge_clusters(np.array([[0, 0], [0, 1], [5, 5], [5, 6]], np.float32), np.array([4, 4, 4, 4]), 2)
    assert groups[0] == groups[1] and groups[2] == groups[3] and groups[0] != groups[2]
    F.run_cluster_figures(paths["index"], paths["assign"], paths["model"], "ref", 2, 0,
                          str(tmp / "m.csv"), str(tmp / "m3a.png"), str(tmp / "m5.png"))
    assert_png(tmp / "m3a.png")
    assert len(pd.read_csv(tmp / "m.csv")) == 4  # the table keeps every cluster
    merged = F.cluster_profile(study_of(paths)[1], np.array([0, 0, 1, 1, 1]))
    assert merged.index.name == "group" and merged["n"].tolist() == [8, 8]
    assert merged.loc[0, "share_co"] == 4 / 8 and merged.loc[0, "mean_s_all"] == pytest.approx(0.25)


# ----------------------------------------------------------------------------------------------
# The SQL aggregates against the pandas computation they replaced (the dataset in one DataFrame),
# on random parts with undefined scores and flags, unprocessed and unassigned samples, empty
# clusters and clusters spread over every part.

SCORES = ["s_raw", "s_rand_all", "s_all", "s_rand_co", "s_co"]


def random_study(tmp, seed=0, n=600, n_parts=3):
    rng = np.random.default_rng(seed)
    keys = np.array([f"k{i:05d}" for i in rng.permutation(n)])
    status = rng.choice(["ok"] * 8 + ["error", "skipped"], n)
    ok = status == "ok"
    has_text = ok & (rng.random(n) < 0.6)
    parrot = has_text & (rng.random(n) < 0.5)
    gt_text = ok & (has_text | (rng.random(n) < 0.1))
    gt_parrot = gt_text & (parrot | (rng.random(n) < 0.1))
    vocab = np.array(["sale", "open", "cafe", "menu", "shop"])
    index = pd.DataFrame({
        KEY: keys, "part": [f"p{p:05d}" for p in rng.integers(0, n_parts, n)], "status": status,
        # undefined flags and word lists of samples that were not processed, as the index has them
        "has_text": pd.array(np.where(ok, has_text, None), dtype="boolean"),
        "is_parrot": pd.array(np.where(ok, parrot, None), dtype="boolean"),
        "gt_has_text": gt_text, "gt_is_parrot": gt_parrot,
        "gt_cotr": np.where(ok, gt_parrot * 0.5, np.nan),
        "n_caption_words": rng.integers(1, 26, n), "width": 100, "height": 40, "shard": "s.tar", "caption": "c",
        "co_words": [list(rng.choice(vocab, rng.integers(1, 4))) if p else ([] if o else None)
                     for p, o in zip(parrot, ok)],
        "gt_co_words": [list(rng.choice(vocab, rng.integers(1, 24))) if p else [] for p in gt_parrot],
    })
    for column in SCORES:
        s = (rng.random(n) * 0.8 - 0.1).astype(np.float32)  # the index's scores are float32
        defined = ok & (rng.random(n) < 0.93) & (has_text if column != "s_raw" else True)
        index[f"ref.{column}"] = np.where(defined, s, np.nan).astype(np.float32)
    # Clusters 0-5 of a model with 8: 1, 4 and 7 hold nothing, 6 only unprocessed samples, and
    # a tenth of the index is not assigned.
    cluster = np.where(ok, rng.choice([0, 2, 3, 5], n), 6).astype(np.int32)
    assigned = rng.random(n) < 0.9
    assign = pd.DataFrame({KEY: keys[assigned], "cluster": cluster[assigned],
                           "distance": np.zeros(assigned.sum(), np.float32)})
    paths = {"index": [], "assign": []}
    for p, part in enumerate(sorted(index["part"].unique())):
        paths["index"].append(str(tmp / f"index_{part}.parquet"))
        write_parquet(index[index["part"] == part], paths["index"][-1])
    for p, rows in enumerate(np.array_split(rng.permutation(len(assign)), n_parts + 1)):  # not by part
        paths["assign"].append(str(tmp / f"assign_{p}.parquet"))
        write_parquet(assign.iloc[np.sort(rows)], paths["assign"][-1])
    frame = pd.concat([pd.read_parquet(p) for p in paths["index"]], ignore_index=True)
    return frame, pd.concat([pd.read_parquet(p) for p in paths["assign"]], ignore_index=True), paths


def reference_profile(index, assign, scorer, groups=None):
    """The pandas profile the workflow computed before it queried the parts (study_frame and
    cluster_profile of figures.py at commit b1eab78)."""
    frame = index.merge(assign[[KEY, "cluster"]], on=KEY, how="left", validate="one_to_one")
    frame["cluster"] = frame["cluster"].astype("Int64")
    by = "cluster"
    if groups is not None:
        frame["group"] = frame["cluster"].map(lambda c: groups[c] if pd.notna(c) else pd.NA).astype("Int64")
        by = "group"

    def text_type(frame, prefix=""):
        has_text = frame[f"{prefix}has_text"].fillna(False).astype(bool)
        parrot = frame[f"{prefix}is_parrot"].fillna(False).astype(bool)
        return pd.Series(np.where(parrot, "co", np.where(has_text, "text_no_co", "no_text")), index=frame.index)

    ok = frame[(frame["status"] == "ok") & frame[by].notna()].copy()
    ok[by] = ok[by].astype(int)
    prof = pd.DataFrame({"n": ok.groupby(by).size()})
    for prefix in ("", "gt_"):
        kind = text_type(ok, prefix)
        counts = pd.crosstab(ok[by], kind).reindex(columns=[t for t, _, _ in F.TEXT_TYPES], fill_value=0)
        for t, _, _ in F.TEXT_TYPES:
            prof[f"{prefix}share_{t}"] = counts[t] / prof["n"]
        prof[f"{prefix}share_text"] = 1 - prof[f"{prefix}share_no_text"]
    kind = text_type(ok)
    selections = {"text": kind != "no_text", "co": kind == "co"}
    for column, _, which, _, _ in F.REMOVALS:
        values = pd.to_numeric(ok[f"{scorer}.{column}"], errors="coerce").where(selections[which])
        prof[f"mean_{column}"] = values.groupby(ok[by]).mean()
    prof["n_text"] = selections["text"].groupby(ok[by]).sum()
    prof["n_co"] = selections["co"].groupby(ok[by]).sum()
    prof["mean_s_raw_all"] = pd.to_numeric(ok[f"{scorer}.s_raw"], errors="coerce").groupby(ok[by]).mean()
    prof.index.name = by
    return prof


@pytest.fixture(scope="module")
def random_parts(tmp_path_factory):
    return random_study(tmp_path_factory.mktemp("random"))


@pytest.fixture(params=[1, 3], ids=["one pass", "3 hash partitions"])
def partitions(request, monkeypatch):
    """The study at once, or in hash partitions of the keys as past the engine's memory."""
    monkeypatch.setattr(F, "hash_partitions", lambda con, paths, row_bytes: request.param)
    return request.param


def test_cluster_profile_matches_the_pandas_reference(random_parts, tmp_path, partitions):
    index, assign, paths = random_parts
    con = connect()
    cs = F.cluster_study(con, paths["index"], paths["assign"], "ref")
    assert cs.truth and cs.dtypes["s_raw"] is np.float32
    got, want = F.cluster_profile(cs), reference_profile(index, assign, "ref")
    assert got.index.tolist() == [0, 2, 3, 5]  # empty clusters and one without processed samples left out
    assert list(got.columns) == list(want.columns) and (got.dtypes == want.dtypes).all()
    exact = [c for c in want.columns if not c.startswith("mean_")]
    pd.testing.assert_frame_equal(got[exact], want[exact])
    # Means: pandas summed float32 in row order, the engine sums exactly in any order; both divide
    # in float32, so they agree to float32 precision (the CSV's 6 decimals nearly always).
    means = [c for c in want.columns if c.startswith("mean_")]
    np.testing.assert_allclose(got[means].to_numpy(float), want[means].to_numpy(float), rtol=3e-7, atol=1e-8)
    assert got[means].isna().equals(want[means].isna())
    written, expected = tmp_path / "got.csv", tmp_path / "want.csv"
    got.round(6).to_csv(written)
    want.round(6).to_csv(expected)
    got_rows, want_rows = written.read_text().splitlines(), expected.read_text().splitlines()
    assert got_rows[0] == want_rows[0] and len(got_rows) == len(want_rows)
    for a, b in zip(got_rows, want_rows):  # a value may differ by one in its 6th decimal at most
        for x, y in zip(a.split(","), b.split(",")):
            assert x == y or abs(float(x) - float(y)) <= 1.01e-6
    # Groups of clusters from the same pass: as pandas computes them from the samples.
    groups = np.array([0, 1, 0, 1, 1, 2, 2, 2])
    got, want = F.cluster_profile(cs, groups), reference_profile(index, assign, "ref", groups)
    pd.testing.assert_frame_equal(got[exact], want[exact])
    np.testing.assert_allclose(got[means].to_numpy(float), want[means].to_numpy(float), rtol=3e-7, atol=1e-8)


def test_top_sample_of_each_cluster_matches_pandas(random_parts, partitions):
    index, assign, paths = random_parts
    con = connect()
    cs = F.cluster_study(con, paths["index"], paths["assign"], "ref")
    frame = index.merge(assign[[KEY, "cluster"]], on=KEY)
    ok = frame[frame["status"] == "ok"].dropna(subset=["ref.s_raw"])
    want = ok.loc[ok.groupby("cluster")["ref.s_raw"].idxmax()].set_index("cluster")[KEY]
    pd.testing.assert_series_equal(cs.sums["best_key"], want, check_names=False, check_index_type=False)


def test_the_join_refuses_keys_that_do_not_match_one_to_one(random_parts, tmp_path, partitions):
    index, assign, paths = random_parts
    con = connect()
    extra = tmp_path / "extra.parquet"
    write_parquet(assign.iloc[[5, 7]], extra)
    with pytest.raises(ValueError, match=r"2 key\(s\) assigned twice, e.g. \["):
        F.cluster_study(con, paths["index"], [*paths["assign"], str(extra)], "ref")
    stranger = assign.iloc[[0]].assign(**{KEY: "zz-not-indexed"})
    write_parquet(stranger, extra)
    with pytest.raises(ValueError, match=r"1 key\(s\) assigned but not in the index, e.g. \['zz-not-indexed'\]"):
        F.cluster_study(con, paths["index"], [*paths["assign"], str(extra)], "ref")
    with pytest.raises(ValueError, match=r"key\(s\) in the index twice"):
        F.cluster_study(con, [*paths["index"], paths["index"][0]], paths["assign"], "ref")
    with pytest.raises(F.QueryError, match=r"no column\(s\) \['nope.s_raw'"):
        F.cluster_study(con, paths["index"], paths["assign"], "nope")


def reference_grid(frame, prefix="", cap=20):
    """Fig. 4a's grid as pandas computed it (figures.word_count_grid at commit b1eab78)."""
    ok = frame[(frame["status"] == "ok") & frame[f"{prefix}has_text"].fillna(False).astype(bool)]
    n_cap = ok["n_caption_words"].clip(upper=cap).astype(int)
    n_co = ok[f"{prefix}co_words"].map(lambda v: len(F._as_set(v))).clip(upper=cap).astype(int)
    top_cap = int(max(n_cap.max() if len(ok) else 1, 1))
    top_co = int(max(n_co.max() if len(ok) else 1, 1))
    return pd.crosstab(n_co, n_cap).reindex(index=range(top_co + 1), columns=range(top_cap + 1), fill_value=0)


@pytest.mark.parametrize("prefix", ["", "gt_"])
def test_word_count_grid_matches_pandas(random_parts, prefix):
    index, _, paths = random_parts
    got = F.word_count_grid(connect(), paths["index"], prefix, cap=20)
    want = reference_grid(index, prefix, cap=20)
    assert got.shape == want.shape and got[20].sum() > 0  # some captions have 20 words or more
    np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())
    assert got.index.tolist() == want.index.tolist() and got.columns.tolist() == want.columns.tolist()


def test_top_score_cut_matches_pandas_and_the_pick_is_seeded(random_parts):
    index, _, paths = random_parts
    con = connect()
    ok = index[index["status"] == "ok"].copy()
    ok["_s"] = pd.to_numeric(ok["ref.s_raw"], errors="coerce")
    ok = ok.dropna(subset=["_s"])
    k = int(round(0.05 * len(ok)))
    top = ok.nlargest(k, "_s")
    shown, stats = F.top_score_picks(con, paths["index"], "ref", 0.05, 9, seed=3)
    assert stats["n_top"] == k and stats["threshold"] == float(top["_s"].min())
    assert stats["top_share_text"] == pytest.approx(top["has_text"].astype(bool).mean())
    assert stats["top_share_co"] == pytest.approx(top["is_parrot"].astype(bool).mean())
    assert stats["all_share_co"] == pytest.approx(ok["is_parrot"].astype(bool).mean())
    assert len(shown) == 9 and set(shown[KEY]) <= set(top[KEY])
    # The pick: the lowest keyed hashes of the top pairs, whatever the parts' order.
    want = top[KEY].to_numpy()[sample_keys(top[KEY], 9, 3)]
    assert set(shown[KEY]) == set(want)
    again, _ = F.top_score_picks(connect(), paths["index"][::-1], "ref", 0.05, 9, seed=3)
    assert again[KEY].tolist() == shown[KEY].tolist()
    assert set(F.top_score_picks(con, paths["index"], "ref", 0.05, 9, seed=4)[0][KEY]) != set(shown[KEY])


def test_text_measures_read_a_bounded_keyed_sample(random_parts, tmp_path):
    index, _, paths = random_parts
    words = {k: list(w) if w is not None else [] for k, w in zip(index[KEY], index["co_words"])}
    spot_paths = {}
    for part, keys in index.groupby("part")[KEY]:
        spot = pd.DataFrame({KEY: keys, "words": keys.map(words)})
        spot["polygons"] = [[box(1, 1, 10, 4)] * len(w) for w in spot["words"]]  # 40 px each
        spot_paths[part] = str(tmp_path / f"spot_{part}.parquet")
        spot.to_parquet(spot_paths[part])
    norm = Normalisation.from_config(NORM)
    ok = index.loc[index["status"] == "ok", KEY].reset_index(drop=True)
    with_words = {k for k, w in words.items() if w}
    measures = F.text_measures(connect(), paths["index"], spot_paths, None, "ref", norm, 50, 7)
    images = measures["spotted_images"]
    # The sample is the 50 lowest keyed hashes of the processed images, as curate draws.
    assert set(images[KEY]) == set(ok.to_numpy()[sample_keys(ok, 50, 7)]) & with_words
    assert "truth_images" not in measures and images["is_parrot"].all()
    n_words = images[KEY].map(lambda k: len(words[k]))
    np.testing.assert_allclose(images["co_area"], n_words * 40 / (100 * 40))
    assert len(measures["spotted_words"]) == n_words.sum()
    s_raw = index.set_index(KEY)["ref.s_raw"].astype(float)
    np.testing.assert_array_equal(images["s_raw"].to_numpy(), s_raw[images[KEY]].to_numpy())
    everything = F.text_measures(connect(), paths["index"], spot_paths, None, "ref", norm, 10**6, 7)
    assert set(everything["spotted_images"][KEY]) == set(ok) & with_words


def test_galleries_without_any_score_show_nothing(random_parts, tmp_path):
    index, _, paths = random_parts
    unscored = tmp_path / "unscored.parquet"
    write_parquet(index.assign(**{"ref.s_raw": np.float32("nan")}), unscored)
    con = connect()
    shown, stats = F.top_score_picks(con, [str(unscored)], "ref", 0.05, 9, 0)
    assert shown.empty and stats["n_top"] == 0 and np.isnan(stats["threshold"])
    cs = F.cluster_study(con, [str(unscored)], paths["assign"], "ref")
    picks, _ = F.text_heavy_picks(con, [str(unscored)], cs, F.cluster_profile(cs), "ref", 0.5, 3)
    assert picks.empty and cs.sums["best_key"].isna().all()


def test_example_picks_match_pandas(random_parts, tmp_path):
    """Fig. 10's picks are the text images of lowest and highest RSA, Table 16's the parrots of
    highest S(raw), ties by key, undefined scores and unprocessed samples left out."""
    index, _, _ = random_parts
    idx = index.assign(cotr=np.where(index["is_parrot"].fillna(False).astype(bool), 0.5, 0.0),
                       **{"ref.rsa": (index["ref.s_raw"] - index["ref.s_all"]).astype(np.float32)})
    tied = idx.index[idx["has_text"].fillna(False).astype(bool) & idx["ref.rsa"].notna()][:2]
    idx.loc[tied, "ref.rsa"] = np.float32(-5.0)  # the two lowest RSA, tied: the smaller key first
    path = tmp_path / "index.parquet"
    write_parquet(idx, path)
    con = connect()
    rises, falls = F.removal_picks(con, [str(path)], "ref", 5)
    text = idx[(idx["status"] == "ok") & idx["has_text"].fillna(False).astype(bool) & idx["ref.rsa"].notna()]
    assert rises[KEY].tolist() == text.sort_values(["ref.rsa", KEY])[KEY].head(5).tolist()
    assert rises[KEY].tolist()[:2] == sorted(idx.loc[tied, KEY])
    assert falls[KEY].tolist() == text.assign(neg=-text["ref.rsa"]).sort_values(["neg", KEY])[KEY].head(5).tolist()
    parrots = F.parrot_picks(con, [str(path)], "ref", 4)
    cand = idx[(idx["status"] == "ok") & idx["is_parrot"].fillna(False).astype(bool) & idx["ref.s_raw"].notna()]
    assert parrots[KEY].tolist() == cand.assign(neg=-cand["ref.s_raw"]).sort_values(["neg", KEY])[KEY].head(4).tolist()
    assert (parrots["cotr"] == 0.5).all()
