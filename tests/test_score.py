"""CLIP scores against a hand computation, batching, relative scores, loading scorers offline."""

import pickle
import time

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from parrotscope.feed import ArrayPairs
from parrotscope.io import KEY
from parrotscope.score import (
    OfflineWeightsError, Scorer, clip_scores, load_scorer, relative_scores, score_table)
from parrotscope.train import build_model, load_checkpoint_model

CAPTIONS = ["a red square", "sale", "a photo of a parrot", "coffee shop open", "", "hello world",
            "a blue circle on a poster", "the word summer", "winter", "x" * 200]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Every test of this module runs with one torch thread (see conftest)."""



@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    sizes = [(64, 64), (80, 48), (33, 101), (64, 64), (128, 96), (64, 64), (20, 20), (64, 70), (90, 90), (64, 64)]
    out = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    out[6] = out[6][..., 0]  # a greyscale image
    return out


def hand_scores(scorer, images, captions):
    pixels = torch.stack([scorer.preprocess(Image.fromarray(im).convert("RGB")) for im in images])
    with torch.no_grad():
        img = F.normalize(scorer.model.encode_image(pixels), dim=-1)
        txt = F.normalize(scorer.model.encode_text(scorer.tokenizer(captions)), dim=-1)
    return (img @ txt.T).diag().numpy()


def test_clip_scores_equal_the_hand_computation(scorer, images):
    got = clip_scores(scorer, images, CAPTIONS, batch_size=4)
    assert got.shape == (10,) and got.dtype == np.float32
    np.testing.assert_allclose(got, hand_scores(scorer, images, CAPTIONS), atol=1e-5)
    assert np.all(np.abs(got) <= 1 + 1e-6)


def test_batch_size_does_not_change_scores(scorer, images):
    one = clip_scores(scorer, images, CAPTIONS, batch_size=1)
    seven = clip_scores(scorer, images, CAPTIONS, batch_size=7)
    np.testing.assert_allclose(one, seven, atol=1e-5)


def test_score_table_streams_in_order(scorer, images):
    items = ArrayPairs(tuple((f"k{i:02d}", im, cap) for i, (im, cap) in enumerate(zip(images, CAPTIONS))))
    table = score_table(scorer, items, batch_size=3, progress=False)
    assert list(table.columns) == [KEY, "s"] and table[KEY].tolist() == [f"k{i:02d}" for i in range(10)]
    np.testing.assert_allclose(table["s"], clip_scores(scorer, images, CAPTIONS), atol=1e-5)
    empty = score_table(scorer, ArrayPairs(()), progress=False)
    assert len(empty) == 0 and list(empty.columns) == [KEY, "s"]


def test_relative_scores_by_hand():
    df = pd.DataFrame({KEY: ["a", "b", "c"], "s_raw": [0.35, 0.30, 0.28], "s_all": [0.20, np.nan, 0.30],
                       "s_co": [0.25, 0.31, None], "s_rand_all": [0.34, 0.29, np.nan],
                       "s_rand_co": [0.33, 0.30, 0.27]})
    out = relative_scores(df)
    np.testing.assert_allclose(out["rsa"], [0.15, np.nan, -0.02], atol=1e-12)
    np.testing.assert_allclose(out["rsc"], [0.10, -0.01, np.nan], atol=1e-12)
    np.testing.assert_allclose(out["rsa_rand"], [0.01, 0.01, np.nan], atol=1e-12)
    np.testing.assert_allclose(out["rsc_rand"], [0.02, 0.0, 0.01], atol=1e-12)
    assert "rsa" not in df.columns  # the input is not modified
    assert "rsa_rand" not in relative_scores(df.drop(columns=["s_rand_all"])).columns
    assert "rsc" not in relative_scores(df.drop(columns=["s_co"])).columns
    with pytest.raises(KeyError, match="s_raw"):
        relative_scores(df.drop(columns=["s_raw"]))


def test_pretrained_tag_fails_fast_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    start = time.monotonic()
    with pytest.raises(OfflineWeightsError) as info:
        load_scorer({"name": "ref", "arch": "ViT-B-32", "pretrained": "openai"}, device="cpu")
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "'ref'" in message and "`pretrained`" in message and "local" in message
    assert "quickgelu" in message  # OpenAI weights need QuickGELU
    with pytest.raises(FileNotFoundError, match="neither an existing file nor"):
        load_scorer({"name": "ref", "arch": "ViT-B-32", "pretrained": "no-such-tag"}, device="cpu")


def test_spec_needs_exactly_one_weights_source():
    with pytest.raises(ValueError, match="exactly one"):
        load_scorer({"name": "x", "arch": "tiny-rn"})
    with pytest.raises(ValueError, match="exactly one"):
        load_scorer({"name": "x", "arch": "tiny-rn", "pretrained": "a.pt", "checkpoint": "b.pt"})


def trainer_style_checkpoint(model):
    """What OpenCLIP's trainer saves after DDP: module.-prefixed weights plus optimizer state."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
    model.logit_scale.grad = torch.ones_like(model.logit_scale)
    optimizer.step()
    optimizer.zero_grad()
    state = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}
    return {"epoch": 3, "name": "train", "state_dict": state, "optimizer": optimizer.state_dict()}


