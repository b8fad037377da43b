"""The simple fix and its baselines: the aesthetic head, T-MARS's mean-fill masking, flipping,
deduplication within clusters, each filter on a tiny pool with known answers, and the tables."""

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import write_tar
from parrotscope.aesthetic import EMBED_DIM, AestheticHead, aesthetic_scores, load_aesthetic_head, run_aesthetic
from parrotscope.curate import SubsetTooSmall, sample_keys, subset_stats
from parrotscope.db import Engine
from parrotscope.embed import write_embeddings
from parrotscope.filters import (
    SHARE_COLUMNS, VARIANT_OF, FilterError, FixSettings, check_filters, dedup_within_clusters, flip_horizontal,
    greedy_keep_first, mean_fill, rescore_part, run_baseline, run_fix, variant_pairs)
from parrotscope.io import KEY, read_json, write_parquet
from parrotscope.score import Scorer, clip_scores
from parrotscope.train import build_model


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Every test of this module runs with one torch thread (see conftest)."""


# --- the aesthetic head --------------------------------------------------------------------------

# The released sac+logos+ava1-l14-linearMSE.pth (improved-aesthetic-predictor, simple_inference.py):
# linear layers at Sequential indices 0, 2, 4, 6, 7 (dropouts at 1, 3, 5).
RELEASED_SHAPES = {
    "layers.0.weight": (1024, 768), "layers.0.bias": (1024,),
    "layers.2.weight": (128, 1024), "layers.2.bias": (128,),
    "layers.4.weight": (64, 128), "layers.4.bias": (64,),
    "layers.6.weight": (16, 64), "layers.6.bias": (16,),
    "layers.7.weight": (1, 16), "layers.7.bias": (1,),
}


def random_head_file(path, seed=0):
    torch.manual_seed(seed)
    state = {k: torch.randn(shape) * 0.05 for k, shape in RELEASED_SHAPES.items()}
    torch.save(state, path)
    return state


def test_aesthetic_head_has_the_released_layout():
    head = AestheticHead()
    assert {k: tuple(v.shape) for k, v in head.state_dict().items()} == RELEASED_SHAPES
    assert [type(m).__name__ for m in head.layers] == ["Linear", "Dropout"] * 3 + ["Linear", "Linear"]


def test_aesthetic_head_loads_a_state_dict_and_is_a_linear_chain(tmp_path):
    state = random_head_file(tmp_path / "head.pth")
    head = load_aesthetic_head(tmp_path / "head.pth")
    assert not head.training  # dropout off: scores are deterministic
    emb = np.random.default_rng(0).normal(size=(5, EMBED_DIM)).astype(np.float32)
    got = aesthetic_scores(head, emb, batch_size=2)
    assert got.shape == (5,) and got.dtype == np.float32
    np.testing.assert_array_equal(got, aesthetic_scores(head, emb, batch_size=2))
    np.testing.assert_allclose(got, aesthetic_scores(head, emb), rtol=1e-5, atol=1e-7)  # any batching
    # By hand: the released head has no activations, on L2-normalised inputs.
    x = torch.from_numpy(emb / np.linalg.norm(emb, axis=1, keepdims=True))
    for i in (0, 2, 4, 6, 7):
        x = x @ state[f"layers.{i}.weight"].T + state[f"layers.{i}.bias"]
    np.testing.assert_allclose(got, x.squeeze(-1).numpy(), rtol=1e-4, atol=1e-5)
    # Scaling an embedding does not change its score (normalised first).
    np.testing.assert_allclose(aesthetic_scores(head, emb * 3), got, rtol=1e-4, atol=1e-5)


def test_aesthetic_head_loads_a_lightning_checkpoint(tmp_path):
    state = random_head_file(tmp_path / "plain.pth")
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "lightning.ckpt")
    emb = np.ones((2, EMBED_DIM), np.float32)
    np.testing.assert_array_equal(aesthetic_scores(load_aesthetic_head(tmp_path / "lightning.ckpt"), emb),
                                  aesthetic_scores(load_aesthetic_head(tmp_path / "plain.pth"), emb))


def test_aesthetic_head_refuses_other_weights_and_widths(tmp_path):
    with pytest.raises(FileNotFoundError, match="filters.aesthetic.weights"):
        load_aesthetic_head(tmp_path / "absent.pth")
    torch.save(AestheticHead(512).state_dict(), tmp_path / "b32.pth")  # the ViT-B/32 predictor
    with pytest.raises(ValueError, match="not an improved-aesthetic-predictor state dict"):
        load_aesthetic_head(tmp_path / "b32.pth")
    random_head_file(tmp_path / "l14.pth")
    with pytest.raises(ValueError, match="ViT-L/14"):
        aesthetic_scores(load_aesthetic_head(tmp_path / "l14.pth"), np.ones((3, 512), np.float32))


def test_run_aesthetic_scores_every_embedded_sample(tmp_path):
    random_head_file(tmp_path / "head.pth")
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(4, EMBED_DIM)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    write_embeddings(["a", "b", "c", "d"], emb, emb, tmp_path / "p00000.parquet")
    counts = run_aesthetic(str(tmp_path / "p00000.parquet"), str(tmp_path / "head.pth"),
                           str(tmp_path / "out.parquet"), batch_size=3)
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert out[KEY].tolist() == ["a", "b", "c", "d"] and counts["n_scored"] == 4
    np.testing.assert_allclose(out["aesthetic"], aesthetic_scores(load_aesthetic_head(tmp_path / "head.pth"), emb),
                               rtol=1e-5)


# --- T-MARS masking and flipping -----------------------------------------------------------------


def square(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float)


def test_mean_fill_paints_text_with_the_colour_around_it():
    image = np.zeros((40, 60, 3), np.uint8)
    image[:, :30] = (200, 20, 20)   # red left half
    image[:, 30:] = (20, 20, 200)   # blue right half
    image[10:20, 5:20] = 255        # white "text" on red
    out = mean_fill(image, [square(5, 10, 19, 19)], dilate_px=0, ring_px=3)
    np.testing.assert_array_equal(out[10:20, 5:20], np.broadcast_to((200, 20, 20), (10, 15, 3)))
    outside = np.ones((40, 60), bool)
    outside[10:20, 5:20] = False
    np.testing.assert_array_equal(out[outside], image[outside])  # nothing else changes


def test_mean_fill_ring_ignores_neighbouring_text_and_falls_back():
    image = np.full((30, 50, 3), 100, np.uint8)  # grey background
    image[10:20, 5:20] = 255                      # white word
    image[10:20, 21:36] = 0                       # black word 1 px away
    out = mean_fill(image, [square(5, 10, 19, 19), square(21, 10, 35, 19)], ring_px=4)
    # Each word's ring skips the other word's pixels, so both become the grey around them.
    np.testing.assert_array_equal(out[10:20, 5:36], 100)
    # A region covering the whole image has no ring: the image mean.
    tiny = np.zeros((4, 4, 3), np.uint8)
    tiny[:2] = 200
    filled = mean_fill(tiny, [square(0, 0, 3, 3)], ring_px=1)
    np.testing.assert_array_equal(filled, 100)
    np.testing.assert_array_equal(mean_fill(image, []), image)
    with pytest.raises(ValueError, match="ring_px"):
        mean_fill(image, [square(0, 0, 3, 3)], ring_px=0)


def test_flip_mirrors_columns():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    flipped = flip_horizontal(image)
    np.testing.assert_array_equal(flipped[:, 0], image[:, 2])
    np.testing.assert_array_equal(flip_horizontal(flipped), image)
    assert flipped.flags["C_CONTIGUOUS"]


def png(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def part(tmp_path):
    """A part of three images: one with a white word, one text-free, one broken at ingest."""
    word = np.full((32, 48, 3), 90, np.uint8)
    word[8:16, 10:30] = 255
    plain = np.full((32, 48, 3), 30, np.uint8)
    plain[:, :24] = 220
    shard = write_tar(tmp_path / "00000.tar", [("t.png", png(word)), ("t.txt", b"sale"),
                                               ("n.png", png(plain)), ("n.txt", b"a two-tone card"),
                                               ("x.png", b"broken"), ("x.txt", b"nothing")])
    samples = pd.DataFrame({KEY: ["t", "n", "x"], "status": ["ok", "ok", "corrupt_image"],
                            "caption": ["sale", "a two-tone card", "nothing"]})
    spot = pd.DataFrame({KEY: ["t", "n", "x"], "status": ["ok", "ok", "skipped"], "width": [48, 48, None],
                         "height": [32, 32, None], "words": [["SALE"], [], []],
                         "polygons": [[[10, 8, 29, 8, 29, 15, 10, 15]], [], []]})
    match = pd.DataFrame({KEY: ["t", "n", "x"], "status": ["ok", "ok", "skipped"],
                          "has_text": [True, False, None], "co_words": [["sale"], [], None]})
    return {"images": {"t": word, "n": plain}, "shards": [shard], "samples": samples, "spot": spot, "match": match}


def test_variant_pairs_mask_text_images_and_flip_usable_ones(part):
    def decoded(pairs):
        return {key: pairs.decode(key, payload) for key, payload, _ in pairs}

    got = decoded(variant_pairs("tmars", part["samples"], part["spot"], part["match"], part["shards"],
                                10**8, dilate_px=0, ring_px=2))
    assert list(got) == ["t"]
    np.testing.assert_array_equal(got["t"], 90)  # the word is gone, filled with the grey around it
    got = decoded(variant_pairs("flip", part["samples"], part["spot"], part["match"], part["shards"], 10**8, 0, 2))
    assert set(got) == {"n", "t"}
    np.testing.assert_array_equal(got["n"], part["images"]["n"][:, ::-1])
    with pytest.raises(FilterError, match="variant"):
        variant_pairs("blur", part["samples"], part["spot"], part["match"], part["shards"], 10**8, 0, 2)


def test_rescore_part_scores_the_transformed_images(part):
    torch.manual_seed(0)
    model, preprocess, tokenizer = build_model("tiny-rn", device="cpu")
    scorer = Scorer("random-tiny", model, preprocess, tokenizer, "cpu")
    out = rescore_part(scorer, "tmars", part["samples"], part["spot"], part["match"], part["shards"],
                       batch_size=2, max_pixels=10**8, dilate_px=0, ring_px=2)
    assert out[KEY].tolist() == ["t", "n", "x"] and out["status"].tolist() == ["ok", "ok", "corrupt_image"]
    masked = np.full((32, 48, 3), 90, np.uint8)
    np.testing.assert_allclose(out["s_tmars"].iloc[0], clip_scores(scorer, [masked], ["sale"])[0], atol=1e-5)
    assert out["s_tmars"].iloc[1:].isna().all()
    flipped = rescore_part(scorer, "flip", part["samples"], part["spot"], part["match"], part["shards"],
                           batch_size=2, max_pixels=10**8)
    expected = clip_scores(scorer, [part["images"]["n"][:, ::-1]], ["a two-tone card"])[0]
    np.testing.assert_allclose(flipped.set_index(KEY).loc["n", "s_flip"], expected, atol=1e-5)
    assert flipped["s_flip"].notna().tolist() == [True, True, False]


# --- deduplication within clusters ---------------------------------------------------------------


def unit(*rows):
    m = np.array(rows, dtype=np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def test_greedy_keep_first_compares_with_kept_rows_only():
    # sim(x, y) = sim(y, z) = 0.96 > 0.95 but sim(x, z) = 0.843: y goes (duplicate of x), z stays,
    # because y was not kept. Any block size gives the same answer.
    a, b = np.deg2rad(16.26), np.deg2rad(32.52)
    emb = unit([1, 0], [np.cos(a), np.sin(a)], [np.cos(b), np.sin(b)], [0, 1])
    for block in (1, 2, 1024):
        assert greedy_keep_first(emb, 0.95, block=block).tolist() == [True, False, True, True]
    assert greedy_keep_first(emb, 1.01).all()       # nothing is that similar
    assert greedy_keep_first(emb, -1.0).tolist() == [True, False, False, False]


def test_dedup_within_clusters_keeps_the_best_scored_and_never_crosses_clusters():
    keys = np.array(["a", "a2", "b", "c", "d"], dtype=object)
    emb = unit([1, 0, 0], [1, 0.01, 0], [0, 1, 0], [1, 0, 0], [1, 0, 0])
    clusters = np.array([0, 0, 0, 1, 1])
    priority = np.array([0.30, 0.35, 0.31, 0.2, 0.2])  # a2 beats its near-copy a; c and d tie: key order
    keep = dedup_within_clusters(keys, clusters, emb, priority, threshold=0.99)
    # a (cluster 0) and c (cluster 1) are identical but never compared.
    assert dict(zip(keys, keep)) == {"a": False, "a2": True, "b": True, "c": True, "d": False}
    assert dedup_within_clusters(keys[:0], clusters[:0], emb[:0], priority[:0], 0.9).size == 0


# --- the fix and the baselines: the reference (in-memory) semantics ---------------------------
#
# The production filters are queries over the per-part tables (parrotscope.filters). These pandas
# functions are the definition they must reproduce (the module docstring in code form, as the
# filters were computed before they became dataset-wide queries); the tests below run both on the
# same per-part files and require the same keys and stats.


def ref_pool(paths, scorer, aesthetic=False, variant=None):
    """The index parts concatenated in part order, without the held-out split (counted in
    ``attrs``), with the filter tables merged by key."""
    pool = pd.concat([pd.read_parquet(p) for p in paths["index"]], ignore_index=True)
    held = pool["heldout"].fillna(False).astype(bool) if "heldout" in pool else pd.Series(False, index=pool.index)
    pool = pool[~held].reset_index(drop=True)
    joins = [("assign", "cluster")] + ([("aesthetic", "aesthetic")] if aesthetic else [])
    joins += [(variant, f"s_{variant}")] if variant else []
    for name, column in joins:
        table = pd.concat([pd.read_parquet(p, columns=[KEY, column]) for p in paths[name]], ignore_index=True)
        pool = pool.merge(table, on=KEY, how="left", validate="one_to_one")
    pool.attrs["n_heldout"] = int(held.sum())
    return pool


def ref_summary(chosen, scorer):
    shares = {}
    for name, col in SHARE_COLUMNS.items():
        values = chosen[col].dropna() if col in chosen.columns else pd.Series(dtype=float)
        shares[name] = float(values.astype(float).mean()) if len(values) else None
    return {**subset_stats(chosen, scorer), "shares": shares}


def ref_keys(chosen):
    return chosen[[KEY, "part", "shard"]].sort_values(KEY, kind="stable").reset_index(drop=True)


def ref_fix(pool, scorer, settings, embeddings):
    s_raw = f"{scorer}.s_raw"
    ok = pool[pool["status"] == "ok"]
    removed = {}
    left = ok[~ok["has_text"].fillna(False).astype(bool)]
    removed["spotted text"] = len(ok) - len(left)
    passed = left[pd.to_numeric(left[s_raw], errors="coerce") > settings.clip_threshold]
    removed[f"CLIP score <= {settings.clip_threshold}"] = len(left) - len(passed)
    left = passed
    if settings.aesthetic_threshold is not None:
        passed = left[pd.to_numeric(left["aesthetic"], errors="coerce") > settings.aesthetic_threshold]
        removed[f"aesthetic <= {settings.aesthetic_threshold}"] = len(left) - len(passed)
        left = passed
    matrix = np.stack([embeddings[k] for k in left[KEY]]) if len(left) else np.empty((0, 1), dtype=np.float32)
    keep = dedup_within_clusters(left[KEY].to_numpy(), left["cluster"].to_numpy(dtype=np.int64), matrix,
                                 pd.to_numeric(left[s_raw]).to_numpy(), settings.dedup_threshold)
    removed[f"near-duplicate in its cluster (cosine >= {settings.dedup_threshold})"] = int((~keep).sum())
    chosen = left[keep]
    stats = {
        "subset": "filter_fix", "method": "fix", "scorer": scorer,
        "settings": {"clip_threshold": settings.clip_threshold, "aesthetic_threshold": settings.aesthetic_threshold,
                     "dedup_threshold": settings.dedup_threshold,
                     "dedup_order": "within each cluster: S(raw) descending, ties by key; keep-first"},
        "n_index": len(pool), "n_ok": len(ok), "n_skipped": len(pool) - len(ok),
        "n_heldout": pool.attrs["n_heldout"], "removed": removed, "n_clusters_left": int(left["cluster"].nunique()),
        "n_eligible": len(chosen), "n_selected": len(chosen), "size": len(chosen), **ref_summary(chosen, scorer),
    }
    return ref_keys(chosen), stats


def rank_order(scores, keys):
    """Positions of the finite scores, best first, ties by key (NaN scores left out)."""
    finite = np.flatnonzero(np.isfinite(scores))
    return finite[np.lexsort((np.asarray(keys, dtype=object)[finite], -scores[finite]))]


def top_fraction(scores, keys, fraction):
    order = rank_order(scores, keys)
    mask = np.zeros(len(scores), dtype=bool)
    mask[order[:math.ceil(fraction * len(order))]] = True
    return mask


def at_least_median(scores):
    finite = np.isfinite(scores)
    return finite & (scores >= np.median(scores[finite])) if finite.any() else finite


def ref_baseline(method, pool, scorer, size, seed, fractions):
    ok = pool[pool["status"] == "ok"].reset_index(drop=True)
    scores = pd.to_numeric(ok[f"{scorer}.s_raw"], errors="coerce").to_numpy(dtype=np.float64)
    if method == "tmars":
        has_text = ok["has_text"].fillna(False).astype(bool).to_numpy()
        scores = np.where(has_text, pd.to_numeric(ok["s_tmars"], errors="coerce").to_numpy(dtype=np.float64), scores)
    elif method == "flip_clip":
        scores = pd.to_numeric(ok["s_flip"], errors="coerce").to_numpy(dtype=np.float64)
    keys = ok[KEY].to_numpy(dtype=object)
    if method in ("clip_score", "flip_clip"):
        eligible, described = top_fraction(scores, keys, fractions[method]), f"top {fractions[method]:.0%} by score"
    elif method == "tmars":
        eligible, described = at_least_median(scores), "masked score >= median"
    else:
        eligible, described = np.ones(len(scores), dtype=bool), "every status-ok sample"
    n_eligible = int(eligible.sum())
    if n_eligible >= size:
        idx = np.flatnonzero(eligible)
        taken = idx[sample_keys(pd.Series(keys[idx]), size, seed)]
        how = {"chosen_by": "uniform among the eligible", "shortfall": 0}
    else:
        order = rank_order(scores, keys)
        if len(order) < size:
            raise SubsetTooSmall("too few scores")
        taken = order[:size]
        how = {"chosen_by": f"top {size} by score (the criterion keeps {n_eligible} < {size})",
               "shortfall": size - n_eligible, "score_at_cut": float(scores[taken[-1]])}
    chosen = ok.iloc[np.sort(taken)]
    finite = np.isfinite(scores)
    stats = {
        "subset": f"filter_{method}", "method": method, "scorer": scorer, "criterion": described,
        "fraction": fractions.get(method), "seed": seed,
        "median_score": float(np.median(scores[finite])) if finite.any() else None,
        "n_index": len(pool), "n_ok": len(ok), "n_skipped": len(pool) - len(ok),
        "n_heldout": pool.attrs["n_heldout"], "n_scored": int(finite.sum()), "n_eligible": n_eligible, "size": size, "n_selected": len(chosen), **how,
        "mean_filter_score": float(np.nanmean(scores[taken])) if len(taken) else None,
        **ref_summary(chosen, scorer),
    }
    return ref_keys(chosen), stats


# Means of float columns: pandas sums in row order, a float32 column in float32 (so its result
# carries float32 rounding of every partial sum: about 1e-7 of the values' size, more than one unit
# of the mean's last place when values cancel); the queries take a compensated (order-free) sum
# and divide as pandas does. These means may therefore differ from the reference by that much;
# every other value must be equal.
FLOAT32_MEANS = ("mean_s_raw", "mean_rsa", "mean_rsc")
FLOAT64_MEANS = ("mean_cotr", "mean_cotr_fuzzy", "mean_filter_score")


def assert_same_stats(got, expected):
    """Equal stats, key order included; the summed means within their summation's rounding."""
    assert list(got) == list(expected)
    for name, want in expected.items():
        if name in FLOAT32_MEANS + FLOAT64_MEANS and want is not None and got[name] is not None:
            tolerance = {"abs": 1e-6} if name in FLOAT32_MEANS else {"rel": 1e-13, "abs": 1e-15}
            assert got[name] == pytest.approx(want, **tolerance), name
        else:
            assert got[name] == want, name


