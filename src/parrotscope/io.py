"""Atomic output writing and keyed-table helpers shared by every stage.

Every output of the workflow is written under a temporary name in the same directory and renamed
into place only when complete, so a killed job never leaves a file that looks finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

import pandas as pd

KEY = "__key__"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file lives in the destination directory so the final ``os.replace`` is a
    same-filesystem rename (atomic on POSIX). On any exception the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
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
    with open(path) as fh:
        return json.load(fh)


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
        df.to_parquet(tmp, index=False, schema=schema)


def read_parquet(path: str | os.PathLike, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a parquet written by this workflow, naming the file in any error.

    A truncated or garbled file raises ``ValueError`` naming the path, so a corrupted
    intermediate is never taken silently.
    """
    try:
        return pd.read_parquet(path, columns=columns)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise ValueError(f"cannot read {path}: {exc}. Delete it and rerun to rebuild it.") from exc


def write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(df: pd.DataFrame, path: str | os.PathLike, **kwargs) -> None:
    """Write a table as CSV atomically (quoting handled by pandas, so any caption text is safe)."""
    with atomic_path(path, suffix=".csv") as tmp:
        df.to_csv(tmp, **kwargs)


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
