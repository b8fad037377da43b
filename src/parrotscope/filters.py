"""Stage ``filters``: the paper's text-oriented filter ("a simple fix", Sec. 8, Table 10) and the
filters it is compared with, each written as a training subset of the curate/train/evaluate stages.

Every filter writes ``results/{dataset}/subsets/filter_<name>/keys.parquet`` (``__key__, part,
shard``, sorted by key) and ``stats.json``, the layout of :mod:`parrotscope.curate`, so the existing
``materialise_*``, ``train``, ``evaluate`` and ``evaluate_sync`` rules materialise, train and
evaluate them unchanged. Only status-ok samples (ingested, decoded, spotted) are ever chosen.

The fix (``filter_fix``), the paper's 100M LAION subset in four steps, each applied to what the
previous left (the stats count what each step removed; n_ok = removed + selected):

1. **no spotted text**: the index's ``has_text`` is false;
2. **CLIP score**: S(raw) of the configured scorer ``>`` ``clip_threshold`` (0.3 for OpenAI
   ViT-B-32 scores; a scorer with another scale needs its own threshold);
3. **aesthetics** ``>`` ``aesthetic_threshold`` (4.5, the improved aesthetic predictor,
   :mod:`parrotscope.aesthetic`), only when the predictor is configured;
4. **near-duplicates removed within each K-means cluster** (the ``cluster`` stage's assignment):
   greedy keep-first over the cluster's survivors in a stated order, **highest CLIP score first,
   ties by key**, so of a group of near-duplicates the best-aligned pair stays. A sample is
   dropped when the cosine similarity of its image embedding to a sample already kept in its
   cluster is ``>=`` ``dedup_threshold``. Samples in different clusters are never compared (the
   paper's per-cluster deduplication; at LAION scale a global all-pairs search is out of reach).

Baselines, each of the **same size N as the fix** (N = the fix's ``n_selected``; equal-size subsets
train equal compute, as the paper's curations do). Each has a nominal criterion over a per-sample
filter score, and then N samples are chosen:

* ``filter_clip_score``: DataComp's CLIP-score baseline, the top ``clip_fraction`` (30%) by S(raw);
* ``filter_tmars``: T-MARS (Maini et al., 2023): every spotted text region is filled with the mean
  colour of a ring of pixels around it (:func:`mean_fill`), the image re-scored against its
  caption; samples whose masked score is at or above the median are kept. Text-free images are not
  changed by masking, so their masked score is their S(raw) (read from the index, not recomputed);
* ``filter_flip_clip``: the horizontally flipped image is scored against the caption (flipped
  text stops matching it), top ``flip_fraction`` (30%) kept;
* ``filter_random``: every status-ok sample is eligible (a random subset of size N).

Choosing N: when at least N samples meet the criterion, N of them are drawn uniformly with
:func:`parrotscope.curate.sample_keys` (seeded keyed hash, as every curated subset is drawn). When
fewer do (a shortfall: the criterion keeps less than the fix), the criterion is loosened just
enough: the N best by the filter score are taken, which contain every eligible sample; the stats
record ``shortfall`` and the score of the last one taken. "Top fraction" counts ``ceil(f * n)``
of the n status-ok samples with a score, ranked by score then key, so ties at the cut are broken
by key, deterministically. A sample without a filter score (NaN) never qualifies.

Computing them (dataset-wide steps): the fix and the baselines never hold the dataset. They are
DuckDB queries over the per-part tables (:mod:`parrotscope.db`; the index, cluster assignment,
aesthetic scores and re-scores joined by key), within the job's memory limit; only the fix's
deduplication needs vectors in numpy, and it gets them one cluster at a time (the survivors are
written partitioned by cluster to the job's tmpdir). Comparisons are pandas': a float32 score is
compared with a threshold in float32. The chosen keys are written by the engine; the stats' means
are compensated sums over the chosen rows, so a mean may differ from a float32 pandas sum in its
last digits (tests/test_filters.py holds the in-memory definition and checks the rest is equal).
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from .curate import STAT_MEANS, SubsetTooSmall
from .db import (Engine, KeyPartitions, columns_of, connect, copy_first_in_order, copy_to_parquet, hash_partitions,
                 number, one_row, parquet_source, register_keyed_rank, rows_in_order, source_types, sql_name,
                 sql_string)
from .filter_names import BASELINES, FIX, FilterError, subset_name
from .inpaint import dilation_kernel, rasterise, text_rows, word_polygons
from .io import KEY, read_json, read_parquet, write_json, write_parquet
from .shards import OK, ShardError

if TYPE_CHECKING:
    from .feed import ShardPairs

log = logging.getLogger(__name__)

# Per-part re-scoring each baseline needs (rule `filter_rescore`), by rescore variant.
VARIANTS = ("tmars", "flip")
VARIANT_OF = {"tmars": "tmars", "flip_clip": "flip"}
POOL = "pool"  # the training stage's name for the whole dataset (the reference CLIP)

# Shares of text and parrot captions left in a subset (index columns; truth where the data has it).
SHARE_COLUMNS = {
    "share w/ text": "has_text",
    "share parrot": "is_parrot",
    "share parrot (fuzzy)": "is_parrot_fuzzy",
    "share w/ text (truth)": "gt_has_text",
    "share parrot (truth)": "gt_is_parrot",
}


# --- T-MARS masking and the flipped image ------------------------------------------------------


def mean_fill(image: np.ndarray, polygons: Sequence[np.ndarray], dilate_px: int = 0,
              ring_px: int = 3) -> np.ndarray:
    """T-MARS's text masking: each text region filled with the mean colour around it.

    Each polygon is rasterised (grown by ``dilate_px`` like the inpainting masks, to cover glyph
    fringes) and filled with the mean RGB of its *ring*: the pixels within ``ring_px`` of it that
    belong to no text region, so a neighbouring word's colour never leaks into the fill. A region
    whose ring is empty (text everywhere around it) takes the mean of all text-free pixels, or of
    the whole image when there are none. Pixels outside the text regions are unchanged.
    """
    if ring_px < 1:
        raise ValueError(f"ring_px must be >= 1, got {ring_px}")
    h, w = image.shape[:2]
    regions = [rasterise([p], h, w, dilate_px) > 0 for p in polygons]
    regions = [r for r in regions if r.any()]
    out = image.copy()
    if not regions:
        return out
    text = np.logical_or.reduce(regions)
    background = ~text
    fallback = (image[background] if background.any() else image.reshape(-1, image.shape[-1])).mean(axis=0)
    kernel = dilation_kernel(ring_px)
    for region in regions:
        ring = (cv2.dilate(region.astype(np.uint8), kernel) > 0) & background
        colour = image[ring].mean(axis=0) if ring.any() else fallback
        out[region] = np.round(colour).astype(image.dtype)
    return out


def flip_horizontal(image: np.ndarray) -> np.ndarray:
    """The mirror image: visual content keeps its meaning, rendered text stops spelling its words."""
    return np.ascontiguousarray(image[:, ::-1])


def _checked_size(key: str, image: np.ndarray, height: int, width: int) -> None:
    if image.shape[:2] != (height, width):
        raise ShardError(f"key {key}: image is {image.shape[1]}x{image.shape[0]} but the spot table says "
                         f"{width}x{height}; the shards changed since spotting")


def flipped(key: str, image: np.ndarray) -> np.ndarray:
    """:func:`flip_horizontal` as a :class:`parrotscope.feed.ShardPairs` transform."""
    return flip_horizontal(image)


@dataclass(frozen=True)
class TextMeanFilled:
    """T-MARS's transform of a text image: its spotted words mean-filled (:func:`mean_fill`);
    ``plans``: key -> (word polygons, height, width) from the spot table."""

    plans: dict
    dilate_px: int
    ring_px: int

    def __call__(self, key: str, image: np.ndarray) -> np.ndarray:
        polys, h, w = self.plans[key]
        _checked_size(key, image, h, w)
        return mean_fill(image, polys, self.dilate_px, self.ring_px)


def variant_pairs(variant: str, samples: pd.DataFrame, spot: pd.DataFrame, match: pd.DataFrame,
                  shards: list[str], max_pixels: int, dilate_px: int, ring_px: int) -> ShardPairs:
    """The pairs a variant re-scores, as a pair source (:mod:`parrotscope.feed`) whose transform
    makes the variant's image: ``tmars``, the part's images with spotted text (both stages ok),
    text mean-filled; ``flip``, every usable (ingest-ok) image, mirrored."""
    from .feed import ShardPairs  # torch: only the stages that run a CLIP import it

    captions = dict(zip(samples[KEY], samples["caption"]))
    if variant == "tmars":
        rows = text_rows(spot, match)
        ok = set(samples.loc[samples["status"] == OK, KEY])
        rows = rows[rows[KEY].isin(ok)]
        plans = {r[KEY]: (word_polygons(r), int(r["height"]), int(r["width"])) for r in rows.to_dict("records")}
        return ShardPairs(tuple(shards), {k: captions[k] for k in sorted(plans)}, max_pixels,
                          TextMeanFilled(plans, dilate_px, ring_px))
    if variant == "flip":
        keys = sorted(samples.loc[samples["status"] == OK, KEY])
        return ShardPairs(tuple(shards), {k: captions[k] for k in keys}, max_pixels, flipped)
    raise FilterError(f"unknown rescore variant {variant!r}; variants: {list(VARIANTS)}")


def rescore_part(scorer, variant: str, samples: pd.DataFrame, spot: pd.DataFrame, match: pd.DataFrame,
                 shards: list[str], batch_size: int, max_pixels: int, dilate_px: int = 2,
                 ring_px: int = 3, workers: int = 0) -> pd.DataFrame:
    """One row per sample of the part: ``__key__``, ``status`` (the sample's), ``s_<variant>``
    (the CLIP score of the transformed image against its caption; empty where the variant does
    not apply: skipped samples, and text-free images for ``tmars``). ``workers``: DataLoader
    processes that decode and transform (the scores do not depend on their number)."""
    from .score import score_table

    pairs = variant_pairs(variant, samples, spot, match, shards, max_pixels, dilate_px, ring_px)
    scored = score_table(scorer, pairs, batch_size, workers)
    column = f"s_{variant}"
    out = samples[[KEY, "status"]].merge(scored.rename(columns={"s": column}), on=KEY, how="left",
                                         validate="one_to_one")
    return out


def run_rescore(variant: str, samples_path: str, spot_path: str, match_path: str, shards: list[str],
                spec: dict, out_path: str, batch_size: int, device: str, max_pixels: int,
                dilate_px: int = 2, ring_px: int = 3, threads: int = 1, workers: int | None = None,
                precision: str = "auto") -> dict:
    """Re-score one part's transformed images with one scorer; write the table; return counts.
    ``dilate_px`` and ``ring_px`` are T-MARS's masking settings (see :func:`mean_fill`)."""
    from .devices import set_torch_threads
    from .feed import resolve_workers
    from .score import load_scorer

    set_torch_threads(threads)
    scorer = load_scorer(spec, device, precision)
    table = rescore_part(scorer, variant, read_parquet(samples_path), read_parquet(spot_path),
                         read_parquet(match_path), shards, batch_size, max_pixels, dilate_px, ring_px,
                         resolve_workers(workers, threads))
    write_parquet(table, out_path)
    scored = table[f"s_{variant}"].notna()
    ok = table["status"] == OK
    counts = {"variant": variant, "n_samples": len(table), "n_rescored": int(scored.sum()),
              "n_ok_not_applicable": int((ok & ~scored).sum()), "n_skipped": int((~ok).sum())}
    log.info("rescore %s: %s", variant, counts)
    return counts


# --- near-duplicates within clusters -----------------------------------------------------------


def greedy_keep_first(emb: np.ndarray, threshold: float, block: int = 1024) -> np.ndarray:
    """Keep-first deduplication of rows in the given order: row i is dropped when its cosine
    similarity to an earlier *kept* row is ``>= threshold``. Rows must be L2-normalised.

    Blockwise: each block is compared with every row kept so far (one matrix product), then within
    itself in order, so memory is ``block x kept`` rather than ``n x n``. Within a block only the
    rows that have a similar earlier row in it are decided one by one (in order, against the
    earlier rows kept); every other row is kept unless it duplicates an earlier block's row, so
    the Python loop runs over near-duplicates only.
    """
    n = len(emb)
    keep = np.zeros(n, dtype=bool)
    kept: list[int] = []
    for start in range(0, n, block):
        chunk = emb[start:start + block]
        dup = np.zeros(len(chunk), dtype=bool)
        if kept:
            dup = (chunk @ emb[kept].T).max(axis=1) >= threshold
        # similar[j, i] for i < j: row j is that close to the earlier row i of this block
        similar = np.tril(chunk @ chunk.T >= threshold, k=-1)
        chosen = ~dup
        for j in np.flatnonzero(similar.any(axis=1) & chosen):
            if (similar[j, :j] & chosen[:j]).any():
                chosen[j] = False
        kept.extend((start + np.flatnonzero(chosen)).tolist())
        keep[start:start + len(chunk)] = chosen
    return keep


def normalise_rows(emb: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.where(norms == 0, 1, norms)


def dedup_within_clusters(keys: np.ndarray, clusters: np.ndarray, emb: np.ndarray, priority: np.ndarray,
                          threshold: float, progress: bool = True) -> np.ndarray:
    """Which rows to keep: :func:`greedy_keep_first` inside each cluster, rows visited by
    ``priority`` descending (ties by key); rows of different clusters are never compared."""
    n = len(keys)
    if not (len(clusters) == len(priority) == len(emb) == n):
        raise ValueError("keys, clusters, embeddings and priorities differ in length")
    keep = np.zeros(n, dtype=bool)
    if n == 0:
        return keep
    emb = normalise_rows(np.asarray(emb, dtype=np.float32))
    keys = np.asarray(keys, dtype=object)
    order = np.lexsort((keys, -np.asarray(priority, dtype=np.float64), np.asarray(clusters)))
    sorted_clusters = np.asarray(clusters)[order]
    bounds = np.flatnonzero(np.diff(sorted_clusters)) + 1
    groups = np.split(order, bounds)
    for group in tqdm(groups, desc="dedup within clusters", unit="cluster", file=sys.stderr, mininterval=10,
                      disable=not progress):
        keep[group[greedy_keep_first(emb[group], threshold)]] = True
    return keep


# --- dataset-wide queries: the index parts with the per-part filter tables joined by key -------
#
# The fix and the baselines look at the whole dataset, so they never hold it: DuckDB reads the
# per-part tables (the index, cluster assignment, aesthetic scores, re-scores, embeddings) with
# the job's memory limit and spills. Only the deduplication needs vectors in numpy: the survivors
# are written partitioned by cluster, and one cluster at a time is deduplicated, so memory is the
# largest cluster's, not the dataset's. Every value is the one the in-memory (pandas) definition
# gives; tests/test_filters.py holds that definition and checks the two agree.

REQUIRED = (KEY, "part", "shard", "status", "has_text")
SCORE = "_filter_score"   # a baseline's per-sample score where finite (what ranks and qualifies)
RAW_SCORE = "_raw_score"  # the same with infinities kept (what its mean is taken of)
GROUP = "_cluster"        # the partition column of the deduplication
OK_ROW = "coalesce(status = 'ok', false)"
HELDOUT = "heldout"  # the index's held-out flag (parrotscope.heldout): those rows are in no filter's pool


def _k(alias: str = "") -> str:
    """The quoted key column (optionally of a table alias): ``__key__`` needs quoting in SQL."""
    return f"{alias}.{sql_name(KEY)}" if alias else sql_name(KEY)


def _double(value: float) -> str:
    """A DOUBLE literal that is exactly ``value`` (a bare ``0.3`` is a DECIMAL in DuckDB, whose
    conversion need not round as Python's float does; the shortest repr parsed as DOUBLE does)."""
    return f"CAST({sql_string(repr(float(value)))} AS DOUBLE)"


def _flag(column: str) -> str:
    """A boolean column, undefined read as false (pandas' ``fillna(False).astype(bool)``)."""
    return f"coalesce(CAST({sql_name(column)} AS BOOLEAN), false)"


def _above(column: str, sql_type: str, threshold: float) -> str:
    """``column > threshold`` as pandas evaluates it: NaN and undefined are never above, and a
    float32 column is compared in float32 (NumPy casts the Python float to the array's type), so
    a score of exactly float32(0.3) is not above 0.3 here either."""
    value = sql_name(column)
    if sql_type == "FLOAT":
        bound = f"CAST({_double(threshold)} AS FLOAT)"
    else:
        if sql_type != "DOUBLE":
            value = f"TRY_CAST({value} AS DOUBLE)"
        bound = _double(threshold)
    return f"coalesce({value} > {bound} AND NOT isnan({value}), false)"


def index_columns(types: Mapping[str, str], scorer: str) -> list[str]:
    """The index columns the filters and their stats read (those present); an index without the
    ones every filter needs is refused."""
    s_raw = f"{scorer}.s_raw"
    missing = [c for c in (*REQUIRED, s_raw) if c not in types]
    if missing:
        raise FilterError(f"the index parts have no column(s) {missing}; filters.scorer must be one of the "
                          f"index's scorers")
    needed = [*REQUIRED, s_raw, *SHARE_COLUMNS.values(), *(c.replace("{scorer}", scorer) for c in STAT_MEANS.values()),
              HELDOUT]
    return [c for c in dict.fromkeys(needed) if c in types]


def _examples(con, sql: str) -> list[str]:
    """The first three keys a query returns, sorted: examples for an error message."""
    return [row[0] for row in con.execute(f"{sql} ORDER BY 1 LIMIT 3").fetchall()]


def _part_table(con, paths: Sequence[str], column: str, what: str) -> str:
    """``(key, column)`` of a per-part filter table as a SQL source (empty when it has no parts)."""
    if not paths:
        return f"(SELECT NULL::VARCHAR AS {_k()}, NULL::DOUBLE AS {sql_name(column)} WHERE false)"
    types = columns_of(con, paths)
    absent = [c for c in (KEY, column) if c not in types]
    if absent:
        raise FilterError(f"{what}: the tables have no column(s) {absent}, e.g. {paths[0]}; rebuild them")
    return f"(SELECT {_k()}, {sql_name(column)} FROM {parquet_source(paths)})"


def _check_join(con, index: str, table: str, what: str, complete: bool) -> None:
    """Refuse a per-part table that cannot be joined by key: a key repeated across its parts, a
    key the index does not have (a stale table), or, with ``complete``, an index key it lacks.
    One outer join counts all three; the examples are looked up only when one fails."""
    extra, unknown, missing = one_row(con, f"""
        SELECT count(i.k) - (SELECT count(*) FROM {index}), count(*) FILTER (WHERE i.k IS NULL),
               count(*) FILTER (WHERE t.k IS NULL)
        FROM (SELECT {_k()} AS k FROM {index}) i FULL OUTER JOIN (SELECT {_k()} AS k FROM {table}) t ON i.k = t.k""")
    if extra:
        dup = _examples(con, f"SELECT {_k()} FROM {table} GROUP BY {_k()} HAVING count(*) > 1")
        raise FilterError(f"{what}: keys repeat across parts, e.g. {dup}")
    if unknown:
        absent = _examples(con, f"SELECT {_k()} FROM {table} t WHERE NOT EXISTS "
                                f"(SELECT 1 FROM {index} i WHERE {_k('i')} = {_k('t')})")
        raise FilterError(f"{what}: {unknown} keys are not in the index, e.g. {absent}; rebuild the stale table")
    if complete and missing:
        absent = _examples(con, f"SELECT {_k()} FROM {index} i WHERE NOT EXISTS "
                                f"(SELECT 1 FROM {table} t WHERE {_k('t')} = {_k('i')})")
        raise FilterError(f"{what}: {missing} samples of the index are missing, e.g. {absent}")


def pool_sources(con, index_paths: Sequence[str], scorer: str,
                 joins: Sequence[tuple[Sequence[str], str, str, bool]] = ()) -> dict[str, str]:
    """The tables the ``pool`` view joins, as SQL sources: ``idx`` (the index columns the filters
    read) and ``t0``, ``t1``, ... (``(key, column)`` of each per-part table of ``joins``)."""
    columns = index_columns(columns_of(con, index_paths), scorer)
    sources = {"idx": f"(SELECT {', '.join(map(sql_name, columns))} FROM {parquet_source(index_paths)})"}
    for n, (paths, column, what, _) in enumerate(joins):
        sources[f"t{n}"] = _part_table(con, paths, column, what)
    return sources


def heldout_count(con, index_paths: Sequence[str]) -> int:
    """The index rows of the held-out split, which the pool leaves out (counted in the stats, so
    that the index's rows = the pool's + the held-out)."""
    if HELDOUT not in columns_of(con, index_paths):
        return 0
    return int(one_row(con, f"SELECT count(*) FROM {parquet_source(index_paths)} WHERE coalesce({HELDOUT}, false)")[0])


def pool_view(con, index_paths: Sequence[str], scorer: str,
              joins: Sequence[tuple[Sequence[str], str, str, bool]] = (),
              sources: Mapping[str, str] | None = None) -> dict[str, str]:
    """Create the view ``pool``: the index columns the filters read, with one column of each per-part
    table of ``joins`` (``(paths, column, what, complete)``) left-joined by key, never by row
    order (a sample without a row there reads NULL). ``sources``: the tables to join instead of
    :func:`pool_sources` (one key partition of them). Returns the view's column types."""
    sources = sources or pool_sources(con, index_paths, scorer, joins)
    con.execute(f"CREATE OR REPLACE TEMP VIEW idx AS SELECT * FROM {sources['idx']}")
    idx_types = source_types(con, "idx")
    select, source = [f"i.{sql_name(c)}" for c in idx_types if c != HELDOUT], "idx i"
    for n, (_, column, what, complete) in enumerate(joins):
        table = sources[f"t{n}"]
        _check_join(con, "idx", table, what, complete)
        select.append(f"t{n}.{sql_name(column)}")
        source += f" LEFT JOIN {table} t{n} ON {_k(f't{n}')} = {_k('i')}"
    # The held-out split (index column `heldout`, Fig. 9) is in no filtered subset: not in the pool.
    kept = f" WHERE NOT coalesce(i.{HELDOUT}, false)" if HELDOUT in idx_types else ""
    con.execute(f"CREATE OR REPLACE TEMP VIEW pool AS SELECT {', '.join(select)} FROM {source}{kept}")
    return source_types(con, "pool")


def _mean_terms(column: str, sql_type: str) -> list[str]:
    """Sum and count of a column's defined values: NULL and NaN left out, as pandas' mean skips
    them. The sum is compensated (``fsum``), so it is the same whatever the threads' order."""
    value = sql_name(column) if sql_type in ("FLOAT", "DOUBLE") else f"TRY_CAST({sql_name(column)} AS DOUBLE)"
    defined = f"NOT isnan({value})"
    return [f"fsum(CAST({value} AS DOUBLE)) FILTER (WHERE {defined})", f"count({value}) FILTER (WHERE {defined})"]


def _mean(total: float | None, count: int, single: bool) -> float | None:
    """A mean from its sum and count in pandas' precision: a float32 column's mean is a float32
    (pandas divides a float32 sum by a float32 count), any other a float64; undefined is None."""
    if not count:
        return None
    value = float(np.float32(total) / np.float32(count)) if single else float(total) / count
    return None if math.isnan(value) else value


def subset_summary(con, source: str, scorer: str) -> dict:
    """curate's per-subset means (Avg. S(raw), share with text, CoTR, ...) and the parrot shares of
    the rows of ``source`` (a SQL table expression), in one aggregate query."""
    columns = {name: col.replace("{scorer}", scorer) for name, col in STAT_MEANS.items()}
    types = source_types(con, source)
    means = {name: col for name, col in columns.items() if col in types}
    shares = {name: col for name, col in SHARE_COLUMNS.items() if col in types}
    terms = [t for col in [*means.values(), *shares.values()] for t in _mean_terms(col, types[col])]
    values = iter(one_row(con, f"SELECT {', '.join(terms)} FROM {source}") if terms else ())
    # pandas keeps a float32 column's mean in float32; the shares are taken as float64 first.
    got = {name: _mean(next(values), next(values), types[col] == "FLOAT") for name, col in means.items()}
    got_shares = {name: _mean(next(values), next(values), False) for name in shares}
    return {**{name: got.get(name) for name in columns},
            "shares": {name: got_shares.get(name) for name in SHARE_COLUMNS}}


def _check_unique(con, source: str, what: str) -> None:
    """Refuse a subset that holds a key twice: keys must be unique across parts, and a key seen
    in two parts would be chosen (and materialised) twice."""
    dup = _examples(con, f"SELECT {_k()} FROM {source} GROUP BY {_k()} HAVING count(*) > 1")
    if dup:
        raise FilterError(f"{what}: key(s) {dup} occur in several parts; keys must be unique across the "
                          f"dataset's shards")


def _write_keys(con, source: str, keys_path: str) -> None:
    """The subset's keys (``__key__, part, shard``, sorted by key), written by the engine."""
    copy_to_parquet(con, f"SELECT {_k()}, part, shard FROM {source} ORDER BY {_k()}", keys_path)


def _files(folder: Path) -> str:
    """The parquet files of a scratch folder as one SQL source."""
    return parquet_source(sorted(str(p) for p in folder.glob("*.parquet")))


# --- the fix -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FixSettings:
    clip_threshold: float
    dedup_threshold: float
    aesthetic_threshold: float | None = None  # None: the aesthetic step is off

    @classmethod
    def from_config(cls, fix: Mapping[str, Any], aesthetic_on: bool) -> "FixSettings":
        return cls(float(fix["clip_threshold"]), float(fix["dedup_threshold"]),
                   float(fix["aesthetic_threshold"]) if aesthetic_on else None)


def _vectors(table: pa.Table, column: str) -> np.ndarray:
    """A list<float> column as an n x dim float32 matrix, without per-row Python objects."""
    arr = table.column(column).combine_chunks()
    if arr.null_count:
        raise FilterError(f"{arr.null_count} samples that reach deduplication have an empty image embedding")
    flat = arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(arr), -1) if len(arr) else np.empty((0, 1), dtype=np.float32)


def dedup_partitions(folder: Path, out: Path, priority: str, threshold: float) -> int:
    """Deduplicate each cluster's partition (``folder/_cluster=<c>/*.parquet``: key, priority,
    image embedding and the stat columns) with :func:`dedup_within_clusters`, one cluster in
    memory at a time; the kept rows (without embedding) go to ``out``, one file per cluster.
    Returns how many were removed."""
    removed = 0
    clusters = sorted(d for d in folder.iterdir() if d.is_dir()) if folder.exists() else []
    for i, directory in enumerate(tqdm(clusters, desc="dedup within clusters", unit="cluster", file=sys.stderr,
                                       mininterval=10)):
        table = pa.concat_tables([pq.read_table(f) for f in sorted(directory.glob("*.parquet"))])
        keys = np.asarray(table.column(KEY).to_pylist(), dtype=object)
        if len(set(keys)) != len(keys):
            dup = pd.Series(keys)[pd.Series(keys).duplicated()].head(3).tolist()
            raise FilterError(f"samples that reach deduplication repeat (index or embedding keys repeat across "
                              f"parts), e.g. {dup}")
        keep = dedup_within_clusters(keys, np.zeros(len(keys), dtype=np.int64), _vectors(table, "image_emb"),
                                     table.column(priority).to_numpy(), threshold, progress=False)
        removed += int((~keep).sum())
        pq.write_table(table.drop_columns(["image_emb"]).filter(pa.array(keep)), out / f"{i:06d}.parquet")
    return removed


# A sample in the fix's joins: its key and stat columns on the index side, its cluster, and
# its embedding's key on the other side, with the hash tables' overhead.
FIX_ROW_BYTES = 192


def fix_steps(types: Mapping[str, str], scorer: str, settings: FixSettings) -> list[tuple[str, str]]:
    """The fix's threshold steps: (what it removes, what passes it), each applied to what the
    previous ones left."""
    s_raw = f"{scorer}.s_raw"
    steps = [("spotted text", f"NOT {_flag('has_text')}"),
             (f"CLIP score <= {settings.clip_threshold}", _above(s_raw, types[s_raw], settings.clip_threshold))]
    if settings.aesthetic_threshold is not None:
        steps.append((f"aesthetic <= {settings.aesthetic_threshold}",
                      _above("aesthetic", types["aesthetic"], settings.aesthetic_threshold)))
    return steps


def _fix_partition(con, index_paths: Sequence[str], scorer: str, settings: FixSettings, joins: list,
                   parts: KeyPartitions, i: int, partitions: Path) -> dict:
    """Key partition ``i`` of the fix (``parts``: the pool's tables and the embeddings, split by
    key): its threshold counts, the clusters its survivors are in, and the survivors with their
    image embeddings appended to the folder ``partitions`` by cluster (for
    :func:`dedup_partitions`)."""
    sources = {name: parts.source(name, i) for name in parts.sources if name != "embed"}
    types = pool_view(con, index_paths, scorer, joins, sources)
    steps = fix_steps(types, scorer, settings)
    left, counts = OK_ROW, []
    for _, passes in steps:
        counts.append(f"count(*) FILTER (WHERE {left} AND NOT ({passes}))")
        left = f"{left} AND {passes}"
    cluster = sql_name("cluster")
    n_index, n_ok, *step_removed, n_left, n_unassigned = one_row(con, f"""
        SELECT count(*), count(*) FILTER (WHERE {OK_ROW}), {', '.join(counts)}, count(*) FILTER (WHERE {left}),
               count(*) FILTER (WHERE {left} AND {cluster} IS NULL)
        FROM pool""")
    clusters = {c for (c,) in con.execute(f"SELECT DISTINCT {cluster} FROM pool WHERE {left}").fetchall()}
    con.execute(f"CREATE OR REPLACE TEMP VIEW survivors AS SELECT * FROM pool WHERE {left}")
    if n_unassigned:
        absent = _examples(con, f"SELECT {_k()} FROM survivors WHERE {cluster} IS NULL")
        raise FilterError(f"samples that reach deduplication have no cluster assignment, e.g. {absent}")
    stat_columns = [c for c in types if c not in ("cluster", "aesthetic")]
    if n_left:
        embed = parts.source("embed", i)
        (n_absent,) = one_row(con, f"SELECT count(*) FROM survivors s WHERE NOT EXISTS "
                                   f"(SELECT 1 FROM {embed} e WHERE {_k('e')} = {_k('s')})")
        if n_absent:
            absent = _examples(con, f"SELECT {_k()} FROM survivors s WHERE NOT EXISTS "
                                    f"(SELECT 1 FROM {embed} e WHERE {_k('e')} = {_k('s')})")
            raise FilterError(f"{n_absent} samples that reach deduplication have no image embedding, e.g. {absent}")
        # Small flushes: a row carries a whole embedding, and rows wait per open partition.
        con.execute("SET partitioned_write_flush_threshold = 16384")
        con.execute(f"""COPY (SELECT {', '.join(f's.{sql_name(c)}' for c in stat_columns)}, s.{cluster} AS {GROUP},
                                     e.image_emb
                              FROM survivors s JOIN {embed} e ON {_k('e')} = {_k('s')})
                        TO {sql_string(str(partitions))}
                        (FORMAT parquet, PARTITION_BY ({GROUP}), APPEND true)""")
    return {"n_index": n_index, "n_ok": n_ok, "step_removed": step_removed, "n_left": n_left,
            "clusters": clusters, "names": [name for name, _ in steps], "stat_columns": stat_columns}


def select_fix(con, index_paths: Sequence[str], scorer: str, settings: FixSettings, assign_paths: Sequence[str],
               embed_paths: Sequence[str], aesthetic_paths: Sequence[str], scratch: Path) -> tuple[str, dict]:
    """The fix over the dataset's per-part tables: the source of its chosen rows (parquet files in
    ``scratch``) and its stats. The threshold steps and their counts are one aggregate query;
    the survivors with their image embeddings are written partitioned by cluster and
    deduplicated one cluster at a time (:func:`dedup_partitions`). Past the engine's memory the
    joins run in hash partitions of the keys (:func:`parrotscope.db.hash_partitions`), whose
    counts add up and whose survivors land in the same cluster folders."""
    joins = [(assign_paths, "cluster", "cluster assignment", False)]
    if settings.aesthetic_threshold is not None:
        joins.append((aesthetic_paths, "aesthetic", "aesthetic scores", False))
    partitions, kept = scratch / "clusters", scratch / "kept"
    kept.mkdir()
    with KeyPartitions(con, _k(), hash_partitions(con, [*index_paths, *embed_paths], FIX_ROW_BYTES)) as parts:
        for name, sql in pool_sources(con, index_paths, scorer, joins).items():
            parts.add(name, sql)
        parts.add("embed", _part_table(con, embed_paths, "image_emb", "image embeddings"))
        done = [_fix_partition(con, index_paths, scorer, settings, joins, parts, i, partitions)
                for i in range(parts.k)]
    n_index, n_ok = sum(d["n_index"] for d in done), sum(d["n_ok"] for d in done)
    removed = {name: int(sum(d["step_removed"][j] for d in done)) for j, name in enumerate(done[0]["names"])}
    n_clusters = len(set().union(*(d["clusters"] for d in done)))
    n_dups = 0
    if partitions.exists():
        n_dups = dedup_partitions(partitions, kept, f"{scorer}.s_raw", settings.dedup_threshold)
        shutil.rmtree(partitions)
    stat_columns = done[0]["stat_columns"]
    if not any(kept.glob("*.parquet")):  # nothing kept: an empty table with the columns, for the stats
        copy_to_parquet(con, f"SELECT {', '.join(map(sql_name, stat_columns))} FROM pool WHERE false",
                        kept / "none.parquet")
    removed[f"near-duplicate in its cluster (cosine >= {settings.dedup_threshold})"] = n_dups
    chosen = _files(kept)
    _check_unique(con, chosen, "the fix")
    (n_chosen,) = one_row(con, f"SELECT count(*) FROM {chosen}")
    if n_ok != sum(removed.values()) + n_chosen:
        raise AssertionError(f"fix accounting does not reconcile: {n_ok} ok, removed {removed}, {n_chosen} kept")
    stats = {
        "subset": subset_name(FIX), "method": FIX, "scorer": scorer,
        "settings": {"clip_threshold": settings.clip_threshold, "aesthetic_threshold": settings.aesthetic_threshold,
                     "dedup_threshold": settings.dedup_threshold,
                     "dedup_order": "within each cluster: S(raw) descending, ties by key; keep-first"},
        "n_index": int(n_index), "n_ok": int(n_ok), "n_skipped": int(n_index - n_ok),
        "n_heldout": heldout_count(con, index_paths), "removed": removed, "n_clusters_left": int(n_clusters),
        "n_eligible": int(n_chosen), "n_selected": int(n_chosen), "size": int(n_chosen),
        **subset_summary(con, chosen, scorer),
    }
    return chosen, stats


def run_fix(index_paths: Sequence[str], keys_path: str, stats_path: str, scorer: str, fix: Mapping[str, Any],
            assign_paths: Sequence[str], embed_paths: Sequence[str], aesthetic_paths: Sequence[str],
            engine: Engine = Engine()) -> dict:
    """Select the fix from the index parts, the cluster assignment, the embeddings and (optionally)
    the aesthetic scores; write its keys and stats. Intermediate tables go to the job's tmpdir."""
    settings = FixSettings.from_config(fix, bool(aesthetic_paths))
    con = connect(engine)
    # Embed tables hold a part in few row groups: a prefetched column chunk of vectors would be
    # hundreds of MB to GBs at once, past the engine's limit; page by page it is a page.
    con.execute("SET disable_parquet_prefetching = true")
    with tempfile.TemporaryDirectory(prefix="filter-fix-", dir=engine.tmpdir or None) as scratch:
        chosen, stats = select_fix(con, index_paths, scorer, settings, assign_paths, embed_paths, aesthetic_paths,
                                   Path(scratch))
        _write_keys(con, chosen, keys_path)
    write_json(stats, stats_path)
    log.info("fix: %d of %d ok samples kept; removed %s", stats["n_selected"], stats["n_ok"], stats["removed"])
    return stats


# --- the baselines -----------------------------------------------------------------------------


def score_sql(method: str, scorer: str) -> str:
    """The per-sample score a baseline ranks by, over the view ``pool`` (NULL where undefined;
    only its finite values rank or qualify)."""
    s_raw = number(f"{scorer}.s_raw")
    if method in ("clip_score", "random"):
        return s_raw
    if method == "tmars":  # masking changes nothing in a text-free image
        return f"(CASE WHEN {_flag('has_text')} THEN {number('s_tmars')} ELSE {s_raw} END)"
    if method == "flip_clip":
        return number("s_flip")
    raise FilterError(f"unknown baseline {method!r}; baselines: {list(BASELINES)}")


SCORED_ROWS = f"(SELECT * FROM scored WHERE {SCORE} IS NOT NULL)"
RANK = "_keyed_rank"  # the seeded keyed rank of a scored row (the uniform draw's order)


def _nth(con, columns: str, descending: bool, offset: int, n: int = 1) -> list[tuple]:
    """Rows ``offset .. offset+n-1`` of the scored rows by score (ascending, or descending) then
    key, in linear time (:func:`parrotscope.db.rows_in_order`): a rank anywhere in the dataset
    (the median, the cut of a top 30%) costs two scans, not a sort of the dataset."""
    value = f"-{SCORE}" if descending else SCORE
    return rows_in_order(con, SCORED_ROWS, value, sql_name(KEY), offset, n, columns)


def median_score(con, n_scored: int) -> float | None:
    """NumPy's median of the finite scores: the middle one, or the mean of the two middle ones
    computed as ``np.mean`` does, ``(a + b) / 2``."""
    if not n_scored:
        return None
    middle = [row[0] for row in _nth(con, SCORE, False, (n_scored - 1) // 2, 2 - n_scored % 2)]
    return float(middle[0]) if n_scored % 2 else float((middle[0] + middle[1]) / 2)


def criterion_sql(con, method: str, n_ok: int, n_scored: int, median: float | None,
                  fractions: Mapping[str, float]) -> tuple[str, int, str]:
    """A baseline's nominal eligibility (a predicate over ``scored``), how many meet it, and its
    description. A top fraction is the ``ceil(f * n)`` first in (score descending, key) order,
    i.e. every row before the last one of them, found by one sort."""
    if method in ("clip_score", "flip_clip"):
        f = float(fractions[method])
        m = min(math.ceil(f * n_scored), n_scored)
        if m == 0:
            return "false", 0, f"top {f:.0%} by score"
        ((cut, cut_key),) = _nth(con, f"{SCORE}, {sql_name(KEY)}", True, m - 1)
        key = sql_name(KEY)
        return (f"({SCORE} > {_double(cut)} OR ({SCORE} = {_double(cut)} AND {key} <= {sql_string(cut_key)}))",
                m, f"top {f:.0%} by score")
    if method == "tmars":
        if median is None:
            return "false", 0, "masked score >= median"
        where = f"{SCORE} >= {_double(median)}"
        (n,) = one_row(con, f"SELECT count(*) FROM scored WHERE {where}")
        return where, int(n), "masked score >= median"
    if method == "random":
        return "true", int(n_ok), "every status-ok sample"
    raise FilterError(f"unknown baseline {method!r}; baselines: {list(BASELINES)}")


BASELINE_ROW_BYTES = 160  # a hash-table row of the join with the re-scores: key, score, the table's overhead


def _score_partition(con, method: str, index_paths: Sequence[str], scorer: str, joins: list, rank: str,
                     sources: Mapping[str, str], out: Path) -> tuple[int, int]:
    """One key partition of a baseline's scored rows (``sources``: the pool's tables, that key
    range): its status-ok rows with the baseline's score and keyed rank written to ``out``;
    returns the partition's index and status-ok counts."""
    types = pool_view(con, index_paths, scorer, joins, sources)
    if method == "tmars":  # NaN or no row: the re-scoring missed an image it should have masked
        absent = _examples(con, f"SELECT {_k()} FROM pool WHERE {OK_ROW} AND {_flag('has_text')} "
                                f"AND coalesce(isnan(TRY_CAST(s_tmars AS DOUBLE)), true)")
        if absent:
            raise FilterError(f"T-MARS: images with text have no masked score, e.g. {absent}")
    stat_columns = [c for c in types if c not in ("s_tmars", "s_flip")]
    copy_to_parquet(con, f"""SELECT *, CASE WHEN isfinite({RAW_SCORE}) THEN {RAW_SCORE} END AS {SCORE},
                                    {rank}({sql_name(KEY)}) AS {RANK}
                             FROM (SELECT {', '.join(map(sql_name, stat_columns))},
                                          {score_sql(method, scorer)} AS {RAW_SCORE}
                                   FROM pool WHERE {OK_ROW})""", out)
    return one_row(con, f"SELECT count(*), count(*) FILTER (WHERE {OK_ROW}) FROM pool")


def select_baseline(con, method: str, index_paths: Sequence[str], scorer: str, size: int, seed: int,
                    fractions: Mapping[str, float], rescore_paths: Sequence[str], scratch: Path) -> tuple[str, dict]:
    """A baseline's ``size`` chosen rows (a parquet file in ``scratch``) and its stats (see the
    module docstring for the choice), by queries over the per-part tables."""
    if method not in BASELINES:
        raise FilterError(f"unknown baseline {method!r}; baselines: {list(BASELINES)}")
    if size < 1:
        raise FilterError(f"the fix kept no sample, so its baselines have size {size}; loosen filters.fix")
    joins = []
    if method in VARIANT_OF:
        joins.append((rescore_paths, f"s_{VARIANT_OF[method]}", f"{method} scores", True))
    rank = register_keyed_rank(con, seed)
    scored = scratch / "scored"
    scored.mkdir()
    # The scored rows, with their keyed rank, are written to scratch once: the median, a top
    # fraction's cut and the chosen rows each scan them several times (parrotscope.db's order
    # statistics), which would otherwise redo the join with the re-scores and the rank's hashing.
    # Past the engine's memory the join with the re-scores runs in hash partitions of the keys.
    k = hash_partitions(con, [*index_paths, *rescore_paths], BASELINE_ROW_BYTES) if joins else 1
    with KeyPartitions(con, _k(), k) as parts:
        for name, sql in pool_sources(con, index_paths, scorer, joins).items():
            parts.add(name, sql)
        counts = [_score_partition(con, method, index_paths, scorer, joins, rank,
                                   {name: parts.source(name, i) for name in parts.sources}, scored / f"{i}.parquet")
                  for i in range(parts.k)]
    n_index, n_ok = (sum(c[j] for c in counts) for j in range(2))
    con.execute(f"CREATE OR REPLACE TEMP VIEW scored AS SELECT * FROM {_files(scored)}")
    (n_scored,) = one_row(con, f"SELECT count({SCORE}) FROM scored")
    median = median_score(con, n_scored)
    eligible, n_eligible, described = criterion_sql(con, method, n_ok, n_scored, median, fractions)
    chosen = scratch / "chosen.parquet"
    # The first `size` rows in (keyed rank, key) or (score descending, key) order, chosen in
    # linear time (parrotscope.db.copy_first_in_order) since `size` is a share of the dataset.
    columns = f"* EXCLUDE ({RANK})"
    if n_eligible >= size:
        copy_first_in_order(con, f"(SELECT * FROM scored WHERE {eligible})", RANK, sql_name(KEY), size, chosen,
                            columns)
        how: dict = {"chosen_by": "uniform among the eligible", "shortfall": 0}
    else:
        if n_scored < size:
            raise SubsetTooSmall(f"only {n_scored} status-ok samples have a filter score, fewer than the fix's {size}")
        copy_first_in_order(con, SCORED_ROWS, f"-{SCORE}", sql_name(KEY), size, chosen, columns)
        how = {"chosen_by": f"top {size} by score (the criterion keeps {n_eligible} < {size})",
               "shortfall": size - n_eligible}
    source = parquet_source([chosen])
    _check_unique(con, source, f"baseline {method}")
    n_chosen, total, n_defined, lowest = one_row(con, f"SELECT count(*), fsum({RAW_SCORE}), count({RAW_SCORE}), "
                                                      f"min({SCORE}) FROM {source}")
    if how["shortfall"]:
        how["score_at_cut"] = float(lowest)  # the last taken in best-first order
    stats = {
        "subset": subset_name(method), "method": method, "scorer": scorer, "criterion": described,
        "fraction": fractions.get(method), "seed": int(seed), "median_score": median,
        "n_index": int(n_index), "n_ok": int(n_ok), "n_skipped": int(n_index - n_ok),
        "n_heldout": heldout_count(con, index_paths), "n_scored": int(n_scored), "n_eligible": int(n_eligible),
        "size": int(size),
        "n_selected": int(n_chosen), **how,
        # np.nanmean: NaN when every chosen score is undefined
        "mean_filter_score": (float(total) / n_defined if n_defined else math.nan) if n_chosen else None,
        **subset_summary(con, source, scorer),
    }
    return source, stats


def run_baseline(method: str, index_paths: Sequence[str], fix_stats_path: str, keys_path: str, stats_path: str,
                 scorer: str, seed: int, fractions: Mapping[str, float], rescore_paths: Sequence[str],
                 engine: Engine = Engine()) -> dict:
    """Select one baseline of the fix's size; write its keys and stats."""
    size = int(read_json(fix_stats_path)["n_selected"])
    con = connect(engine)
    with tempfile.TemporaryDirectory(prefix=f"filter-{method}-", dir=engine.tmpdir or None) as scratch:
        chosen, stats = select_baseline(con, method, index_paths, scorer, size, seed, fractions, rescore_paths,
                                        Path(scratch))
        _write_keys(con, chosen, keys_path)
    write_json(stats, stats_path)
    log.info("%s: %d chosen (%s; %d eligible)", method, stats["n_selected"], stats["chosen_by"], stats["n_eligible"])
    return stats


# --- configuration -----------------------------------------------------------------------------


def filter_subsets(config: Mapping) -> list[str]:
    """The subset names the filters write: the fix and every configured baseline."""
    return [subset_name(FIX), *(subset_name(b) for b in (config.get("filters") or {}).get("baselines", []))]


def filters_scorer(config: Mapping) -> str | None:
    """``filters.scorer``, else curate's scorer (``curate.scorer`` or the first scorer)."""
    from .curate import curate_scorer

    return (config.get("filters") or {}).get("scorer") or curate_scorer(config)


def check_filters(config: Mapping) -> None:
    """Relations the schema cannot express: names, scorers, references."""
    filters = config.get("filters") or {}
    scorers = (config.get("score") or {}).get("scorers") or {}
    scorer = filters_scorer(config)
    if scorer not in scorers:
        raise FilterError(f"config filters.scorer: {scorer!r} is not one of score.scorers {sorted(scorers)}")
    clash = set(filter_subsets(config)) & set((config.get("curate") or {}).get("subsets") or {})
    if clash:
        raise FilterError(f"config curate.subsets: {sorted(clash)} are names of filter subsets; rename them")
    aesthetic = filters.get("aesthetic")
    if aesthetic and aesthetic.get("scorer") not in scorers:
        raise FilterError(f"config filters.aesthetic.scorer: {aesthetic.get('scorer')!r} is not one of "
                          f"score.scorers {sorted(scorers)} (it must be a CLIP ViT-L/14)")
    known = {*filter_subsets(config), *((config.get("curate") or {}).get("subsets") or {}), POOL}
    unknown = [r for r in filters.get("references", []) if r not in known]
    if unknown:
        raise FilterError(f"config filters.references: {unknown} are neither filter subsets, curate subsets "
                          f"nor {POOL!r}")
