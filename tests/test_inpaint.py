"""Text removal: masks, the three inpainters (real code paths, tiny models) and the part driver."""

import io
import json

import cv2
import numpy as np
import pandas as pd
import pytest
import webdataset as wds
from PIL import Image

from parrotscope import inpaint
from parrotscope.inpaint import (
    INPAINTERS, Inpainter, build_masks, derangement, make_inpainter, plan_masks, rasterise,
    run_inpaint, scale_polygons, word_polygons,
)
from parrotscope.inpainted import read_inpainted
from parrotscope.io import write_parquet
from parrotscope.tiny_weights import write_fake_lama, write_tiny_sd
from parrotscope.match import Normalisation

NORM = Normalisation()

# The LaMa stand-in is made with torch.jit.script, the way big-lama.pt itself was exported.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")


def box(x0, y0, x1, y1):
    """A flat axis-aligned quadrilateral, as the spot table stores word polygons."""
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def spot_row(key, w, h, words, polygons, status="ok"):
    return {"__key__": key, "status": status, "width": w, "height": h, "words": words,
            "polygons": polygons, "n_words": len(words)}


def match_row(key, co_words, has_text, status="ok"):
    return {"__key__": key, "status": status, "co_words": co_words, "has_text": has_text}


@pytest.fixture
def tables():
    """Three images with text (different sizes, one without co-embedded words), one without text."""
    spot = pd.DataFrame([
        spot_row("a", 120, 60, ["SALE", "parrot!", "xyz"], [box(5, 5, 35, 20), box(40, 5, 80, 20), box(5, 40, 50, 55)]),
        spot_row("b", 60, 30, ["hello"], [box(10, 10, 30, 20)]),
        spot_row("c", 200, 100, ["Café"], [box(100, 50, 160, 80)]),
        spot_row("d", 50, 50, [], []),
    ])
    match = pd.DataFrame([
        match_row("a", ["sale", "parrot"], True),
        match_row("b", [], True),
        match_row("c", ["cafe"], True),
        match_row("d", [], False),
    ])
    return spot, match


# ---------------------------------------------------------------------------------------------
# Masks


def test_word_polygons_reshapes_flat_lists():
    polys = word_polygons({"__key__": "k", "polygons": [box(1, 2, 3, 4)]})
    assert len(polys) == 1 and polys[0].shape == (4, 2)
    assert polys[0][2].tolist() == [3, 4]
    with pytest.raises(ValueError, match="polygon"):
        word_polygons({"__key__": "k", "polygons": [[1, 2, 3]]})


def test_rasterised_box_covers_exactly_the_box():
    mask = rasterise([np.array(box(10, 5, 30, 15), float).reshape(-1, 2)], 40, 50)
    assert mask.dtype == np.uint8 and mask.shape == (40, 50)
    assert (mask[5:16, 10:31] == 255).all()
    assert np.count_nonzero(mask) == 21 * 11


@pytest.mark.parametrize("d", [1, 3, 6])
def test_dilation_grows_by_dilate_px(d):
    poly = [np.array(box(20, 20, 30, 25), float).reshape(-1, 2)]
    base = rasterise(poly, 60, 60)
    grown = rasterise(poly, 60, 60, dilate_px=d)
    assert (grown[base > 0] == 255).all()
    ys, xs = np.nonzero(grown)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (20 - d, 25 + d, 20 - d, 30 + d)
    # a disc, not a square: the corner at distance d*sqrt(2) stays empty
    assert grown[20 - d, 20 - d] == 0


def test_derangement_never_fixes_a_point_and_is_deterministic():
    for n in (2, 3, 4, 7, 50):
        for seed in range(200):
            perm = derangement(n, seed)
            assert sorted(perm.tolist()) == list(range(n))
            assert not np.any(perm == np.arange(n))
        assert derangement(n, 5).tolist() == derangement(n, 5).tolist()
    assert len({tuple(derangement(7, s)) for s in range(20)}) > 1
    assert derangement(0, 0).tolist() == []
    with pytest.raises(ValueError, match="single image"):
        derangement(1, 0)


def test_scale_polygons_per_axis():
    (p,) = scale_polygons([np.array(box(20, 10, 60, 30), float).reshape(-1, 2)], (100, 200), (50, 100))
    assert p.reshape(-1).tolist() == box(10, 5, 30, 15)


