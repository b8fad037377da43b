"""Shared test helpers: building webdataset shards with chosen (good or broken) members."""

import io
import tarfile

import numpy as np
import pytest
from PIL import Image


def image_bytes(mode="RGB", size=(32, 24), fmt="JPEG", color=(200, 30, 30)) -> bytes:
    """Encode a small solid image in the given PIL mode and format."""
    if mode in ("L", "I;16"):
        arr = np.full(size[::-1], 120, dtype=np.uint16 if mode == "I;16" else np.uint8)
        img = Image.fromarray(arr, mode if mode == "L" else None)
        if mode == "I;16":
            img = Image.fromarray(np.linspace(0, 60000, size[0] * size[1]).reshape(size[::-1]).astype(np.uint16))
    else:
        img = Image.new("RGB", size, color).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def write_tar(path, members):
    """Write a tar with (name, bytes) members in the given order."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


@pytest.fixture
def make_tar(tmp_path):
    def make(name, members):
        return write_tar(tmp_path / name, members)

    return make


@pytest.fixture(scope="session")
def tiny_default(tmp_path_factory):
    """The tiny config's whole default target (every table, figure and the report's tables),
    built once for every workflow test that reads its outputs. A user dataset with bad inputs
    rides along for Table 1's accounting."""
    from workflow import snakemake, tiny_config, write_config

    work = tmp_path_factory.mktemp("wf")
    cfg = tiny_config()
    good = image_bytes(size=(96, 64))
    bad_shard = write_tar(work / "mine-000.tar", [
        ("a.jpg", good), ("a.txt", b"a red square"),
        ("b.jpg", b"garbage"), ("b.txt", b"broken image"),
        ("c.jpg", good),  # no caption
        ("d.jpg", good), ("d.txt", b"\xff\xfe bad utf-8"),
    ])
    cfg["datasets"]["mine"] = {"shards": bad_shard, "shards_per_part": 1}
    write_config(work, cfg)
    snakemake(work, "-c", "2", timeout=3600)
    return work


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests: on 2 shared cores OpenMP's spin-waiting made 2 threads
    up to 40x slower than 1 whenever another process held a core; these tests check values."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def scorer():
    """A tiny-rn CLIP scorer with random weights (seed 0): real model code, no downloads."""
    import torch

    from parrotscope.score import Scorer
    from parrotscope.train import build_model

    torch.manual_seed(0)
    model, preprocess, tokenizer = build_model("tiny-rn", device="cpu")
    return Scorer("random-tiny", model, preprocess, tokenizer, "cpu")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item (``item.rep_call``), so a fixture's teardown can
    record whether its test passed (tests/test_faults.py's schema sweep record)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
