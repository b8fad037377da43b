"""The profiling figures (Figs. 1, 3a-b, 4a-c, 5 left) on a tiny hand-made study."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import image_bytes, write_tar
from parrotscope import figures as F
from parrotscope.cluster import ClusterModel, save_model
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


def box(x, y, w, h):
    return [x, y, x + w, y, x + w, y + h, x, y + h]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    norm = Normalisation.from_config(NORM)
    rows, spots, samples, shards = [], {}, {}, {}
    for part in ("p00000", "p00001"):
        members = []
        for i in range(N):
            if (i < 8) != (part == "p00000"):
                continue
            members += [(f"{i:03d}.jpg", image_bytes(size=(64, 48), color=(20 * i, 100, 200))),
                        (f"{i:03d}.txt", CAPTIONS[i].encode())]
        shards[part] = write_tar(tmp / f"{part}.tar", members)
    for i in range(N):
        part = "p00000" if i < 8 else "p00001"
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
    paths = {"index": tmp / "index.parquet", "spot": {}, "samples": {}, "assign": []}
    write_parquet(index, paths["index"])
    for part in spots:
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
                            centroids=[[0, 0], [0, 1], [5, 5], [5, 6]]), tmp / "model.npz")
    paths["model"] = str(tmp / "model.npz")
    paths["frame"] = F.study_frame(index, pd.concat([pd.read_parquet(p) for p in paths["assign"]]))
    return tmp, paths


def labels(fig):
    return [(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes if ax.get_xlabel() or ax.get_ylabel()]


def assert_png(path):
    assert path.stat().st_size > 0
    with Image.open(path) as im:
        assert im.format == "PNG" and min(im.size) > 100


def test_cluster_profile_counts_by_hand(study):
    _, paths = study
    prof = F.cluster_profile(paths["frame"], "ref")
    assert prof["n"].tolist() == [4, 4, 4, 4]
    # Cluster 0: all with text, 3 of 4 parrots ("cafe" is not in "a red cup").
    assert prof.loc[0, ["share_no_text", "share_text_no_co", "share_co"]].tolist() == [0, 0.25, 0.75]
    assert prof.loc[1, "share_text"] == 0.25 and prof.loc[3, "share_text"] == 0
    assert np.allclose(prof[["share_no_text", "share_text_no_co", "share_co"]].sum(axis=1), 1)
    assert prof.loc[0, "mean_s_all"] == pytest.approx(0.25) and np.isnan(prof.loc[3, "mean_s_all"])
    assert prof.loc[0, "mean_s_raw"] == pytest.approx(np.mean([0.30, 0.31, 0.32, 0.33]))
    assert (prof["gt_share_co"] == prof["share_co"]).all()
    assert F.sorted_by_text(prof).index.tolist()[:2] == [0, 1]


def test_fig3a_and_fig5_axes(study):
    _, paths = study
    prof = F.cluster_profile(paths["frame"], "ref")
    fig = F.plot_cluster_text_share(prof)
    assert labels(fig)[0][1] == "share of images" and "ground truth" in fig.axes[1].get_title()
    assert labels(fig)[-1][0].startswith("image cluster")
    fig = F.plot_cluster_removal_scores(prof)
    assert labels(fig) == [("image cluster (sorted by mean raw S of its images with text)", "mean CLIP score S")]
    assert len(fig.axes[0].get_lines()) == len(F.REMOVALS)


def test_fig4_axes(study):
    _, paths = study
    frame = paths["frame"]
    fig = F.plot_word_count_heatmap(frame)
    assert labels(fig)[:2] == [("number of caption words", "number of co-embedded words")] * 2
    grid = F.word_count_grid(frame)
    assert grid.loc[1, 1] == 1 and grid.loc[2, 2] == 1 and grid.loc[0, 3] == 1 and grid.to_numpy().sum() == 6
    measures = F.text_measures(frame, paths["spot"], paths["samples"], Normalisation.from_config(NORM), None, 0)
    assert len(measures["spotted_words"]) == 8 and measures["spotted_words"]["co"].sum() == 7
    scores = frame.set_index(KEY)["ref.s_raw"]
    fig = F.plot_area_vs_score(measures, scores, "ref")
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
    frame = paths["frame"]
    prof = F.cluster_profile(frame, "ref")
    picks, n_heavy = F.text_heavy_picks(frame, prof, "ref", share=0.8, n=5)
    assert n_heavy == 1 and picks[KEY].tolist() == ["003"]  # cluster 0's top S
    picks, n_heavy = F.text_heavy_picks(frame, prof, "ref", share=0.99, n=5)
    assert n_heavy == 1
    picks, n_heavy = F.text_heavy_picks(frame, prof, "ref", share=1.0 + 1e-9, n=2)
    assert n_heavy == 0 and picks["cluster"].tolist() == [0, 1]  # the most text-heavy instead
    shown, stats = F.top_score_picks(frame, "ref", fraction=0.25, n=3, seed=0)
    assert stats["n_top"] == 4 and stats["top_share_text"] == 0 and stats["all_share_text"] == 6 / 16
    assert len(shown) == 3 and shown[KEY].isin(["012", "013", "014", "015"]).all()


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
    F.run_cluster_figures([str(paths["index"])], paths["assign"], paths["model"], "ref", 100, 0,
                          str(out / "profile.csv"), str(out / "fig3a.png"), str(out / "fig5.png"))
    F.run_galleries([str(paths["index"])], paths["assign"], paths["spot"], "ref", NORM, 0.8, 4, 0.25, 3, 0,
                    10**7, str(out / "fig3b.png"), str(out / "fig1.png"))
    F.run_text_figures([str(paths["index"])], paths["spot"], paths["samples"], "ref", NORM, None, 0,
                       str(out / "fig4a.png"), str(out / "fig4b.png"), str(out / "fig4c.png"))
    for name in ("fig3a", "fig5", "fig3b", "fig1", "fig4a", "fig4b", "fig4c"):
        assert_png(out / f"{name}.png")
    profile = pd.read_csv(out / "profile.csv", index_col=0)
    assert profile.index.tolist() == [0, 1, 2, 3] and profile["n"].sum() == N


def test_many_clusters_are_merged_for_display(study):
    _, paths = study
    groups = F.merge_clusters(np.array([[0, 0], [0, 1], [5, 5], [5, 6]], np.float32), np.array([4, 4, 4, 4]), 2)
    assert groups[0] == groups[1] and groups[2] == groups[3] and groups[0] != groups[2]
    tmp, _ = study
    F.run_cluster_figures([str(paths["index"])], paths["assign"], paths["model"], "ref", 2, 0,
                          str(tmp / "m.csv"), str(tmp / "m3a.png"), str(tmp / "m5.png"))
    assert_png(tmp / "m3a.png")
    assert len(pd.read_csv(tmp / "m.csv")) == 4  # the table keeps every cluster