# --- per-part files of a pool, and the production filters on them ------------------------------

FILTER_TABLES = {"assign": "cluster", "aesthetic": "aesthetic", "tmars": "s_tmars", "flip": "s_flip"}


def write_dataset(directory, pool, embeddings):
    """A pool written as the stages write it: index parts (in the pool's row order) and per-part
    filter tables (cluster assignment and aesthetic scores of the ok samples with one, re-scores
    of every sample, embeddings of the keys given)."""
    paths = {name: [] for name in ["index", "embed", *FILTER_TABLES]}
    for part, frame in pool.groupby("part", sort=True):
        frame = frame.reset_index(drop=True)
        path = directory / "index" / f"{part}.parquet"
        write_parquet(frame.drop(columns=list(FILTER_TABLES.values())), path)
        paths["index"].append(str(path))
        for name, column in FILTER_TABLES.items():
            rows = frame[[KEY, column]]
            if name in ("assign", "aesthetic"):
                rows = rows[(frame["status"] == "ok") & frame[column].notna()]
            if name == "assign":
                rows = rows.astype({"cluster": "int32"})
            path = directory / name / f"{part}.parquet"
            write_parquet(rows.reset_index(drop=True), path)
            paths[name].append(str(path))
        keys = [k for k in frame[KEY] if k in embeddings]
        m = np.stack([embeddings[k] for k in keys]).astype(np.float32) if keys else np.empty((0, 3), np.float32)
        path = directory / "embed" / f"{part}.parquet"
        write_embeddings(keys, m, m, path)
        paths["embed"].append(str(path))
    return paths


