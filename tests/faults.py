"""Fault injection for tests/test_faults.py: Snakemake runs started in the background and killed
with SIGKILL, hostile inputs, and the comparison of a run's outputs with a reference run's."""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Callable

import pandas as pd
import psutil

from workflow import ROOT, SNAKEMAKE, snakemake

# Under results/ but not results: the trainer's working directory (its logs carry clock times,
# it is cleared by every training job) and the timestamp Snakemake puts in directory outputs.
NOT_OUTPUTS = re.compile(r"(^|/)run/|(^|/)\.snakemake_timestamp$")
# Hidden temporaries: parrotscope.io.atomic_path / atomic_dir, curate's shard directory.
TEMPORARY = re.compile(r"^\..+\.tmp$")
# JSON keys that hold clock readings (also any ``*_seconds``); every other value must be equal.
VOLATILE_KEYS = frozenset({"wall_s", "seconds", "train_loop_s", "samples_per_s", "elapsed_s"})


# ----------------------------------------------------------------------------------------------
# Comparing outputs


def output_files(workdir: Path) -> dict[str, Path]:
    """Every output file under ``results/`` by relative path (temporaries and by-products apart)."""
    out = {}
    for path in sorted((workdir / "results").rglob("*")):
        rel = path.relative_to(workdir).as_posix()
        if path.is_file() and not NOT_OUTPUTS.search(rel) and not any(TEMPORARY.match(p) for p in path.parts):
            out[rel] = path
    return out


def temporaries(workdir: Path) -> list[str]:
    """Hidden temporaries left under ``results/`` (what a killed writer leaves)."""
    root = workdir / "results"
    if not root.exists():
        return []
    return sorted(p.relative_to(workdir).as_posix() for p in root.rglob("*") if TEMPORARY.match(p.name))


def strip_volatile(obj):
    if isinstance(obj, dict):
        return {k: strip_volatile(v) for k, v in obj.items()
                if k not in VOLATILE_KEYS and not k.endswith("_seconds")}
    if isinstance(obj, list):
        return [strip_volatile(v) for v in obj]
    return obj


def agreement(a: Path, b: Path) -> str | None:
    """How two output files agree: ``bytes``; ``table`` (parquet, equal values and types);
    ``json`` (equal but for clock readings); None when they differ."""
    if a.read_bytes() == b.read_bytes():
        return "bytes"
    if a.suffix == ".parquet":
        try:
            pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b), check_exact=True)
            return "table"
        except (AssertionError, OSError, ValueError):
            return None
    if a.suffix == ".json":
        try:
            same = strip_volatile(_run_relative_json(a)) == strip_volatile(_run_relative_json(b))
        except ValueError:
            return None
        return "json" if same else None
    return None


def _run_relative_json(path: Path):
    """A JSON output with its run directory's absolute path written as ``<run>`` (training
    records its command line, which names the run's own files)."""
    text, marker = path.read_text(), "/results/"
    root = str(path)[: str(path).rindex(marker)] if marker in str(path) else None
    return json.loads(text.replace(root, "<run>") if root else text)


def compare_runs(reference: Path, run: Path, only: Callable[[str], bool] = lambda rel: True
                 ) -> tuple[dict[str, str], dict[str, str]]:
    """``(agreement by path, problem by path)`` over the outputs of two run directories."""
    ref, got = output_files(reference), output_files(run)
    agreed, problems = {}, {}
    for rel in sorted(set(ref) | set(got)):
        if not only(rel):
            continue
        if rel not in got:
            problems[rel] = "missing"
        elif rel not in ref:
            problems[rel] = "not in the reference run"
        else:
            how = agreement(ref[rel], got[rel])
            if how is None:
                problems[rel] = "differs"
            else:
                agreed[rel] = how
    return agreed, problems


def per_sample_keys(workdir: Path) -> dict[str, set[str]]:
    """``__key__`` sets of every per-sample parquet table under results/ (samples-lost counting)."""
    keys = {}
    for rel, path in output_files(workdir).items():
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
            if "__key__" in df.columns:
                keys[rel] = set(df["__key__"])
    return keys