def test_co_mask_is_the_caption_words_only(tables):
    spot, match = tables
    all_ = {k: (m, p) for k, m, p in build_masks(spot, match, "all", 0, 0, NORM)}
    co = {k: (m, p) for k, m, p in build_masks(spot, match, "co", 0, 0, NORM)}
    assert sorted(all_) == sorted(co) == ["a", "b", "c"]  # "d" has no text
    m_all, m_co = all_["a"][0], co["a"][0]
    assert not np.any(m_co & ~m_all)  # co is a subset of all
    assert m_co[45, 20] == 0 and m_all[45, 20] == 255  # "xyz" is not in the caption
    assert m_co[10, 20] == 255 and m_co[10, 60] == 255  # "SALE" and "parrot!" normalise into co_words
    assert co["a"][1].words == ("SALE", "parrot!")
    assert co["b"][1].status == "empty_mask" and not co["b"][0].any()
    assert co["c"][1].status == "inpainted"  # "Café" -> "cafe" with accents stripped
    strict = plan_masks(spot, match, "co", 0, Normalisation(strip_accents=False))
    assert strict["c"].status == "empty_mask"


def test_random_masks_come_from_a_donor_scaled_to_the_target(tables):
    spot, match = tables
    plans = plan_masks(spot, match, "rand_all", 3, NORM)
    keys = sorted(plans)
    perm = derangement(3, 3)
    own = {k: word_polygons(spot.set_index("__key__").loc[k].to_dict() | {"__key__": k}) for k in keys}
    size = {r["__key__"]: (r["height"], r["width"]) for r in spot.to_dict("records")}
    for i, key in enumerate(keys):
        plan = plans[key]
        assert plan.donor == keys[perm[i]] != key
        expected = scale_polygons(own[plan.donor], size[plan.donor], size[key])
        np.testing.assert_allclose(np.stack(plan.polygons), np.stack(expected))
        mask = plan.mask(1)
        assert mask.shape == size[key]
        np.testing.assert_array_equal(mask, rasterise(expected, *size[key], 1))
    # rand_co takes its donor among the images with co-embedded words ("a", "c"; "b" has none),
    # so every image gets a non-empty control mask of another image's co-embedded words
    co = plan_masks(spot, match, "co", 3, NORM)
    with_co = {k for k, p in co.items() if p.status == "inpainted"}
    assert with_co == {"a", "c"}
    for seed in range(10):
        rand_co = plan_masks(spot, match, "rand_co", seed, NORM)
        for key, p in rand_co.items():
            assert p.donor in with_co and p.donor != key and p.status == "inpainted"
            assert p.words == co[p.donor].words
        again = plan_masks(spot, match, "rand_co", seed, NORM)  # seeded
        assert {k: p.donor for k, p in again.items()} == {k: p.donor for k, p in rand_co.items()}


def test_co_donors_are_uniform_among_the_others_with_regions():
    from collections import Counter

    from parrotscope.inpaint import co_donors

    has = [True, False, True, True, False]
    picks = Counter()
    for seed in range(600):
        d = co_donors(has, seed)
        assert d[0] in (2, 3) and d[2] in (0, 3) and d[3] in (0, 2) and d[1] in (0, 2, 3)
        picks[int(d[1])] += 1
    assert all(150 < picks[k] < 250 for k in (0, 2, 3))  # ~200 each
    assert co_donors([True], 0).tolist() == [-1] and co_donors([False, False], 0).tolist() == [-1, -1]


def test_random_control_needs_two_images(tables):
    spot, match = tables
    one = match.assign(has_text=match["__key__"].eq("a"))
    plans = plan_masks(spot, one, "rand_co", 0, NORM)
    assert list(plans) == ["a"] and plans["a"].status == "no_donor" and plans["a"].donor is None
    assert plan_masks(spot, one, "co", 0, NORM)["a"].status == "inpainted"


# ---------------------------------------------------------------------------------------------
# Telea