ENGINE = Engine(mem_mb=500, threads=2)


def fix_of(tmp_path, paths, settings, engine=ENGINE):
    """The fix's keys and stats from the per-part files (parrotscope.filters.run_fix)."""
    fix = {"clip_threshold": settings.clip_threshold, "dedup_threshold": settings.dedup_threshold,
           "aesthetic_threshold": settings.aesthetic_threshold}
    out = tmp_path / "fix"
    stats = run_fix(paths["index"], str(out / "keys.parquet"), str(out / "stats.json"), "ref", fix, paths["assign"],
                    paths["embed"], paths["aesthetic"] if settings.aesthetic_threshold is not None else [],
                    Engine(engine.mem_mb, engine.threads, str(tmp_path)))
    assert read_json(out / "stats.json") == json.loads(json.dumps(stats))
    return pd.read_parquet(out / "keys.parquet"), stats


def baseline_of(tmp_path, paths, method, size, seed=0, fractions=None, engine=ENGINE):
    """A baseline's keys and stats from the per-part files (parrotscope.filters.run_baseline)."""
    (tmp_path / "fix_stats.json").write_text(json.dumps({"n_selected": size}))
    variant = VARIANT_OF.get(method)
    out = tmp_path / method
    stats = run_baseline(method, paths["index"], str(tmp_path / "fix_stats.json"), str(out / "keys.parquet"),
                         str(out / "stats.json"), "ref", seed, fractions or FRACTIONS,
                         paths[variant] if variant else [], Engine(engine.mem_mb, engine.threads, str(tmp_path)))
    assert read_json(out / "stats.json") == json.loads(json.dumps(stats))
    return pd.read_parquet(out / "keys.parquet"), stats


