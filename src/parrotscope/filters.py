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
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import cv2
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from tqdm import tqdm

from .curate import SubsetTooSmall, sample_keys, subset_stats
from .inpaint import dilation_kernel, rasterise, text_rows, word_polygons
from .io import KEY, read_json, read_parquet, write_csv, write_json, write_parquet
from .shards import OK, ShardError

log = logging.getLogger(__name__)

PREFIX = "filter_"
FIX = "fix"
BASELINES = ("clip_score", "tmars", "flip_clip", "random")
METHODS = (FIX, *BASELINES)
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


class FilterError(ValueError):
    """A filter input or setting is wrong; the message names it."""


def subset_name(method: str) -> str:
    if method not in METHODS:
        raise FilterError(f"unknown filter {method!r}; filters: {list(METHODS)}")
    return PREFIX + method


def method_of(subset: str) -> str:
    return subset.removeprefix(PREFIX)


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


def variant_images(variant: str, samples: pd.DataFrame, spot: pd.DataFrame, match: pd.DataFrame,
                   shards: list[str], max_pixels: int, dilate_px: int, ring_px: int
                   ) -> tuple[list[str], Iterator[tuple[str, np.ndarray]]]:
    """The keys a variant re-scores and a stream of their transformed images, in shard order.

    ``tmars``: the part's images with spotted text (both stages ok), text mean-filled.
    ``flip``: every usable (ingest-ok) image, mirrored.
    """
    from .shards import iter_images

    if variant == "tmars":
        rows = text_rows(spot, match)
        ok = set(samples.loc[samples["status"] == OK, KEY])
        rows = rows[rows[KEY].isin(ok)]
        plans = {r[KEY]: (word_polygons(r), int(r["height"]), int(r["width"])) for r in rows.to_dict("records")}

        def masked() -> Iterator[tuple[str, np.ndarray]]:
            for key, image in iter_images(shards, set(plans), max_pixels):
                polys, h, w = plans[key]
                _checked_size(key, image, h, w)
                yield key, mean_fill(image, polys, dilate_px, ring_px)

        return sorted(plans), masked()
    if variant == "flip":
        keys = sorted(samples.loc[samples["status"] == OK, KEY])
        return keys, ((k, flip_horizontal(im)) for k, im in iter_images(shards, set(keys), max_pixels))
    raise FilterError(f"unknown rescore variant {variant!r}; variants: {list(VARIANTS)}")


def rescore_part(scorer, variant: str, samples: pd.DataFrame, spot: pd.DataFrame, match: pd.DataFrame,
                 shards: list[str], batch_size: int, max_pixels: int, dilate_px: int = 2,
                 ring_px: int = 3) -> pd.DataFrame:
    """One row per sample of the part: ``__key__``, ``status`` (the sample's), ``s_<variant>``
    (the CLIP score of the transformed image against its caption; empty where the variant does
    not apply: skipped samples, and text-free images for ``tmars``)."""
    from .score import score_table

    keys, images = variant_images(variant, samples, spot, match, shards, max_pixels, dilate_px, ring_px)
    captions = dict(zip(samples[KEY], samples["caption"]))
    scored = score_table(scorer, ((k, im, captions[k]) for k, im in images), batch_size, total=len(keys))
    if len(scored) != len(keys):
        missing = sorted(set(keys) - set(scored[KEY]))
        raise ShardError(f"{len(missing)} images to re-score were not found in the part's shards, "
                         f"e.g. {missing[:3]}; the spot table and the shards disagree")
    column = f"s_{variant}"
    out = samples[[KEY, "status"]].merge(scored.rename(columns={"s": column}), on=KEY, how="left",
                                         validate="one_to_one")
    return out