def test_workflow_checkpoint_round_trips(tmp_path, images):
    torch.manual_seed(1)
    model, _, _ = build_model("tiny-rn")
    path = tmp_path / "trained.pt"
    torch.save(trainer_style_checkpoint(model), path)

    loaded = load_scorer({"name": "mine", "arch": {"name": "tiny-rn"}, "checkpoint": str(path)}, device="cpu")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.model.state_dict()[name]), name
    again, _, _ = load_checkpoint_model("tiny-rn", path, device="cpu")
    np.testing.assert_allclose(clip_scores(loaded, images, CAPTIONS),
                               clip_scores(Scorer("b", again, loaded.preprocess, loaded.tokenizer, "cpu"),
                                           images, CAPTIONS), atol=1e-6)


def test_pretrained_file_loads_and_wrong_arch_fails(tmp_path, scorer, images):
    path = tmp_path / "weights.pt"
    torch.save(scorer.model.state_dict(), path)
    loaded = load_scorer({"name": "file", "arch": "tiny-rn", "pretrained": str(path)}, device="cpu")
    np.testing.assert_allclose(clip_scores(loaded, images, CAPTIONS), clip_scores(scorer, images, CAPTIONS),
                               atol=1e-6)
    with pytest.raises(RuntimeError):  # strict loading: a tiny-vit checkpoint is not a tiny-rn
        load_scorer({"name": "file", "arch": "tiny-vit", "pretrained": str(path)}, device="cpu")


class Payload:
    """Not a tensor: a checkpoint carrying it must not be unpickled."""


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path, scorer):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": scorer.model.state_dict(), "extra": Payload()}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_scorer({"name": "x", "arch": "tiny-rn", "checkpoint": str(path)}, device="cpu")


def test_pretrained_tag_found_in_the_local_hub_cache_applies_the_tag_settings(tmp_path, monkeypatch, scorer, images):
    """A tag whose weights sit in the Hugging Face cache loads offline, with the tag's QuickGELU."""
    import huggingface_hub.constants
    import open_clip
    from open_clip.transformer import QuickGELU

    snapshot = tmp_path / "models--org--tiny" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (tmp_path / "models--org--tiny" / "refs").mkdir()
    (tmp_path / "models--org--tiny" / "refs" / "main").write_text("0" * 40)
    torch.save(scorer.model.state_dict(), snapshot / "open_clip_pytorch_model.bin")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    tag_cfg = {"hf_hub": "org/tiny/", "url": "", "quick_gelu": True, "mean": (0.5, 0.5, 0.5),
               "std": (0.25, 0.25, 0.25), "interpolation": "bicubic", "resize_mode": "shortest"}
    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda arch, tag: tag_cfg if tag == "mytag" else {})

    loaded = load_scorer({"name": "cached", "arch": "tiny-rn", "pretrained": "mytag"}, device="cpu")
    assert isinstance(loaded.model.transformer.resblocks[0].mlp.gelu, QuickGELU)
    assert loaded.preprocess.transforms[-1].mean == (0.5, 0.5, 0.5)
    for name, tensor in scorer.model.state_dict().items():
        assert torch.equal(tensor, loaded.model.state_dict()[name]), name


def test_score_part_scores_raw_and_each_removal_by_key(tmp_path, scorer, images):
    """A part of 3 samples (one skipped): S(raw) for the usable ones, S(all) only where an
    inpainted image exists, each equal to a direct clip_scores call on the same pixels."""
    import io as _io

    import webdataset as wds

    from parrotscope.inpainted import encode_png
    from parrotscope.score import score_part

    rgb = [np.ascontiguousarray(np.repeat(images[i][..., None], 3, -1)) if images[i].ndim == 2
           else images[i] for i in (0, 3, 5)]
    shard = tmp_path / "s.tar"
    with wds.TarWriter(str(shard)) as w:
        for key, im in zip(["k0", "k1", "k2"], rgb):
            buf = _io.BytesIO()
            Image.fromarray(im).save(buf, format="PNG")
            w.write({"__key__": key, "png": buf.getvalue(), "txt": f"caption {key}"})
    removed = np.zeros_like(rgb[1])
    tar = tmp_path / "all.tar"
    with wds.TarWriter(str(tar)) as w:
        w.write({"__key__": "k1", "png": encode_png(removed, rgb=True),
                 "mask.png": encode_png(np.full(removed.shape[:2], 255, np.uint8), rgb=False),
                 "json": {"status": "inpainted"}})
    samples = pd.DataFrame({KEY: ["k2", "k1", "k0"], "status": ["corrupt_image", "ok", "ok"],
                            "caption": ["", "caption k1", "caption k0"]})
    out = score_part(scorer, samples, [str(shard)], {"all": str(tar)}, batch_size=2,
                     max_pixels=10**8).set_index(KEY)
    direct = clip_scores(scorer, [rgb[0], rgb[1], removed], ["caption k0", "caption k1", "caption k1"])
    assert out.loc["k0", "s_raw"] == pytest.approx(direct[0], abs=1e-5)
    assert out.loc["k1", "s_raw"] == pytest.approx(direct[1], abs=1e-5)
    assert out.loc["k1", "s_all"] == pytest.approx(direct[2], abs=1e-5)
    assert out.loc["k1", "rsa"] == pytest.approx(direct[1] - direct[2], abs=1e-5)
    assert pd.isna(out.loc["k0", "s_all"]) and pd.isna(out.loc["k2", "s_raw"])
    assert out.loc["k2", "status"] == "corrupt_image" and len(out) == 3