def samples_lost(reference: Path, run: Path) -> int:
    """Keys present in the reference run's per-sample tables and absent from the run's."""
    ref, got = per_sample_keys(reference), per_sample_keys(run)
    return sum(len(keys - got.get(rel, set())) for rel, keys in ref.items())


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of a finished run directory: config, results and Snakemake's metadata (mtimes kept,
    so Snakemake sees the same state), without logs, benchmarks and locks."""
    shutil.copytree(src, dst, symlinks=True,
                    ignore=shutil.ignore_patterns("logs", "benchmarks", "locks", "*.out"))
    return dst


# ----------------------------------------------------------------------------------------------
# Runs in the background, and SIGKILL


def start(workdir: Path, *args: str, wrap: list[str] | None = None) -> subprocess.Popen:
    """Start snakemake in its own session (process group), output to ``workdir/snakemake.out``."""
    cmd = [*(wrap or []), *SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir), *args]
    out = open(workdir / "snakemake.out", "ab")
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen, timeout: float,
             poll: float = 0.002) -> bool:
    """True as soon as ``condition()`` holds; False if ``proc`` ends or ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return condition()
        time.sleep(poll)
    return False


def kill_tree(proc: subprocess.Popen) -> int:
    """SIGKILL snakemake's whole process group, and any descendant that left it; wait until every
    one is gone. Returns how many processes were killed."""
    try:
        root = psutil.Process(proc.pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    with_pgid = [p for p in family if _pgid(p) == proc.pid]
    os.killpg(proc.pid, signal.SIGKILL)
    for p in family:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(_alive(p) for p in family):
        time.sleep(0.05)
    survivors = [p.pid for p in family if _alive(p)]
    assert not survivors, f"processes survived SIGKILL: {survivors}"
    return max(len(family), len(with_pgid))


def _pgid(p: psutil.Process) -> int | None:
    try:
        return os.getpgid(p.pid)
    except ProcessLookupError:
        return None


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def incomplete_outputs(workdir: Path, *targets: str) -> set[str]:
    """The outputs Snakemake itself marks incomplete (a job started and never finished): asked
    without the default profile's ``rerun-incomplete``, Snakemake lists them and stops."""
    proc = snakemake(workdir, "-n", "--workflow-profile", "none", *targets, check=False)
    text = proc.stdout + proc.stderr
    if "Incomplete files:" not in text:
        assert proc.returncode == 0, text[-3000:]
        return set()
    listed = text.split("Incomplete files:", 1)[1]
    return {line.strip() for line in listed.splitlines() if line.strip().startswith("results/")}


# ----------------------------------------------------------------------------------------------
# Hostile inputs


class Unpickled:
    """A pickle payload that creates ``marker`` when unpickled (harmless stand-in for code)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def evil_pickle(marker: Path) -> bytes:
    return pickle.dumps(Unpickled(str(marker)))


def evil_torch_file(marker: Path) -> bytes:
    """A torch.save file (zip + pickle) whose state dict unpickles into code."""
    import torch

    buf = io.BytesIO()
    torch.save({"state_dict": {"w": Unpickled(str(marker))}}, buf)
    return buf.getvalue()


def text_image(text: str, size=(160, 64)) -> bytes:
    """A JPEG with ``text`` in large black letters on white, for the real spotter to read."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", size, "white")
    try:
        font = ImageFont.truetype("DejaVuSans-Bold.ttf", 28)
    except OSError:
        font = ImageFont.load_default(28)
    ImageDraw.Draw(img).text((8, 14), text, fill="black", font=font)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


# Captions that have broken CSV writers, terminals and naive parsers: very long, control
# characters (NUL, ESC, CR/LF, DEL, Unicode line separators), quotes and separators, right-to-left
# scripts with bidi overrides, emoji ZWJ sequences, combining marks.
HOSTILE_CAPTIONS = {
    "long": "HELLO " + "parrot caption " * 7000,
    "control": 'STOP sign\x00 nul\x01\x1b[31m red\x1b[0m\r\nsecond line\tTab "quoted", comma; \x7f del \u2028 ls \u0085 nel',
    "rtl": "OPEN שלום עולם مرحبا بالعالم \u202eevil override\u202c \u200fmark",
    "emoji": "CAFE 👩\u200d👩\u200d👧 cafe\u0301 ﬁne",
}


def hostile_shard(path: Path, marker: Path) -> Path:
    """A shard whose captions are hostile text, with members that would run code if unpickled
    (``.pyd``, ``.pickle``, ``.pth``), and a sample made of such members only."""
    words = {"long": "HELLO", "control": "STOP", "rtl": "OPEN", "emoji": "CAFE"}
    members = []
    for key, caption in HOSTILE_CAPTIONS.items():
        members += [(f"{key}.jpg", text_image(words[key])), (f"{key}.txt", caption.encode("utf-8"))]
        if key == "rtl":
            members += [(f"{key}.pyd", evil_pickle(marker)), (f"{key}.pickle", evil_pickle(marker)),
                        (f"{key}.pth", evil_torch_file(marker))]
    members += [("onlypickle.pyd", evil_pickle(marker))]
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