def rendered_word(h=48, w=96, bg=(200, 180, 120), fg=(20, 20, 20)):
    """A word in dark ink on a flat background, and the polygon of its ink box."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = bg
    (tw, th), base = cv2.getTextSize("TEXT", cv2.FONT_HERSHEY_SIMPLEX, 0.8, 2)
    x, y = (w - tw) // 2, (h + th) // 2
    cv2.putText(img, "TEXT", (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.8, fg, 2, cv2.LINE_AA)
    return img, [np.array(box(x - 1, y - th - 1, x + tw + 1, y + base), float).reshape(-1, 2)]


def test_telea_removes_the_word_and_keeps_the_rest():
    img, polys = rendered_word()
    mask = rasterise(polys, *img.shape[:2], dilate_px=2)
    assert (img[mask == 0] == (200, 180, 120)).all()  # the whole word lies inside the mask
    (out,) = make_inpainter("telea", {"radius": 3}).inpaint_batch([img], [mask], ["k"])
    assert out.shape == img.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[mask == 0], img[mask == 0])
    inside = out[mask > 0].astype(float)
    assert np.abs(inside.mean(axis=0) - (200, 180, 120)).max() < 6  # RGB order kept
    assert (inside.sum(axis=1) < 300).mean() < 0.01  # no dark ink left
    assert make_inpainter("telea", {}).inpaint_batch([img], [np.zeros_like(mask)], ["k"])[0].tolist() == img.tolist()


def test_make_inpainter_rejects_unknown_methods_and_options():
    with pytest.raises(ValueError, match="inpaint.method"):
        make_inpainter("photoshop", {})
    with pytest.raises(ValueError, match="unknown options"):
        make_inpainter("telea", {"radius": 3, "radus": 4})


# ---------------------------------------------------------------------------------------------
# LaMa (a TorchScript stand-in with big-lama's call signature)


@pytest.fixture(scope="module")
def fake_lama(tmp_path_factory):
    return write_fake_lama(tmp_path_factory.mktemp("lama") / "big-lama.pt")


def test_lama_pads_and_crops_back(fake_lama):
    lama = make_inpainter("lama", {"checkpoint": str(fake_lama), "device": "cpu", "threads": 1})
    rng = np.random.default_rng(0)
    sizes = [(37, 53), (40, 64), (37, 53), (5, 3)]
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    masks = [np.zeros((h, w), np.uint8) for h, w in sizes]
    for m in masks:
        m[1:, 1:] = 255  # reaches the bottom-right edges, where the padding goes
    outs = lama.inpaint_batch(images, masks, ["a", "b", "c", "d"])
    for img, mask, out in zip(images, masks, outs):
        assert out.shape == img.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out[mask == 0], img[mask == 0])
        # position-preserving stand-in: any shift from padding or cropping would show here
        np.testing.assert_array_equal(out[mask > 0], img[mask > 0][:, ::-1])


def test_lama_missing_checkpoint_names_the_config_key(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"inpaint\.lama\.checkpoint"):
        make_inpainter("lama", {"checkpoint": str(tmp_path / "nope.pt")})
    with pytest.raises(ValueError, match=r"inpaint\.lama\.checkpoint"):
        make_inpainter("lama", {})


# ---------------------------------------------------------------------------------------------
# Stable Diffusion (a tiny random pipeline built offline)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    yield write_tiny_sd(tmp_path_factory.mktemp("sd"))
    torch.set_num_threads(threads)


def test_sd_keeps_size_and_outside_pixels_and_is_seeded_per_key(tiny_sd):
    # one thread: on two shared cores torch's default threading is many times slower
    sd = make_inpainter("sd", {"model": str(tiny_sd), "steps": 2, "resolution": 32, "seed": 7,
                               "prompt": "background", "device": "cpu", "threads": 1})
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(2)]
    masks = [np.zeros((48, 64), np.uint8) for _ in range(2)]
    masks[0][10:20, 5:40] = 255
    masks[1][20:40, 30:60] = 255
    first = sd.inpaint_batch(images, masks, ["k0", "k1"])
    for img, mask, out in zip(images, masks, first):
        assert out.shape == img.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out[mask == 0], img[mask == 0])
        assert (out[mask > 0] != img[mask > 0]).mean() > 0.5
    again = sd.inpaint_batch(images, masks, ["k0", "k1"])
    swapped = sd.inpaint_batch(images[::-1], masks[::-1], ["k1", "k0"])
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(first, swapped[::-1]):  # seeds follow the key, not the batch position
        assert np.abs(a.astype(int) - b).max() <= 1
    other = make_inpainter("sd", {"model": str(tiny_sd), "steps": 2, "resolution": 32, "seed": 8,
                                  "device": "cpu", "threads": 1}).inpaint_batch(images[:1], masks[:1], ["k0"])
    assert not np.array_equal(other[0], first[0])


def test_sd_without_a_local_model_says_what_to_set(tmp_path):
    with pytest.raises(RuntimeError, match=r"point inpaint\.sd\.model at a local directory"):
        make_inpainter("sd", {"model": str(tmp_path / "missing-model"), "device": "cpu"})
    with pytest.raises(ValueError, match="multiple of 8"):
        make_inpainter("sd", {"model": str(tmp_path), "resolution": 100})


# ---------------------------------------------------------------------------------------------
# Part driver


def png_bytes(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def part(tmp_path, tables):
    """A shard holding the four images of ``tables`` (and one key the tables do not know)."""
    spot, match = tables
    rng = np.random.default_rng(2)
    images = {}
    shard = tmp_path / "part-000.tar"
    with wds.TarWriter(str(shard)) as sink:
        for row in spot.to_dict("records") + [spot_row("e", 20, 20, [], [])]:
            img = rng.integers(0, 256, (row["height"], row["width"], 3), dtype=np.uint8)
            images[row["__key__"]] = img
            sink.write({"__key__": row["__key__"], "png": png_bytes(img), "txt": b"a caption"})
    write_parquet(spot, tmp_path / "spot.parquet")
    write_parquet(match, tmp_path / "match.parquet")
    return tmp_path, [str(shard)], images


def driver_args(root, shards, **over):
    args = dict(spot_path=str(root / "spot.parquet"), match_path=str(root / "match.parquet"), shards=shards,
                out_tar=str(root / "out" / "co.tar"), out_counts=str(root / "out" / "co.counts.json"),
                method="telea", options={"radius": 3}, mask_kind="co", seed=0, dilate_px=1,
                normalisation={"lowercase": True, "strip_punctuation": True, "strip_accents": True},
                max_pixels=10**6, batch_size=1)
    args.update(over)
    return args


def test_run_inpaint_writes_text_images_only_and_reconciles(part):
    root, shards, images = part
    counts = run_inpaint(**driver_args(root, shards))
    assert counts == {"method": "telea", "mask_kind": "co", "n_samples": 4, "n_with_text": 3, "n_inpainted": 2,
                      "n_skipped": 1, "skipped": {"empty_mask": 1, "no_donor": 0}}
    assert json.loads((root / "out" / "co.counts.json").read_text()) == counts
    assert sorted(p.name for p in (root / "out").iterdir()) == ["co.counts.json", "co.tar"]

    done = {k: (img, mask, meta) for k, img, mask, meta in read_inpainted(root / "out" / "co.tar")}
    assert sorted(done) == ["a", "c"]  # "b" has no co-embedded word, "d" and "e" no text
    plans = plan_masks(*[pd.read_parquet(root / f) for f in ("spot.parquet", "match.parquet")], "co", 0, Normalisation())
    for key, (img, mask, meta) in done.items():
        np.testing.assert_array_equal(mask, plans[key].mask(1))
        np.testing.assert_array_equal(img[mask == 0], images[key][mask == 0])  # lossless outside the mask
        assert meta["status"] == "inpainted" and meta["method"] == "telea" and meta["mask_kind"] == "co"
        assert meta["n_mask_px"] == np.count_nonzero(mask) > 0 and meta["donor"] is None
    skipped = [(k, meta) for k, img, _, meta in read_inpainted(root / "out" / "co.tar", include_skipped=True)
               if img is None]
    assert skipped == [("b", skipped[0][1])] and skipped[0][1]["status"] == "empty_mask"


def test_run_inpaint_random_control_records_its_donor(part):
    root, shards, _ = part
    counts = run_inpaint(**driver_args(root, shards, mask_kind="rand_all", batch_size=2,
                                       out_tar=str(root / "r.tar"), out_counts=str(root / "r.json")))
    assert counts["n_inpainted"] == 3 and counts["n_skipped"] == 0
    donors = {k: meta["donor"] for k, _, _, meta in read_inpainted(root / "r.tar")}
    assert sorted(donors) == ["a", "b", "c"] and all(d != k and d in donors for k, d in donors.items())


class Exploding(Inpainter):
    def __init__(self, options):
        pass

    def inpaint_batch(self, images, masks, keys):
        raise RuntimeError("boom")


def test_run_inpaint_leaves_nothing_behind_on_failure(part, monkeypatch):
    root, shards, _ = part
    monkeypatch.setitem(INPAINTERS, "exploding", Exploding)
    with pytest.raises(RuntimeError, match="boom"):
        run_inpaint(**driver_args(root, shards, method="exploding"))
    assert list((root / "out").iterdir()) == []
    with pytest.raises(inpaint.ShardError, match="not found"):
        run_inpaint(**driver_args(root, shards[:0]))
    assert list((root / "out").iterdir()) == []