def same_keys(got, expected):
    assert list(got.columns) == [KEY, "part", "shard"]
    assert got.astype(object).values.tolist() == expected.astype(object).values.tolist()


# --- the fix and the baselines on a tiny pool with known answers ---------------------------------


def tiny_pool():
    """Ten samples with known answers (scorer `ref`)."""
    return pd.DataFrame({
        KEY: [f"k{i}" for i in range(10)],
        "part": ["p00000"] * 5 + ["p00001"] * 5,
        "shard": ["s0.tar"] * 5 + ["s1.tar"] * 5,
        "status": ["ok"] * 9 + ["corrupt_image"],
        "has_text": [False, False, False, False, False, False, True, True, True, None],
        "is_parrot": [False] * 6 + [True, True, False, None],
        "cotr": [0.0] * 6 + [1.0, 0.5, 0.0, np.nan],
        "ref.s_raw": [0.40, 0.35, 0.32, 0.31, 0.20, 0.36, 0.45, 0.41, 0.38, np.nan],
        "aesthetic": [5.0, 4.0, 6.0, 6.0, 6.0, 6.0, 6.0, 6.0, 6.0, np.nan],
        "cluster": [0, 0, 0, 1, 1, 1, 2, 2, 2, np.nan],
        "s_tmars": [np.nan] * 6 + [0.10, 0.40, 0.37, np.nan],
        "s_flip": [0.39, 0.33, 0.30, 0.31, 0.21, 0.35, 0.20, 0.25, 0.36, np.nan],
    })