def run_rescore(variant: str, samples_path: str, spot_path: str, match_path: str, shards: list[str],
                spec: dict, out_path: str, batch_size: int, device: str, max_pixels: int,
                dilate_px: int = 2, ring_px: int = 3, threads: int = 1) -> dict:
    """Re-score one part's transformed images with one scorer; write the table; return counts.
    ``dilate_px`` and ``ring_px`` are T-MARS's masking settings (see :func:`mean_fill`)."""
    from .devices import set_torch_threads
    from .score import load_scorer

    set_torch_threads(threads)
    scorer = load_scorer(spec, device)
    table = rescore_part(scorer, variant, read_parquet(samples_path), read_parquet(spot_path),
                         read_parquet(match_path), shards, batch_size, max_pixels, dilate_px, ring_px)
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
    itself in order, so memory is ``block x kept`` rather than ``n x n``.
    """
    n = len(emb)
    keep = np.zeros(n, dtype=bool)
    kept: list[int] = []
    for start in range(0, n, block):
        chunk = emb[start:start + block]
        dup = np.zeros(len(chunk), dtype=bool)
        if kept:
            dup = (chunk @ emb[kept].T).max(axis=1) >= threshold
        local = chunk @ chunk.T
        chosen: list[int] = []
        for j in range(len(chunk)):
            if dup[j] or (chosen and local[j, chosen].max() >= threshold):
                continue
            chosen.append(j)
        kept.extend(start + j for j in chosen)
        keep[[start + j for j in chosen]] = True
    return keep


def normalise_rows(emb: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.where(norms == 0, 1, norms)


def dedup_within_clusters(keys: np.ndarray, clusters: np.ndarray, emb: np.ndarray, priority: np.ndarray,
                          threshold: float) -> np.ndarray:
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
    for group in tqdm(groups, desc="dedup within clusters", unit="cluster", file=sys.stderr, mininterval=10):
        keep[group[greedy_keep_first(emb[group], threshold)]] = True
    return keep


# --- the pool: the index with every per-part filter table joined by key -------------------------


def read_index(index_path: str, scorer: str) -> pd.DataFrame:
    """The index columns the filters and their stats read (those present)."""
    from .curate import STAT_MEANS

    available = pq.read_schema(index_path).names
    needed = [KEY, "part", "shard", "status", "has_text", f"{scorer}.s_raw",
              *SHARE_COLUMNS.values(), *(c.replace("{scorer}", scorer) for c in STAT_MEANS.values())]
    missing = [c for c in (KEY, "part", "shard", "status", "has_text", f"{scorer}.s_raw") if c not in available]
    if missing:
        raise FilterError(f"{index_path} has no column(s) {missing}; filters.scorer must be one of the "
                          f"index's scorers")
    return read_parquet(index_path, columns=[c for c in dict.fromkeys(needed) if c in available])


def join_parts(pool: pd.DataFrame, paths: Iterable[str], columns: Sequence[str], what: str,
               complete: bool = True) -> pd.DataFrame:
    """``pool`` with ``columns`` of the per-part tables joined by key (never by row order).

    Every key of the tables must be in the pool; with ``complete`` every pool key must be in them.
    """
    frames = [read_parquet(p, columns=[KEY, *columns]) for p in paths]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[KEY, *columns])
    if table[KEY].duplicated().any():
        raise FilterError(f"{what}: keys repeat across parts, e.g. {table.loc[table[KEY].duplicated(), KEY].head(3).tolist()}")
    unknown = set(table[KEY]) - set(pool[KEY])
    if unknown:
        raise FilterError(f"{what}: {len(unknown)} keys are not in the index, e.g. {sorted(unknown)[:3]}; "
                          f"rebuild the stale table")
    if complete and len(table) != len(pool):
        absent = sorted(set(pool[KEY]) - set(table[KEY]))
        raise FilterError(f"{what}: {len(absent)} samples of the index are missing, e.g. {absent[:3]}")
    return pool.merge(table, on=KEY, how="left", validate="one_to_one")


def survivor_embeddings(paths: Iterable[str], keys: set[str]) -> dict[str, np.ndarray]:
    """The image embeddings of ``keys`` only, read part by part from the embed stage's tables:
    the pool's embeddings need not fit in memory, only those of the samples reaching dedup."""
    from .vectors import read_embeddings

    out: dict[str, np.ndarray] = {}
    for path in paths:
        part_keys, emb = read_embeddings(path, ("image_emb",))
        wanted = np.flatnonzero(pd.Series(part_keys).isin(keys).to_numpy())
        out.update(zip(part_keys[wanted], emb["image_emb"][wanted]))
    return out


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


