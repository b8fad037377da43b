"""Per-sample vector tables: the ``embed`` stage's format, readable without torch.

One parquet per part: ``__key__`` (string) and one fixed-size ``list<float32>`` column per vector
kind (``image_emb``, ``text_emb``: L2-normalised CLIP embeddings of the scorer's dimension). Kept
apart from :mod:`parrotscope.embed`, which computes embeddings with torch, so clustering and
near-duplicate removal read them in the light environment (envs/core.yaml).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .io import KEY, atomic_path

EMBEDDING_COLUMNS = ("image_emb", "text_emb")


def embedding_schema(dim: int) -> pa.Schema:
    """The embed table's schema: key, then two fixed-size float32 lists of length ``dim``."""
    vec = pa.list_(pa.float32(), dim)
    return pa.schema([(KEY, pa.string()), ("image_emb", vec), ("text_emb", vec)])


def _fixed_size(matrix: np.ndarray) -> pa.FixedSizeListArray:
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def write_embeddings(keys: list[str], image_emb: np.ndarray, text_emb: np.ndarray,
                     path: str | os.PathLike) -> None:
    """Write one part's embeddings atomically; refuses duplicate keys and misaligned arrays."""
    n = len(keys)
    if image_emb.shape[0] != n or text_emb.shape[0] != n or image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(f"{path}: {n} keys but embeddings of shapes {image_emb.shape} and {text_emb.shape}")
    if len(set(keys)) != n:
        dup = pd.Series(keys)[pd.Series(keys).duplicated()].head(5).tolist()
        raise ValueError(f"{path}: duplicate keys {dup}")
    table = pa.Table.from_arrays([pa.array(keys, pa.string()), _fixed_size(image_emb), _fixed_size(text_emb)],
                                 schema=embedding_schema(image_emb.shape[1]))
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)


def read_embeddings(path: str | os.PathLike, columns: tuple[str, ...] = EMBEDDING_COLUMNS
                    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(keys, {column: float32 matrix n x dim})`` of an embed table, without per-row Python objects."""
    unknown = set(columns) - set(EMBEDDING_COLUMNS)
    if unknown:
        raise KeyError(f"no embedding column(s) {sorted(unknown)}; have {list(EMBEDDING_COLUMNS)}")
    try:
        table = pq.read_table(path, columns=[KEY, *columns])
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise ValueError(f"cannot read {path}: {exc}. Delete it and rerun to rebuild it.") from exc
    keys = np.asarray(table.column(KEY).to_pylist(), dtype=object)
    out = {}
    for col in columns:
        arr = table.column(col).combine_chunks()
        dim = arr.type.list_size
        out[col] = arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim)
    return keys, out


def embedding_rows(path: str | os.PathLike) -> int:
    """Rows of an embed table, from the parquet footer (no data read)."""
    return pq.ParquetFile(path).metadata.num_rows