EMB = {  # k0 and k2 are near-copies (cluster 0); k3 and k5 are copies too (cluster 1)
    "k0": [1, 0, 0], "k1": [0, 1, 0], "k2": [1, 0.05, 0], "k3": [0, 0, 1], "k4": [0, 1, 1], "k5": [0, 0.02, 1],
}
TINY_EMB = {k: unit(v)[0] for k, v in EMB.items()}


@pytest.fixture
def tiny(tmp_path):
    """The tiny pool's per-part files; samples with text (k6-k8) have no embedding: only the
    samples that reach deduplication need one."""
    return write_dataset(tmp_path, tiny_pool(), TINY_EMB)


def test_fix_removes_text_low_scores_low_aesthetics_and_duplicates(tmp_path, tiny):
    keys, stats = fix_of(tmp_path, tiny, FixSettings(0.3, 0.99, 4.5))
    # text: k6-k8 out; S <= 0.3: k4; aesthetic <= 4.5: k1; duplicates: k2 (of k0), k3 (of k5, higher S).
    assert keys[KEY].tolist() == ["k0", "k5"]
    assert list(keys.columns) == [KEY, "part", "shard"] and keys["part"].tolist() == ["p00000", "p00001"]
    assert stats["removed"] == {"spotted text": 3, "CLIP score <= 0.3": 1, "aesthetic <= 4.5": 1,
                                "near-duplicate in its cluster (cosine >= 0.99)": 2}
    assert (stats["n_index"], stats["n_ok"], stats["n_skipped"], stats["n_selected"]) == (10, 9, 1, 2)
    assert stats["n_ok"] == sum(stats["removed"].values()) + stats["n_selected"]
    assert stats["shares"]["share parrot"] == 0.0 and stats["mean_s_raw"] == pytest.approx(0.38)
    ref_k, ref_s = ref_fix(ref_pool(tiny, "ref", aesthetic=True), "ref", FixSettings(0.3, 0.99, 4.5), TINY_EMB)
    same_keys(keys, ref_k)
    assert_same_stats(stats, ref_s)


def test_fix_without_aesthetics(tmp_path, tiny):
    keys, stats = fix_of(tmp_path, tiny, FixSettings(0.3, 0.99))
    assert keys[KEY].tolist() == ["k0", "k1", "k5"]
    assert list(stats["removed"]) == ["spotted text", "CLIP score <= 0.3",
                                      "near-duplicate in its cluster (cosine >= 0.99)"]
    assert stats["n_clusters_left"] == 2


def test_fix_that_keeps_nothing_writes_an_empty_subset(tmp_path, tiny):
    keys, stats = fix_of(tmp_path, tiny, FixSettings(0.9, 0.99))
    assert keys.empty and list(keys.columns) == [KEY, "part", "shard"]
    assert stats["n_selected"] == 0 and stats["removed"]["CLIP score <= 0.9"] == 6
    assert stats["mean_s_raw"] is None and stats["shares"]["share w/ text"] is None


def test_fix_needs_clusters_and_embeddings_for_survivors(tmp_path):
    pool = tiny_pool()
    pool.loc[0, "cluster"] = np.nan
    paths = write_dataset(tmp_path / "a", pool, TINY_EMB)
    with pytest.raises(FilterError, match=r"no cluster assignment, e.g. \['k0'\]"):
        fix_of(tmp_path / "a", paths, FixSettings(0.3, 0.99))
    paths = write_dataset(tmp_path / "b", tiny_pool(), {k: v for k, v in TINY_EMB.items() if k != "k3"})
    with pytest.raises(FilterError, match=r"1 samples that reach deduplication have no image embedding, e.g. \['k3'\]"):
        fix_of(tmp_path / "b", paths, FixSettings(0.3, 0.99))


def test_filter_tables_join_by_key_and_refuse_stale_or_repeated_keys(tmp_path, tiny):
    # The assignment of one part rewritten in reverse row order: joined by key, nothing changes.
    assign = pd.read_parquet(tiny["assign"][0])
    write_parquet(assign.iloc[::-1].reset_index(drop=True), tiny["assign"][0])
    assert fix_of(tmp_path, tiny, FixSettings(0.3, 0.99, 4.5))[0][KEY].tolist() == ["k0", "k5"]
    write_parquet(pd.concat([assign, pd.DataFrame({KEY: ["zz"], "cluster": [1]}).astype({"cluster": "int32"})]),
                  tiny["assign"][0])
    with pytest.raises(FilterError, match=r"cluster assignment: 1 keys are not in the index, e.g. \['zz'\]"):
        fix_of(tmp_path, tiny, FixSettings(0.3, 0.99))
    write_parquet(assign.iloc[:1], tiny["assign"][1])  # k0 again, in the other part's table
    write_parquet(assign, tiny["assign"][0])
    with pytest.raises(FilterError, match=r"cluster assignment: keys repeat across parts, e.g. \['k0'\]"):
        fix_of(tmp_path, tiny, FixSettings(0.3, 0.99))
    with pytest.raises(FilterError, match=r"tmars scores: 5 samples of the index are missing"):
        baseline_of(tmp_path, {**tiny, "tmars": tiny["tmars"][:1]}, "tmars", 2)
    with pytest.raises(FilterError, match="filters.scorer"):
        run_baseline("random", tiny["index"], str(tmp_path / "fix_stats.json"), str(tmp_path / "k.parquet"),
                     str(tmp_path / "s.json"), "openai", 0, FRACTIONS, [], ENGINE)


FRACTIONS = {"clip_score": 0.3, "flip_clip": 0.3}