def _shares(chosen: pd.DataFrame) -> dict[str, float | None]:
    out = {}
    for name, col in SHARE_COLUMNS.items():
        values = chosen[col].dropna() if col in chosen.columns else pd.Series(dtype=float)
        out[name] = float(values.astype(float).mean()) if len(values) else None
    return out


def subset_summary(chosen: pd.DataFrame, scorer: str) -> dict:
    """curate's per-subset means (Avg. S(raw), share with text, CoTR, ...) and the parrot shares."""
    return {**subset_stats(chosen, scorer), "shares": _shares(chosen)}


def _keys_table(chosen: pd.DataFrame) -> pd.DataFrame:
    return chosen[[KEY, "part", "shard"]].sort_values(KEY, kind="stable").reset_index(drop=True)


def select_fix(pool: pd.DataFrame, scorer: str, settings: FixSettings,
               embeddings: Callable[[set[str]], dict[str, np.ndarray]]) -> tuple[pd.DataFrame, dict]:
    """The fix's keys and stats. ``pool``: the index columns plus ``cluster`` (and ``aesthetic``
    when that step is on); ``embeddings(keys)`` returns the image embedding of each key asked for
    (only the samples that reach deduplication are asked)."""
    s_raw = f"{scorer}.s_raw"
    ok = pool[pool["status"] == OK]
    removed: dict[str, int] = {}
    left = ok[~ok["has_text"].fillna(False).astype(bool)]
    removed["spotted text"] = len(ok) - len(left)
    passed = left[pd.to_numeric(left[s_raw], errors="coerce") > settings.clip_threshold]
    removed[f"CLIP score <= {settings.clip_threshold}"] = len(left) - len(passed)
    left = passed
    if settings.aesthetic_threshold is not None:
        passed = left[pd.to_numeric(left["aesthetic"], errors="coerce") > settings.aesthetic_threshold]
        removed[f"aesthetic <= {settings.aesthetic_threshold}"] = len(left) - len(passed)
        left = passed
    if left["cluster"].isna().any():
        absent = left.loc[left["cluster"].isna(), KEY].head(3).tolist()
        raise FilterError(f"samples that reach deduplication have no cluster assignment, e.g. {absent}")
    emb = embeddings(set(left[KEY]))
    absent = [k for k in left[KEY] if k not in emb]
    if absent:
        raise FilterError(f"{len(absent)} samples that reach deduplication have no image embedding, e.g. {absent[:3]}")
    matrix = np.stack([emb[k] for k in left[KEY]]) if len(left) else np.empty((0, 1), dtype=np.float32)
    keep = dedup_within_clusters(left[KEY].to_numpy(), left["cluster"].to_numpy(dtype=np.int64), matrix,
                                 pd.to_numeric(left[s_raw]).to_numpy(), settings.dedup_threshold)
    removed[f"near-duplicate in its cluster (cosine >= {settings.dedup_threshold})"] = int((~keep).sum())
    chosen = left[keep]
    if len(ok) != sum(removed.values()) + len(chosen):
        raise AssertionError(f"fix accounting does not reconcile: {len(ok)} ok, removed {removed}, {len(chosen)} kept")
    stats = {
        "subset": subset_name(FIX), "method": FIX, "scorer": scorer,
        "settings": {"clip_threshold": settings.clip_threshold, "aesthetic_threshold": settings.aesthetic_threshold,
                     "dedup_threshold": settings.dedup_threshold,
                     "dedup_order": "within each cluster: S(raw) descending, ties by key; keep-first"},
        "n_index": int(len(pool)), "n_ok": int(len(ok)), "n_skipped": int(len(pool) - len(ok)),
        "removed": removed, "n_clusters_left": int(left["cluster"].nunique()),
        "n_eligible": int(len(chosen)), "n_selected": int(len(chosen)), "size": int(len(chosen)),
        **subset_summary(chosen, scorer),
    }
    return _keys_table(chosen), stats


