"""Stage ``embed``: image and caption embeddings of one scorer, per part.

Kept as a product of their own because several stages need them: image clustering (paper Sec. 3:
K-means on CLIP ViT-B-32 image features), near-duplicate removal within clusters (Sec. 8) and
later analyses. The embeddings are exactly the ones the score stage computes
(:func:`parrotscope.score.embed_batches`): L2-normalised, so ``image_emb · text_emb`` is the
sample's CLIP score S.

One parquet per part with columns ``__key__`` (string), ``image_emb`` and ``text_emb``
(fixed-size ``list<float32>`` of the scorer's embedding dimension), one row per usable sample;
skipped samples (ingest statuses other than ``ok``) are counted in the part's counts JSON, so
samples in = embedded + skipped.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from .io import KEY, read_parquet, write_json
# The table format lives in .vectors (no torch, for clustering and deduplication); re-exported.
from .vectors import (EMBEDDING_COLUMNS, embedding_rows, embedding_schema,  # noqa: F401
                      read_embeddings, write_embeddings)


def embed_part(scorer, samples: pd.DataFrame, shards: list[str], batch_size: int,
               max_pixels: int, progress: bool = True, workers: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Embeddings of every usable sample of a part (ingest status ``ok``), in shard order, by a
    :class:`parrotscope.score.Scorer`; ``workers`` DataLoader processes decode and preprocess."""
    from .feed import ShardPairs
    from .score import embed_batches

    ok = samples[samples["status"] == "ok"]
    captions = dict(zip(ok[KEY], ok["caption"]))
    keys: list[str] = []
    images: list[np.ndarray] = []
    texts: list[np.ndarray] = []
    pairs = ShardPairs(tuple(shards), captions, max_pixels)
    for batch_keys, img, txt in embed_batches(scorer, pairs, batch_size, workers, progress=progress):
        keys.extend(batch_keys)
        images.append(img.cpu().numpy())
        texts.append(txt.cpu().numpy())
    missing = set(captions) - set(keys)
    if missing:
        raise ValueError(f"{len(missing)} usable samples not found in the part's shards, e.g. {sorted(missing)[:3]}")
    dim = _embed_dim(scorer)
    stack = lambda parts: np.concatenate(parts) if parts else np.empty((0, dim), np.float32)  # noqa: E731
    return keys, stack(images), stack(texts)


def _embed_dim(scorer) -> int:
    """The scorer's embedding dimension, also for a part without usable samples."""
    import torch

    with torch.inference_mode():
        return int(scorer.model.encode_text(scorer.tokenizer([""]).to(scorer.device)).shape[-1])


def embed_counts(samples: pd.DataFrame, n_embedded: int) -> dict:
    """Accounting of one part: samples in = embedded + skipped (by ingest reason)."""
    skipped = samples.loc[samples["status"] != "ok", "status"]
    counts = {"samples_in": int(len(samples)), "embedded": int(n_embedded), "skipped": int(len(skipped)),
              "skipped_by_reason": dict(sorted(Counter(skipped).items()))}
    if counts["samples_in"] != counts["embedded"] + counts["skipped"]:
        raise ValueError(f"embed accounting does not reconcile: {counts}")
    return counts


def run_embed(samples_path: str, shards: list[str], spec: dict, out_path: str, counts_path: str,
              batch_size: int, device: str, max_pixels: int, threads: int = 1, workers: int | None = None,
              precision: str = "auto") -> None:
    """Embed one part with one scorer; write its table and counts."""
    from .devices import set_torch_threads
    from .feed import resolve_workers
    from .score import load_scorer

    set_torch_threads(threads)
    scorer = load_scorer(spec, device, precision)
    samples = read_parquet(samples_path)
    keys, image_emb, text_emb = embed_part(scorer, samples, shards, batch_size, max_pixels,
                                           workers=resolve_workers(workers, threads))
    write_embeddings(keys, image_emb, text_emb, out_path)
    write_json({**embed_counts(samples, len(keys)), "scorer": scorer.name, "dim": int(image_emb.shape[1])},
               counts_path)