def test_top_fraction_and_median_break_ties_by_key(tmp_path):
    # Five ok samples, scores b 0.5, a 0.5, c 0.4, d NaN, e 0.1 (float64 here).
    pool = pd.DataFrame({KEY: ["b", "a", "c", "d", "e"], "part": "p00000", "shard": "s", "status": "ok",
                         "has_text": False, "ref.s_raw": [0.5, 0.5, 0.4, np.nan, 0.1], "cluster": 0,
                         "aesthetic": 5.0, "s_tmars": np.nan, "s_flip": np.nan})
    paths = write_dataset(tmp_path, pool, {})
    # ceil(0.25 * 4 finite scores) = 1: of the tie at 0.5, key "a" comes first; size 2 > 1: the two best.
    keys, stats = baseline_of(tmp_path, paths, "clip_score", 1, fractions={"clip_score": 0.25})
    assert keys[KEY].tolist() == ["a"] and stats["n_eligible"] == 1
    keys, stats = baseline_of(tmp_path, paths, "clip_score", 2, fractions={"clip_score": 0.3})  # ceil(1.2) = 2
    assert keys[KEY].tolist() == ["a", "b"] and stats["n_eligible"] == 2 and stats["shortfall"] == 0
    keys, stats = baseline_of(tmp_path, paths, "tmars", 2)  # median of 4 finite = (0.4 + 0.5) / 2
    assert stats["median_score"] == (0.4 + 0.5) / 2 and stats["n_eligible"] == 2 and keys[KEY].tolist() == ["a", "b"]
    keys, stats = baseline_of(tmp_path, paths, "clip_score", 3, fractions={"clip_score": 0.25})
    assert keys[KEY].tolist() == ["a", "b", "c"] and stats["shortfall"] == 2 and stats["score_at_cut"] == 0.4
    with pytest.raises(SubsetTooSmall):
        baseline_of(tmp_path, paths, "clip_score", 5)


def test_clip_score_baseline_top_30_percent_then_uniform(tmp_path, tiny):
    keys, stats = baseline_of(tmp_path, tiny, "clip_score", 2)
    # ceil(0.3 * 9) = 3 eligible: k6 (0.45), k7 (0.41), k0 (0.40); 2 drawn among them.
    assert set(keys[KEY]) < {"k6", "k7", "k0"} and len(keys) == 2
    assert (stats["n_eligible"], stats["shortfall"], stats["n_selected"]) == (3, 0, 2)
    again, _ = baseline_of(tmp_path, tiny, "clip_score", 2)
    assert keys.equals(again)


def test_clip_score_baseline_shortfall_takes_the_best(tmp_path, tiny):
    keys, stats = baseline_of(tmp_path, tiny, "clip_score", 5)
    assert set(keys[KEY]) == {"k6", "k7", "k0", "k8", "k5"} and stats["shortfall"] == 2
    assert stats["score_at_cut"] == pytest.approx(0.36)


def test_tmars_masks_text_images_and_keeps_text_free_scores(tmp_path, tiny):
    keys, stats = baseline_of(tmp_path, tiny, "tmars", 5)
    # Masked scores: text-free images keep S(raw), k6 0.10, k7 0.40, k8 0.37; the median of the
    # nine is 0.35, reached by k0 0.40, k1 0.35, k5 0.36, k7 0.40 and k8 0.37: five.
    assert set(keys[KEY]) == {"k0", "k1", "k5", "k7", "k8"}
    assert stats["median_score"] == pytest.approx(0.35) and stats["n_eligible"] == 5
    assert "k6" not in set(keys[KEY])  # its score came from the text: masked, it drops


def test_flip_and_random_baselines(tmp_path, tiny):
    keys, stats = baseline_of(tmp_path, tiny, "flip_clip", 3)
    assert set(keys[KEY]) == {"k0", "k8", "k5"} and stats["n_eligible"] == 3  # top 3 flipped scores
    keys, stats = baseline_of(tmp_path, tiny, "random", 4)
    assert len(keys) == 4 and "k9" not in set(keys[KEY]) and stats["n_eligible"] == 9
    shuffled = write_dataset(tmp_path / "shuffled", tiny_pool().sample(frac=1, random_state=1), TINY_EMB)
    again, _ = baseline_of(tmp_path, shuffled, "random", 4)
    assert keys[KEY].tolist() == again[KEY].tolist()  # by key, not by row order


def test_tmars_needs_masked_scores_for_text_images(tmp_path):
    pool = tiny_pool()
    pool.loc[6, "s_tmars"] = np.nan
    paths = write_dataset(tmp_path, pool, TINY_EMB)
    with pytest.raises(FilterError, match=r"no masked score, e.g. \['k6'\]"):
        baseline_of(tmp_path, paths, "tmars", 3)
    with pytest.raises(FilterError, match="the fix kept no sample"):
        baseline_of(tmp_path, paths, "random", 0)


# --- the queries against the reference on hand-made multi-part pools ---------------------------