def run_fix(index_path: str, keys_path: str, stats_path: str, scorer: str, fix: Mapping[str, Any],
            assign_paths: list[str], embed_paths: list[str], aesthetic_paths: list[str]) -> dict:
    """Select the fix from the index, the cluster assignment, the embeddings and (optionally) the
    aesthetic scores; write its keys and stats."""
    settings = FixSettings.from_config(fix, bool(aesthetic_paths))
    pool = read_index(index_path, scorer)
    pool = join_parts(pool, assign_paths, ["cluster"], "cluster assignment", complete=False)
    if aesthetic_paths:
        pool = join_parts(pool, aesthetic_paths, ["aesthetic"], "aesthetic scores", complete=False)
    keys, stats = select_fix(pool, scorer, settings, lambda wanted: survivor_embeddings(embed_paths, wanted))
    write_parquet(keys, keys_path)
    write_json(stats, stats_path)
    log.info("fix: %d of %d ok samples kept; removed %s", stats["n_selected"], stats["n_ok"], stats["removed"])
    return stats


# --- the baselines -----------------------------------------------------------------------------


def rank_order(scores: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Positions of the finite scores, best first, ties by key (NaN scores left out)."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(scores))
    order = np.lexsort((np.asarray(keys, dtype=object)[finite], -scores[finite]))
    return finite[order]


def top_fraction(scores: np.ndarray, keys: np.ndarray, fraction: float) -> np.ndarray:
    """Mask of the ``ceil(fraction * n)`` best of the n finite scores (ties at the cut by key)."""
    order = rank_order(scores, keys)
    mask = np.zeros(len(scores), dtype=bool)
    mask[order[:math.ceil(fraction * len(order))]] = True
    return mask


def at_least_median(scores: np.ndarray) -> np.ndarray:
    """Mask of the finite scores at or above their median (every tie with the median kept)."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    if not finite.any():
        return finite
    return finite & (scores >= np.median(scores[finite]))


def criterion(method: str, scores: np.ndarray, keys: np.ndarray, fractions: Mapping[str, float]
              ) -> tuple[np.ndarray, str]:
    """A baseline's nominal eligibility mask and its description."""
    if method in ("clip_score", "flip_clip"):
        f = float(fractions[method])
        return top_fraction(scores, keys, f), f"top {f:.0%} by score"
    if method == "tmars":
        return at_least_median(scores), "masked score >= median"
    if method == "random":
        return np.ones(len(scores), dtype=bool), "every status-ok sample"
    raise FilterError(f"unknown baseline {method!r}; baselines: {list(BASELINES)}")


def choose_sized(keys: np.ndarray, scores: np.ndarray, eligible: np.ndarray, size: int, seed: int
                 ) -> tuple[np.ndarray, dict]:
    """Positions of ``size`` samples: uniform among the eligible when there are enough, else the
    ``size`` best by score (a shortfall; they include every eligible sample)."""
    n_eligible = int(eligible.sum())
    if n_eligible >= size:
        idx = np.flatnonzero(eligible)
        return idx[sample_keys(pd.Series(keys[idx]), size, seed)], {"chosen_by": "uniform among the eligible",
                                                                    "shortfall": 0}
    order = rank_order(scores, keys)
    if len(order) < size:
        raise SubsetTooSmall(f"only {len(order)} status-ok samples have a filter score, fewer than the fix's {size}")
    taken = order[:size]
    return taken, {"chosen_by": f"top {size} by score (the criterion keeps {n_eligible} < {size})",
                   "shortfall": size - n_eligible, "score_at_cut": float(scores[taken[-1]])}


def baseline_scores(method: str, ok: pd.DataFrame, scorer: str) -> np.ndarray:
    """The per-sample score a baseline ranks by (NaN where undefined)."""
    s_raw = pd.to_numeric(ok[f"{scorer}.s_raw"], errors="coerce").to_numpy(dtype=np.float64)
    if method in ("clip_score", "random"):
        return s_raw
    if method == "tmars":
        has_text = ok["has_text"].fillna(False).astype(bool).to_numpy()
        masked = pd.to_numeric(ok["s_tmars"], errors="coerce").to_numpy(dtype=np.float64)
        if np.isnan(masked[has_text]).any():
            absent = ok.loc[has_text & np.isnan(masked), KEY].head(3).tolist()
            raise FilterError(f"T-MARS: images with text have no masked score, e.g. {absent}")
        return np.where(has_text, masked, s_raw)  # masking changes nothing in a text-free image
    if method == "flip_clip":
        return pd.to_numeric(ok["s_flip"], errors="coerce").to_numpy(dtype=np.float64)
    raise FilterError(f"unknown baseline {method!r}; baselines: {list(BASELINES)}")


def select_baseline(method: str, pool: pd.DataFrame, scorer: str, size: int, seed: int,
                    fractions: Mapping[str, float]) -> tuple[pd.DataFrame, dict]:
    """A baseline's ``size`` keys and its stats (see the module docstring for the choice)."""
    ok = pool[pool["status"] == OK].reset_index(drop=True)
    if size < 1:
        raise FilterError(f"the fix kept no sample, so its baselines have size {size}; loosen filters.fix")
    scores = baseline_scores(method, ok, scorer)
    keys = ok[KEY].to_numpy(dtype=object)
    eligible, described = criterion(method, scores, keys, fractions)
    taken, how = choose_sized(keys, scores, eligible, size, seed)
    chosen = ok.iloc[np.sort(taken)]
    finite = np.isfinite(scores)
    stats = {
        "subset": subset_name(method), "method": method, "scorer": scorer, "criterion": described,
        "fraction": fractions.get(method), "seed": int(seed),
        "median_score": float(np.median(scores[finite])) if finite.any() else None,
        "n_index": int(len(pool)), "n_ok": int(len(ok)), "n_skipped": int(len(pool) - len(ok)),
        "n_scored": int(finite.sum()), "n_eligible": int(eligible.sum()), "size": int(size),
        "n_selected": int(len(chosen)), **how,
        "mean_filter_score": float(np.nanmean(scores[taken])) if len(taken) else None,
        **subset_summary(chosen, scorer),
    }
    return _keys_table(chosen), stats


def run_baseline(method: str, index_path: str, fix_stats_path: str, keys_path: str, stats_path: str,
                 scorer: str, seed: int, fractions: Mapping[str, float], rescore_paths: list[str]) -> dict:
    """Select one baseline of the fix's size; write its keys and stats."""
    size = int(read_json(fix_stats_path)["n_selected"])
    pool = read_index(index_path, scorer)
    if method in VARIANT_OF:
        column = f"s_{VARIANT_OF[method]}"
        pool = join_parts(pool, rescore_paths, [column], f"{method} scores")
    keys, stats = select_baseline(method, pool, scorer, size, seed, fractions)
    write_parquet(keys, keys_path)
    write_json(stats, stats_path)
    log.info("%s: %d chosen (%s; %d eligible)", method, stats["n_selected"], stats["chosen_by"], stats["n_eligible"])
    return stats


# --- tables ------------------------------------------------------------------------------------

TABLE10_GROUPS = {"ImageNet": "IN", "ImageNet dist. shifts": "IN dist. shifts", "VTAB": "VTAB",
                  "Retrieval": "Retrieval", "Average": "Avg."}


def model_label(subset: str, arch: str, archs: Sequence[str]) -> str:
    return subset if len(archs) == 1 else f"{subset} {arch}"


def build_table10(models: Sequence[tuple[str, str]], archs: Sequence[str], evals: Sequence[dict],
                  syncs: Sequence[dict], samples: Sequence[int], dataset: str, decimals: int) -> pd.DataFrame:
    """The paper's Table 10: one column per (subset, arch) model, rows Data, Sync. Score (mean ±
    std, lower = reads less), the DataComp groups that any model has, and two rows the paper does
    not print: the sync gap and word accuracy (the raw Sync. Score of tiny from-scratch models is
    not comparable between them; the gap is, see NOTES.md)."""
    def fmt(x) -> str:
        return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{float(x):.{decimals}f}"

    columns: dict[str, dict[str, str]] = {}
    for (subset, arch), result, sync, n in zip(models, evals, syncs, samples):
        col = {"Data": f"{n} ({dataset})",
               "Sync. Score ↓": f"{fmt(sync.get('sync_score_mean'))} ± {fmt(sync.get('sync_score_std'))}"}
        for group, label in TABLE10_GROUPS.items():
            col[label] = fmt(result["groups"].get(group, {}).get("value"))
        col["sync gap ↓ (added)"] = fmt(sync.get("sync_gap_mean"))
        col["word acc. ↓ (added)"] = fmt(sync.get("word_accuracy"))
        columns[model_label(subset, arch, archs)] = col
    table = pd.DataFrame(columns)
    empty = [r for r in TABLE10_GROUPS.values() if (table.loc[r] == "").all()]
    table = table.drop(index=empty)
    table.index.name = "metric"
    return table


def run_table10(subsets: list[str], archs: list[str], eval_paths: list[str], sync_paths: list[str],
                size_paths: list[str], dataset: str, out_csv: str, decimals: int) -> None:
    """Evaluations subset-major over ``archs``; ``size_paths`` one per subset: its stats.json, or
    parts.json for the model trained on the whole pool."""
    from .train import count_training_samples

    sizes = [int(read_json(p)["n_selected"]) if p.endswith("stats.json") else count_training_samples(p)
             for p in size_paths]
    models = [(s, a) for s in subsets for a in archs]
    samples = [n for n in sizes for _ in archs]
    table = build_table10(models, archs, [read_json(p) for p in eval_paths], [read_json(p) for p in sync_paths],
                          samples, dataset, decimals)
    write_csv(table, out_csv)


def build_filters_table(subsets: list[str], archs: list[str], evals: list[dict], syncs: list[dict],
                        stats: list[dict]) -> pd.DataFrame:
    """Tables 3-6's columns per filter subset (tables.build_curation_table), plus the shares of
    text and parrot captions each filter left in its subset."""
    from .tables import build_curation_table

    table = build_curation_table(subsets, archs, evals, syncs, stats)
    shares = pd.DataFrame.from_dict({s: st.get("shares", {}) for s, st in zip(subsets, stats)}, orient="index")
    shares = shares.dropna(axis=1, how="all").astype(float)
    table = table.join(shares)
    table.insert(0, "filter", [method_of(s) for s in subsets])
    return table


def run_filters_table(subsets: list[str], archs: list[str], eval_paths: list[str], sync_paths: list[str],
                      stats_paths: list[str], out_csv: str, decimals: int) -> None:
    table = build_filters_table(subsets, archs, [read_json(p) for p in eval_paths],
                                [read_json(p) for p in sync_paths], [read_json(p) for p in stats_paths])
    write_csv(table.round(decimals), out_csv)


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
