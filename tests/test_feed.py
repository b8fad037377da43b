"""Scoring fed by DataLoader workers: the same batches and the same bytes for any worker count,
worker failures raised in the main process, precision and worker settings."""

import io

import numpy as np
import pandas as pd
import pytest
import torch
import webdataset as wds
from PIL import Image

from parrotscope.feed import (ArrayPairs, PairBatches, ShardPairs, pair_loader, resolve_precision,
                              resolve_workers)
from parrotscope.inpainted import encode_png
from parrotscope.io import KEY, write_parquet
from parrotscope.score import Scorer, score_part, score_table
from parrotscope.shards import ShardError
from parrotscope.train import build_model


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Every test of this module runs with one torch thread (see conftest)."""


@pytest.fixture(scope="module")
def scorer():
    torch.manual_seed(0)
    model, preprocess, tokenizer = build_model("tiny-rn", device="cpu")
    return Scorer("tiny", model.eval(), preprocess, tokenizer, "cpu")


def jpeg(rng, h: int, w: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def part(tmp_path_factory):
    """Two shards of 23 JPEGs (assorted sizes), an inpainted tar of 8 of them, a samples table with
    one skipped sample."""
    root = tmp_path_factory.mktemp("feed")
    rng = np.random.default_rng(0)
    shards, keys = [], []
    for s in range(2):
        path = root / f"{s:05d}.tar"
        with wds.TarWriter(str(path)) as w:
            for i in range(12 if s == 0 else 11):
                key = f"{s}{i:03d}"
                w.write({"__key__": key, "jpg": jpeg(rng, 40 + 7 * i, 60 + 3 * i), "txt": f"caption {key}"})
                keys.append(key)
        shards.append(str(path))
    inpainted = root / "all.tar"
    with wds.TarWriter(str(inpainted)) as w:
        for key in keys[::3]:
            image = rng.integers(0, 256, (50, 50, 3), dtype=np.uint8)
            w.write({"__key__": key, "png": encode_png(image, rgb=True),
                     "mask.png": encode_png(np.full((50, 50), 255, np.uint8), rgb=False),
                     "json": {"status": "inpainted"}})
    samples = pd.DataFrame({KEY: keys, "status": ["ok"] * 5 + ["corrupt_image"] + ["ok"] * 17,
                            "caption": [f"caption {k}" for k in keys]})
    return {"root": root, "shards": shards, "inpainted": str(inpainted), "samples": samples, "keys": keys}


def batch_keys(source, batch_size: int, workers: int) -> list[list[str]]:
    loader = pair_loader(source, lambda im: torch.zeros(1), lambda caps: torch.zeros(len(caps)), batch_size, workers)
    return [keys for keys, _, _ in loader]


def test_batches_are_cut_from_the_stream_whatever_the_worker_count(part):
    captions = dict(zip(part["keys"], part["keys"]))
    source = ShardPairs(tuple(part["shards"]), captions, 10**8)
    expected = [part["keys"][i:i + 4] for i in range(0, 23, 4)]
    for workers in (0, 1, 2, 3, 7):  # 7 workers for 6 batches: one has nothing to do
        assert batch_keys(source, 4, workers) == expected, workers


def test_score_part_writes_the_same_bytes_for_0_1_and_2_workers(part, scorer, tmp_path):
    written = []
    for workers in (0, 1, 2):
        table = score_part(scorer, part["samples"], part["shards"], {"all": part["inpainted"]}, batch_size=5,
                           max_pixels=10**8, workers=workers)
        path = tmp_path / f"w{workers}.parquet"
        write_parquet(table, str(path))
        written.append(path.read_bytes())
    assert table["s_raw"].notna().sum() == 22 and table["s_all"].notna().sum() == 8
    assert written[0] == written[1] == written[2]


def test_the_worker_fed_scores_equal_the_in_memory_ones(part, scorer):
    """Decoding in workers changes nothing: the same pixels as decoding the JPEGs here."""
    captions = {k: f"caption {k}" for k in part["keys"]}
    fed = score_table(scorer, ShardPairs(tuple(part["shards"]), captions, 10**8), batch_size=5, workers=2,
                      progress=False)
    arrays = []
    for shard in part["shards"]:
        for sample in wds.WebDataset(shard, shardshuffle=False).decode("rgb8"):
            arrays.append((sample["__key__"], sample["jpg"], captions[sample["__key__"]]))
    here = score_table(scorer, ArrayPairs(tuple(arrays)), batch_size=5, progress=False)
    assert fed[KEY].tolist() == here[KEY].tolist() == part["keys"]
    np.testing.assert_array_equal(fed["s"].to_numpy(), here["s"].to_numpy())


def test_a_failing_worker_raises_its_error_here(part, scorer):
    captions = {k: "c" for k in part["keys"][:3]} | {"not-there": "c"}
    with pytest.raises(ShardError, match="not-there"):
        score_table(scorer, ShardPairs(tuple(part["shards"]), captions, 10**8), batch_size=2, workers=2,
                    progress=False)
    broken = part["root"] / "broken.tar"
    with wds.TarWriter(str(broken)) as w:
        w.write({"__key__": "b0", "jpg": b"\xff\xd8 not a jpeg", "txt": "x"})
    with pytest.raises(ShardError, match="decoded at ingest but not now"):
        score_table(scorer, ShardPairs((str(broken),), {"b0": "x"}, 10**8), batch_size=2, workers=1, progress=False)


def test_pair_batches_refuse_a_zero_batch():
    with pytest.raises(ValueError, match="batch_size"):
        PairBatches(ArrayPairs(()), None, None, 0)


def test_workers_and_precision_settings():
    assert resolve_workers(None, 1) == 0 and resolve_workers(None, 8) == 7 and resolve_workers(3, 8) == 3
    with pytest.raises(ValueError, match="workers"):
        resolve_workers(-1, 2)
    assert resolve_precision("auto", "cpu") == "fp32" and resolve_precision(None, "cuda:0") == "bf16"
    assert resolve_precision("fp16", "cuda") == "fp16"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("int8", "cpu")


def test_bf16_autocast_moves_scores_little_and_keeps_their_order(part, scorer):
    """The CPU check of the autocast path (on CUDA bf16 is the default): S moves by far less than
    the spread of S, and the order of the pairs by S barely changes."""
    captions = {k: f"caption {k}" for k in part["keys"]}
    source = ShardPairs(tuple(part["shards"]), captions, 10**8)
    fp32 = score_table(scorer, source, batch_size=8, progress=False)["s"].to_numpy()
    bf16_scorer = Scorer("tiny", scorer.model, scorer.preprocess, scorer.tokenizer, "cpu", precision="bf16")
    bf16 = score_table(bf16_scorer, source, batch_size=8, progress=False)["s"].to_numpy()
    assert not np.array_equal(fp32, bf16)  # autocast ran
    assert np.abs(fp32 - bf16).max() < 0.25 * fp32.std()
    assert np.corrcoef(np.argsort(np.argsort(fp32)), np.argsort(np.argsort(bf16)))[0, 1] > 0.9