def messy_pool(seed, n=90, parts=3):
    """Parts with unsorted keys, failed samples, undefined flags, float32 scores on a coarse grid
    (ties everywhere, some exactly float32(0.3) at the threshold), NaN and infinite scores,
    aesthetics at the threshold, groups of near-duplicate images in a few clusters, and a held-out
    split (Fig. 9) that no filter may take."""
    rng = np.random.default_rng(seed)
    keys = [f"{rng.integers(1e6):06d}-{i}" for i in range(n)]
    grid = np.array([0.1, 0.25, 0.3, 0.3, 0.35, 0.4, 0.4, 0.55, np.nan], dtype=np.float32)
    s_raw = rng.choice(grid, n)
    s_raw[rng.choice(n, 2, replace=False)] = np.inf
    status = rng.choice(["ok"] * 8 + ["corrupt_image", "spot_failed"], n)
    has_text = rng.choice(np.array([True, False, False, None], dtype=object), n)
    parrot = [None if t is None else bool(t and rng.random() < 0.6) for t in has_text]
    pool = pd.DataFrame({
        KEY: keys, "part": [f"p{i % parts:05d}" for i in range(n)], "shard": [f"s{i % parts}.tar" for i in range(n)],
        "status": status, "has_text": has_text, "is_parrot": parrot,
        "gt_has_text": rng.choice(np.array([True, False], dtype=object), n),
        "cotr": np.where(rng.random(n) < 0.2, np.nan, rng.choice([0.0, 1 / 3, 0.5, 1.0], n)),
        "ref.s_raw": s_raw,
        "ref.rsa": rng.normal(0, 0.05, n).astype(np.float32),
        "aesthetic": rng.choice(np.array([4.0, 4.5, 4.5, 5.0, 6.25, np.nan], dtype=np.float32), n),
        "cluster": rng.integers(0, 4, n).astype(float),
        "s_tmars": np.where(has_text == True, rng.choice(grid[:-1], n), np.nan).astype(np.float32),  # noqa: E712
        "s_flip": rng.choice(grid, n),
        "heldout": np.random.default_rng([seed, 9]).random(n) < 0.1,  # its own stream: the rest as before
    })
    pool.loc[pool["status"] != "ok", ["ref.s_raw", "cluster"]] = np.nan
    base = rng.normal(size=(3, 8)).astype(np.float32)  # the same three looks in every cluster
    emb = {k: base[rng.integers(3)] + rng.normal(0, 0.02, 8).astype(np.float32) for k in keys}
    return pool, emb


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fix_and_baselines_equal_the_reference_on_messy_parts(tmp_path, seed):
    pool, emb = messy_pool(seed)
    paths = write_dataset(tmp_path, pool, emb)
    for settings in (FixSettings(0.3, 0.98, 4.5), FixSettings(0.25, 0.999)):
        keys, stats = fix_of(tmp_path, paths, settings)
        ref_k, ref_s = ref_fix(ref_pool(paths, "ref", settings.aesthetic_threshold is not None), "ref", settings, emb)
        same_keys(keys, ref_k)
        assert_same_stats(stats, ref_s)
        assert stats["removed"][f"near-duplicate in its cluster (cosine >= {settings.dedup_threshold})"] > 0
    shortfalls = set()
    for method in ("clip_score", "tmars", "flip_clip", "random"):
        for size in (5, 20, 40):
            for fractions in (FRACTIONS, {"clip_score": 0.5, "flip_clip": 0.15}):
                keys, stats = baseline_of(tmp_path, paths, method, size, seed, fractions)
                ref_k, ref_s = ref_baseline(method, ref_pool(paths, "ref", variant=VARIANT_OF.get(method)), "ref",
                                            size, seed, fractions)
                same_keys(keys, ref_k)
                assert_same_stats(stats, ref_s)
                shortfalls.add(bool(stats["shortfall"]))
    assert shortfalls == {True, False}


@pytest.mark.parametrize("partitions", [3, 7])
def test_the_fix_in_hash_partitions_equals_the_reference(tmp_path, partitions, monkeypatch):
    """Past the engine's memory the fix's joins run in hash partitions of the keys: the same
    keys and stats (counts add up, the clusters' survivors meet in one folder per cluster)."""
    import parrotscope.filters as filters

    monkeypatch.setattr(filters, "hash_partitions", lambda con, paths, row_bytes: partitions)
    pool, emb = messy_pool(1)
    paths = write_dataset(tmp_path, pool, emb)
    for settings in (FixSettings(0.3, 0.98, 4.5), FixSettings(0.25, 0.999), FixSettings(2.0, 0.98)):
        keys, stats = fix_of(tmp_path, paths, settings)
        ref_k, ref_s = ref_fix(ref_pool(paths, "ref", settings.aesthetic_threshold is not None), "ref", settings, emb)
        same_keys(keys, ref_k)
        assert_same_stats(stats, ref_s)


@pytest.mark.parametrize("partitions", [3, 7])
def test_baselines_in_hash_partitions_equal_the_reference(tmp_path, partitions, monkeypatch):
    """Past the engine's memory the baselines' join with the re-scores runs in hash partitions of
    the keys: the same keys and stats, and a missing masked score is still found."""
    import parrotscope.filters as filters

    monkeypatch.setattr(filters, "hash_partitions", lambda con, paths, row_bytes: partitions)
    pool, emb = messy_pool(2)
    paths = write_dataset(tmp_path, pool, emb)
    for method in ("tmars", "flip_clip"):
        for size in (5, 40):
            keys, stats = baseline_of(tmp_path, paths, method, size, 2, FRACTIONS)
            ref_k, ref_s = ref_baseline(method, ref_pool(paths, "ref", variant=VARIANT_OF[method]), "ref",
                                        size, 2, FRACTIONS)
            same_keys(keys, ref_k)
            assert_same_stats(stats, ref_s)


def test_float32_scores_compare_as_pandas_does(tmp_path):
    """A float32 score of exactly float32(0.3) is not above 0.3 for pandas (NumPy compares in
    float32) though it is above 0.3 as a float64; the queries keep pandas' answer."""
    pool = pd.DataFrame({KEY: ["a", "b", "c"], "part": "p00000", "shard": "s", "status": "ok", "has_text": False,
                         "ref.s_raw": np.array([0.3, 0.31, np.nan], np.float32), "cluster": [0.0, 1.0, 2.0],
                         "aesthetic": np.array([4.5, 4.6, 5], np.float32), "s_tmars": np.nan, "s_flip": np.nan})
    assert float(np.float32(0.3)) > 0.3
    paths = write_dataset(tmp_path, pool, {k: np.ones(3, np.float32) for k in "abc"})
    keys, stats = fix_of(tmp_path, paths, FixSettings(0.3, 0.99, 4.5))
    assert keys[KEY].tolist() == ["b"] and stats["removed"]["CLIP score <= 0.3"] == 2


def test_queries_run_within_a_small_engine_with_spilling(tmp_path):
    pool, emb = messy_pool(5, n=400, parts=5)
    paths = write_dataset(tmp_path, pool, emb)
    small = Engine(mem_mb=300, threads=1)
    keys, stats = fix_of(tmp_path, paths, FixSettings(0.3, 0.98), small)
    ref_k, _ = ref_fix(ref_pool(paths, "ref"), "ref", FixSettings(0.3, 0.98), emb)
    same_keys(keys, ref_k)
    keys, _ = baseline_of(tmp_path, paths, "tmars", 50, 3, engine=small)
    same_keys(keys, ref_baseline("tmars", ref_pool(paths, "ref", variant="tmars"), "ref", 50, 3, FRACTIONS)[0])
    assert not list(tmp_path.glob("filter-*"))  # the scratch tables are gone


