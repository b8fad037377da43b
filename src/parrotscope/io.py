"""Atomic output writing and keyed-table helpers shared by every stage.

Every output of the workflow is written under a temporary name in the same directory and renamed
into place only when complete, so a killed job never leaves a file that looks finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

import pandas as pd

KEY = "__key__"


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (/proc/self/status)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temporaries(path: Path, suffix: str) -> list[Path]:
    """Delete what a killed earlier attempt at ``path`` left: the hidden temporaries of
    :func:`atomic_path` / :func:`atomic_dir` (``.NAME.XXXXXXXX<suffix>``).

    A SIGKILL runs no cleanup, so without this a half-written tar of a killed job would stay on
    disk for every retry. Safe because Snakemake runs one job per output at a time; the name
    pattern is exact (tempfile's 8 random characters), so no other file matches.
    """
    pattern = re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]{8}" + re.escape(suffix))
    removed = []
    if path.parent.is_dir():
        for entry in path.parent.iterdir():
            if pattern.fullmatch(entry.name):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        entry.unlink()
                removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file lives in the destination directory so the final ``os.replace`` is a
    same-filesystem rename (atomic on POSIX). On any exception the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path, suffix + ".tmp")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp makes the file private (0600); the published output gets a new file's mode.
        tmp_path.chmod(0o666 & ~current_umask())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; it replaces ``path`` only if the block succeeds.

    For outputs that are whole directories (Snakemake ``directory()``): a killed job leaves a
    hidden ``.NAME.*.tmp`` folder, never a half-filled ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path, ".tmp")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it private; the published directory should not be
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(obj, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike):
    """Read a JSON file; a truncated or garbled one raises ``ValueError`` naming the path."""
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}. Delete it and rerun to rebuild it.") from exc


def write_parquet(df: pd.DataFrame, path: str | os.PathLike, key: str | None = KEY,
                  schema=None) -> None:
    """Write a per-sample table atomically; refuse duplicate keys so joins by key stay sound.

    ``schema`` (a pyarrow schema) fixes column types that pandas cannot infer from the data, e.g.
    list columns of a part whose lists are all empty, so every part's file has the same types.
    """
    if key is not None:
        if key not in df.columns:
            raise ValueError(f"table for {path} has no {key!r} column")
        dup = df[key].duplicated()
        if dup.any():
            raise ValueError(f"table for {path} has duplicate keys: {df[key][dup].head(5).tolist()}")
    with atomic_path(path, suffix=".parquet") as tmp:
        # Page checksums (CRC32), verified by read_parquet: a garbled data page fails loudly
        # instead of decoding to different values (parquet has no other integrity check).
        df.to_parquet(tmp, index=False, schema=schema, write_page_checksum=True)


def read_parquet(path: str | os.PathLike, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a parquet written by this workflow, naming the file in any error.

    A truncated or garbled file raises ``ValueError`` naming the path, so a corrupted
    intermediate is never taken silently; page checksums are verified where the file has them.
    """
    try:
        return pd.read_parquet(path, columns=columns, page_checksum_verification=True)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise ValueError(f"cannot read {path}: {exc}. Delete it and rerun to rebuild it.") from exc


def write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(df: pd.DataFrame, path: str | os.PathLike, **kwargs) -> None:
    """Write a table as CSV atomically (quoting handled by pandas, so any caption text is safe)."""
    with atomic_path(path, suffix=".csv") as tmp:
        df.to_csv(tmp, **kwargs)


def copy_file(source: str | os.PathLike, path: str | os.PathLike) -> None:
    """Copy a file's bytes to ``path`` atomically (a result published under a second name)."""
    suffix = "".join(Path(path).suffixes[-1:])
    with atomic_path(path, suffix=suffix) as tmp:
        shutil.copyfile(source, tmp)


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items from a stream (the last one shorter), holding one at a time."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
