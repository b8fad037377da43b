"""Tests of the demo generator: determinism, layout, ground truth, proportions, eval sets."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import unicodedata

import numpy as np
import pytest
from PIL import Image

from parrotscope.demo import (
    DEFAULTS,
    concept_classes,
    cotr,
    demo_config,
    template_words,
    write_demo_shard,
    write_eval_set,
)

TINY = {"samples_per_shard": 12}


def read_tar(path) -> dict[str, dict[str, bytes]]:
    """key -> {extension: bytes}, in tar order, refusing a key seen twice for one extension."""
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            key, ext = member.name.split(".", 1)
            assert ext not in samples.setdefault(key, {}), f"duplicate member {member.name}"
            samples[key][ext] = tar.extractfile(member).read()
    return samples


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """A 200-sample shard with the default proportions, shared by the statistics tests."""
    path = tmp_path_factory.mktemp("pool") / "00003.tar"
    summary = write_demo_shard({"samples_per_shard": 200}, 3, str(path))
    samples = read_tar(path)
    metas = {k: json.loads(v["json"]) for k, v in samples.items()}
    return path, summary, samples, metas


# ---------------------------------------------------------------------------- configuration


def test_config_defaults_and_validation():
    cfg = demo_config({})
    assert cfg == demo_config(cfg) and cfg["text_fraction"] == DEFAULTS["text_fraction"]
    assert len(concept_classes(cfg)) == len(cfg["shapes"]) * len(cfg["colors"]) >= 16
    assert not {w.lower() for w in cfg["vocabulary"]} & template_words(cfg)
    with pytest.raises(ValueError, match="unknown demo config"):
        demo_config({"text_fracton": 0.5})
    with pytest.raises(ValueError, match="caption"):
        demo_config({"caption_exact_prob": 0.9})
    with pytest.raises(ValueError, match="caption templates"):
        demo_config({"vocabulary": ["sale", "red", "open"]})
    with pytest.raises(ValueError, match="shapes"):
        demo_config({"shapes": ["hexagon"]})


# ------------------------------------------------------------------------ determinism and layout


def test_same_seed_and_shard_give_identical_bytes(tmp_path):
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    write_demo_shard(TINY, 2, str(a))
    write_demo_shard(dict(TINY), 2, str(b))
    assert a.read_bytes() == b.read_bytes()


def test_other_seed_or_shard_differs(tmp_path):
    base, seed, shard = tmp_path / "base.tar", tmp_path / "seed.tar", tmp_path / "shard.tar"
    write_demo_shard(TINY, 2, str(base))
    write_demo_shard({**TINY, "seed": 1}, 2, str(seed))
    write_demo_shard(TINY, 5, str(shard))
    jpgs = {
        p: {hashlib.sha1(v["jpg"]).hexdigest() for v in read_tar(p).values()}
        for p in (base, seed, shard)
    }
    assert not jpgs[base] & jpgs[seed]
    assert not jpgs[base] & jpgs[shard]


def test_tar_layout_is_img2dataset_like(tmp_path):
    path = tmp_path / "00007.tar"
    summary = write_demo_shard(TINY, 7, str(path))
    assert not [p for p in os.listdir(tmp_path) if p != "00007.tar"], "temporary files left behind"
    samples = read_tar(path)
    assert list(samples) == [f"00007{i:04d}" for i in range(12)]
    assert summary["n_samples"] == 12
    for key, parts in samples.items():
        assert set(parts) == {"jpg", "txt", "json"}
        meta = json.loads(parts["json"])
        assert meta["key"] == key and meta["status"] == "success"
        assert meta["caption"] == parts["txt"].decode("utf-8")
        assert meta["url"].startswith("demo://")
        img = Image.open(io.BytesIO(parts["jpg"]))
        assert img.format == "JPEG" and img.size == (meta["width"], meta["height"]) == (128, 128)


def test_webdataset_reads_the_shard(tmp_path):
    import webdataset as wds
    from webdataset import tariterators

    path = tmp_path / "00000.tar"
    write_demo_shard(TINY, 0, str(path))
    with open(path, "rb") as stream:
        files = tariterators.tar_file_expander([{"stream": stream, "url": str(path)}])
        grouped = list(tariterators.group_by_keys(files))
    assert len(grouped) == 12 and all({"jpg", "txt", "json"} <= set(s) for s in grouped)
    decoded = list(
        wds.WebDataset(str(path), shardshuffle=False).decode("pil").to_tuple("jpg", "txt", "json")
    )
    assert len(decoded) == 12
    img, caption, meta = decoded[0]
    assert img.size == (128, 128) and caption == meta["caption"]


# ---------------------------------------------------------------------------- ground truth


def test_ground_truth_is_consistent(pool):
    _, _, samples, metas = pool
    size = DEFAULTS["image_size"]
    for key, meta in metas.items():
        t = meta["truth"]
        caption_words = meta["caption"].split()
        assert t["has_text"] == bool(t["words"]) == bool(t["word_polygons"])
        assert len(t["words"]) == len(t["word_polygons"])
        for poly in t["word_polygons"]:
            pts = np.asarray(poly)
            assert pts.shape == (4, 2)
            assert (pts >= 0).all() and (pts <= size).all(), (key, poly)
        assert set(t["parrot_words"]) <= set(caption_words)
        assert set(t["parrot_words"]) <= set(t["words"])
        rendered = set(t["words"])
        assert [w for w in caption_words if w in rendered] or not t["parrot_words"]
        if t["caption_kind"] == "exact":
            assert caption_words == t["words"]
        if t["caption_kind"] == "mixed":
            assert t["parrot_words"] and len(caption_words) > len(t["parrot_words"])
        if t["caption_kind"] in ("none", "visual", "generic"):
            assert not t["parrot_words"] and not {w.lower() for w in caption_words} & {
                w.lower() for w in t["words"]
            }
        if not t["has_text"]:
            assert t["caption_kind"] in ("visual", "generic") and t["font"] is None
        assert t["concept"] == f"{t['color']} {t['shape']}"


def test_proportions_follow_config(pool):
    _, summary, _, metas = pool
    cfg = demo_config({})
    truths = [m["truth"] for m in metas.values()]
    text = [t for t in truths if t["has_text"]]
    free = [t for t in truths if not t["has_text"]]
    assert abs(len(text) / len(truths) - cfg["text_fraction"]) < 0.1
    assert summary["n_text"] == len(text)
    for kind in ("exact", "mixed", "none"):
        share = sum(t["caption_kind"] == kind for t in text) / len(text)
        assert abs(share - cfg[f"caption_{kind}_prob"]) < 0.12, kind
    generic = sum(t["caption_kind"] == "generic" for t in free) / len(free)
    assert abs(generic - cfg["textfree_generic_prob"]) < 0.15
    # LAION-like Table 1 statistics among text images: mean CoTR about 0.3, about 60% parrots.
    rates = [
        cotr(metas[k]["caption"], m["truth"]["words"])
        for k, m in metas.items()
        if m["truth"]["has_text"]
    ]
    assert 0.2 < np.mean(rates) < 0.4
    assert 0.45 < np.mean([r > 0 for r in rates]) < 0.75
    assert len({t["concept"] for t in truths}) == len(concept_classes(cfg))


def test_extreme_proportions(tmp_path):
    none_path, all_path = tmp_path / "none.tar", tmp_path / "all.tar"
    write_demo_shard({**TINY, "text_fraction": 0.0}, 0, str(none_path))
    write_demo_shard(
        {
            **TINY,
            "text_fraction": 1.0,
            "caption_exact_prob": 1.0,
            "caption_mixed_prob": 0.0,
            "caption_none_prob": 0.0,
        },
        0,
        str(all_path),
    )
    assert not any(json.loads(s["json"])["truth"]["has_text"] for s in read_tar(none_path).values())
    for s in read_tar(all_path).values():
        t = json.loads(s["json"])["truth"]
        assert (
            t["has_text"]
            and t["caption_kind"] == "exact"
            and s["txt"].decode().split() == t["words"]
        )


PARTIAL = {"text_fraction": 1.0, "caption_exact_prob": 0.0, "caption_mixed_prob": 0.0,
           "caption_none_prob": 0.0, "caption_partial_prob": 1.0, "words_per_image_probs": [0.5, 0.5]}


def test_partial_captions_quote_the_words_and_add_the_rows_visual_words(tmp_path):
    # One rendered word: always 2 visual words (CoTR 1/3); two words: always 1 (CoTR 2/3).
    cfg = {**TINY, "samples_per_shard": 40, **PARTIAL, "partial_visual_words_probs": [[0, 1], [1]]}
    write_demo_shard(cfg, 0, str(tmp_path / "p.tar"))
    rates = set()
    for s in read_tar(tmp_path / "p.tar").values():
        t, caption = json.loads(s["json"])["truth"], s["txt"].decode().split()
        assert t["caption_kind"] == "partial" and t["parrot_words"] == t["words"]
        words = len(t["words"])
        assert caption[:words] == t["words"] and len(caption) == words + (2 if words == 1 else 1)
        assert not {w.lower() for w in caption[words:]} & {w.lower() for w in DEFAULTS["vocabulary"]}
        rates.add(round(cotr(" ".join(caption), t["words"]), 3))
    assert rates == {0.333, 0.667}


def test_partial_visual_word_rows_are_validated():
    with pytest.raises(ValueError, match="partial_visual_words_probs"):
        demo_config({"partial_visual_words_probs": [0.5, 0.5]})
    with pytest.raises(ValueError, match="partial_visual_words_probs"):
        demo_config({"partial_visual_words_probs": [[0.5, 0.4]]})
    with pytest.raises(ValueError, match="must be 1"):
        demo_config({"caption_partial_prob": 0.5})


# ---------------------------------------------------------------------------- evaluation sets

EVAL_CFG = {"eval_concepts_per_class": 2, "eval_retrieval_pairs": 10, "eval_samples_per_shard": 20}


def test_concept_eval_set_loads_in_clip_benchmark(tmp_path, pool):
    from clip_benchmark.datasets.builder import build_dataset

    out = tmp_path / "concepts"
    summary = write_eval_set(EVAL_CFG, "concepts", str(out))
    classes = concept_classes(EVAL_CFG)
    assert summary["n_samples"] == 2 * len(classes) and summary["n_shards"] == 2
    assert (out / "test" / "nshards.txt").read_text().strip() == "2"
    assert (out / "dataset_type.txt").read_text().strip() == "classification"
    ds = build_dataset(
        "wds/demo_concepts", root=str(out), transform=None, task="zeroshot_classification"
    )
    assert ds.classes == classes and all("{c}" in t for t in ds.templates)
    items = list(ds)
    assert sorted(label for _, label in items) == sorted(list(range(len(classes))) * 2)
    assert all(img.size == (128, 128) for img, _ in items)
    # Text-free, and never a copy of a training-pool image.
    pool_hashes = {hashlib.sha1(s["jpg"]).hexdigest() for s in pool[2].values()}
    for shard in sorted((out / "test").glob("*.tar")):
        for parts in read_tar(shard).values():
            meta = json.loads(parts["json"])
            assert not meta["truth"]["has_text"] and int(parts["cls"]) == meta["truth"]["label"]
            assert classes[meta["truth"]["label"]] == meta["truth"]["concept"]
            assert hashlib.sha1(parts["jpg"]).hexdigest() not in pool_hashes


def test_retrieval_eval_set_loads_in_clip_benchmark(tmp_path):
    from clip_benchmark.datasets.builder import build_dataset

    out = tmp_path / "retrieval"
    write_eval_set(EVAL_CFG, "retrieval", str(out))
    assert (out / "dataset_type.txt").read_text().strip() == "retrieval"
    ds = build_dataset(
        "wds/demo_retrieval", root=str(out), transform=None, task="zeroshot_retrieval"
    )
    items = list(ds)
    assert len(items) == 10
    vocab = {w.lower() for w in DEFAULTS["vocabulary"]}
    for img, captions in items:
        assert img.size == (128, 128) and len(captions) == 1
        assert not set(captions[0].lower().split()) & vocab
    with pytest.raises(ValueError):
        write_eval_set(EVAL_CFG, "words", str(tmp_path / "bad"))


# ---------------------------------------------------------------------------- real OCR


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in text if not unicodedata.combining(c) and c.isalnum())


def test_rapidocr_reads_the_rendered_words(tmp_path):
    from rapidfuzz import fuzz
    from rapidocr import RapidOCR

    path = tmp_path / "text.tar"
    write_demo_shard({"samples_per_shard": 8, "text_fraction": 1.0}, 11, str(path))
    engine = RapidOCR(
        params={
            "Global.log_level": "error",
            "Global.use_cls": False,
            "Det.limit_type": "max",
            "Det.limit_side_len": 736,
        }
    )
    found = 0
    for parts in read_tar(path).values():
        truth = json.loads(parts["json"])["truth"]
        result = engine(np.asarray(Image.open(io.BytesIO(parts["jpg"])).convert("RGB")))
        spotted = [_normalise(w) for line in (result.txts or ()) for w in line.split()]
        found += any(fuzz.ratio(_normalise(w), s) >= 80 for w in truth["words"] for s in spotted)
    assert found >= 6, f"RapidOCR found a true word in only {found} of 8 text images"