def test_run_fix_and_baselines_join_part_tables_by_key(tmp_path):
    pool = tiny_pool()
    index = pool.sample(frac=1, random_state=0)  # parts in another row order than the filter tables
    paths = write_dataset(tmp_path, index, TINY_EMB)
    for name in FILTER_TABLES:
        paths[name] = write_dataset(tmp_path / "sorted", pool, TINY_EMB)[name]
    keys, stats = fix_of(tmp_path, paths, FixSettings(0.3, 0.99, 4.5))
    assert keys[KEY].tolist() == ["k0", "k5"]
    keys, stats = baseline_of(tmp_path, paths, "tmars", 2)
    assert stats["size"] == 2 and len(keys) == 2


# --- configuration -------------------------------------------------------------------------------


def test_check_filters_names_mistakes():
    config = {"score": {"scorers": {"ref": {"arch": "tiny-rn"}}}, "curate": {"subsets": {"random": []}},
              "filters": {"baselines": ["clip_score", "random"], "references": ["filter_random", "pool", "random"]}}
    check_filters(config)
    with pytest.raises(FilterError, match="filters.scorer"):
        check_filters({**config, "filters": {**config["filters"], "scorer": "openai"}})
    with pytest.raises(FilterError, match="names of filter subsets"):
        check_filters({**config, "curate": {"subsets": {"filter_fix": []}}})
    with pytest.raises(FilterError, match="references"):
        check_filters({**config, "filters": {**config["filters"], "references": ["filter_tmars"]}})
    with pytest.raises(FilterError, match="ViT-L/14"):
        check_filters({**config, "filters": {**config["filters"], "aesthetic": {"scorer": "vitl"}}})


# --- the workflow on the tiny config -------------------------------------------------------------


@pytest.fixture(scope="module")
def filters_run(tiny_default):
    """The filters table and Table 10 come with the tiny config's whole default run."""
    return tiny_default


FILTER_ROWS = ["filter_fix", "filter_clip_score", "filter_tmars", "filter_flip_clip", "filter_random"]


@pytest.mark.slow
def test_workflow_builds_both_tables_from_equal_size_subsets(filters_run):
    subsets = filters_run / "results" / "demo" / "subsets"
    fix = read_json(subsets / "filter_fix" / "stats.json")
    assert fix["n_index"] + fix["n_heldout"] == 24 and fix["n_ok"] + fix["n_skipped"] == fix["n_index"]
    assert fix["n_ok"] == sum(fix["removed"].values()) + fix["n_selected"]
    assert fix["removed"]["spotted text"] > 0 and fix["shares"]["share w/ text"] == 0.0
    table = pd.read_csv(filters_run / "results" / "table_filters.csv", index_col=0)
    assert list(table.index) == FILTER_ROWS
    assert (table["samples"] == fix["n_selected"]).all()
    for column in ("tiny-rn IN", "tiny-rn Ret.", "tiny-rn Sync. Score", "share parrot", "share w/ text (truth)"):
        assert table[column].between(-1, 1).all(), column
    for name in FILTER_ROWS:  # every subset was materialised with its own keys
        keys = pd.read_parquet(subsets / name / "keys.parquet")
        assert len(keys) == fix["n_selected"] and keys[KEY].is_unique
        assert sum(json.loads((subsets / name / "shards" / "sizes.json").read_text()).values()) == len(keys)
    table10 = pd.read_csv(filters_run / "results" / "table10.csv", index_col=0)
    assert list(table10.columns) == ["filter_fix", "filter_random", "pool"]
    assert {"Data", "Sync. Score ↓", "IN", "Retrieval", "Avg."} <= set(table10.index)
    assert table10.loc["Data", "pool"] == "24 (demo)"


@pytest.mark.slow
def test_workflow_rescores_text_images_for_tmars_and_every_image_flipped(filters_run):
    demo = filters_run / "results" / "demo"
    index = pd.read_parquet(demo / "index", columns=[KEY, "has_text", "status"]).set_index(KEY)
    for variant, column in (("tmars", "s_tmars"), ("flip", "s_flip")):
        table = pd.concat(pd.read_parquet(p) for p in sorted((demo / "filters" / variant / "ref").glob("*.parquet")))
        assert set(table[KEY]) == set(index.index)
        scored = table.set_index(KEY)[column].notna()
        expected = index["has_text"].fillna(False).astype(bool) if variant == "tmars" else index["status"] == "ok"
        assert scored.sort_index().equals(expected.sort_index().rename(column))


@pytest.mark.slow
def test_filter_settings_rerun_exactly_what_they_affect(filters_run):
    from workflow import planned_jobs

    targets = ("results/table_filters.csv", "results/table10.csv")
    assert planned_jobs(filters_run, *targets) == {}

    def plan(name, text):
        path = filters_run / f"{name}.yaml"
        path.write_text(text)
        return planned_jobs(filters_run, *targets, "--configfile", str(path))

    # T-MARS's masking: its two part jobs and its own subset onwards; flip-CLIP and the fix stay.
    jobs = plan("ring", "filters:\n  tmars:\n    ring_px: 5\n")
    # The filters' materialise pass rereads both parts; only T-MARS's subset is resharded (the
    # others' pieces are rewritten unchanged and are ancient() inputs of their reduce).
    # (results/table_filters.csv is the study dataset's table, copied by study_table.)
    assert jobs == {"filter_rescore": 2, "filter_baseline": 1, "materialise_map_filters": 2, "materialise_reduce": 1,
                    "train": 1, "evaluate": 1, "evaluate_sync": 1, "table_filters": 1, "study_table": 1}
    # The fix's threshold: the fix and every baseline (their size follows it), no re-scoring.
    jobs = plan("threshold", "filters:\n  fix:\n    clip_threshold: -0.9\n    dedup_threshold: 1.0\n")
    assert jobs["filter_fix"] == 1 and jobs["filter_baseline"] == 4 and "filter_rescore" not in jobs


def test_greedy_keep_first_equals_the_definition_on_near_duplicates():
    """Row by row against every earlier kept row (the definition), on rows drawn around a few
    looks so that near-duplicates fall inside blocks and across them."""
    rng = np.random.default_rng(3)
    looks = rng.normal(size=(6, 8))
    emb = looks[rng.integers(6, size=300)] + rng.normal(0, 0.15, (300, 8))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    for threshold in (0.9, 0.97, 0.995):
        want, kept = [], []
        for row in emb:
            keep = not kept or float((emb[kept] @ row).max()) < threshold
            want.append(keep)
            kept += [len(want) - 1] if keep else []
        for block in (7, 64, 1024):
            assert greedy_keep_first(emb, threshold, block=block).tolist() == want, (threshold, block)
