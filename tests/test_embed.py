"""The embed stage: the score stage's embeddings of every usable sample, stored as fixed-size lists."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from conftest import image_bytes, write_tar
from parrotscope.embed import embed_counts, embed_part
from parrotscope.vectors import read_embeddings, write_embeddings
from parrotscope.ingest import ingest_part
from parrotscope.io import KEY, read_json
from parrotscope.score import Scorer, clip_scores
from parrotscope.shards import iter_images
from parrotscope.train import build_model

CAPTIONS = {"a": b"a red square", "b": b"sale", "c": b"coffee shop open", "e": b"hello world"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Every test of this module runs with one torch thread (see conftest)."""



@pytest.fixture
def part(tmp_path):
    """One shard: four good samples of different sizes and colours, one undecodable image."""
    members = []
    for i, (key, caption) in enumerate(CAPTIONS.items()):
        members += [(f"{key}.jpg", image_bytes(size=(40 + 10 * i, 30), color=(40 * i, 200, 90))),
                    (f"{key}.txt", caption)]
    members += [("d.jpg", b"garbage"), ("d.txt", b"broken")]
    shard = write_tar(tmp_path / "000.tar", members)
    samples, _ = ingest_part([shard], max_pixels=10**7)
    return [shard], samples


def test_embeddings_are_normalised_and_their_product_is_the_clip_score(scorer, part):
    shards, samples = part
    keys, img, txt = embed_part(scorer, samples, shards, batch_size=3, max_pixels=10**7, progress=False)
    assert keys == ["a", "b", "c", "e"]  # shard order; the broken sample is not embedded
    assert img.shape == txt.shape == (4, 64) and img.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1, atol=1e-5)
    images = dict(iter_images(shards, set(keys), 10**7))
    expected = clip_scores(scorer, [images[k] for k in keys], [CAPTIONS[k].decode() for k in keys])
    np.testing.assert_allclose((img * txt).sum(1), expected, atol=1e-5)


def test_table_round_trip_with_fixed_size_float32_lists(scorer, part, tmp_path):
    shards, samples = part
    keys, img, txt = embed_part(scorer, samples, shards, batch_size=8, max_pixels=10**7, progress=False)
    path = tmp_path / "p00000.parquet"
    write_embeddings(keys, img, txt, path)
    schema = pq.read_schema(path)
    assert schema.names == [KEY, "image_emb", "text_emb"]
    assert str(schema.field("image_emb").type) == "fixed_size_list<element: float>[64]"
    got_keys, got = read_embeddings(path)
    assert got_keys.tolist() == keys
    np.testing.assert_array_equal(got["image_emb"], img)
    np.testing.assert_array_equal(got["text_emb"], txt)
    with pytest.raises(ValueError, match="duplicate keys"):
        write_embeddings(["a", "a"], img[:2], txt[:2], tmp_path / "dup.parquet")
    with pytest.raises(KeyError, match="no embedding column"):
        read_embeddings(path, ("pixels",))


def test_counts_reconcile_with_the_skipped_samples(part):
    _, samples = part
    counts = embed_counts(samples, 4)
    assert counts == {"samples_in": 5, "embedded": 4, "skipped": 1, "skipped_by_reason": {"corrupt_image": 1}}
    with pytest.raises(ValueError, match="does not reconcile"):
        embed_counts(samples, 3)


def test_run_embed_writes_table_and_counts(part, tmp_path, monkeypatch):
    from parrotscope import embed as embed_module
    from parrotscope.io import write_parquet

    shards, samples = part
    samples_path = tmp_path / "samples.parquet"
    write_parquet(samples, samples_path)
    torch.manual_seed(0)
    monkeypatch.setattr("parrotscope.score.load_scorer",
                        lambda spec, device, precision: Scorer("ref", *build_model("tiny-rn", device="cpu"), "cpu"))
    embed_module.run_embed(str(samples_path), shards, {"name": "ref"}, str(tmp_path / "e.parquet"),
                           str(tmp_path / "e.counts.json"), batch_size=2, device="cpu", max_pixels=10**7)
    counts = read_json(tmp_path / "e.counts.json")
    assert counts["embedded"] == 4 and counts["skipped"] == 1 and counts["dim"] == 64
    assert read_embeddings(tmp_path / "e.parquet")[0].tolist() == ["a", "b", "c", "e"]
