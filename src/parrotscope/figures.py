"""The paper's profiling figures (Figs. 1, 3, 4 and 5 left) from the parrot index and the clusters.

* **Fig. 3a** (:func:`plot_cluster_text_share`): per image cluster, the share of images without
  embedded text, with text but no co-embedded word, and with co-embedded words; clusters sorted.
* **Fig. 3b / Fig. 1** (:func:`plot_gallery`): the top CLIP-score sample of each of the most
  text-heavy clusters (Fig. 3b), and examples from the pairs with the top 5% CLIP scores (Fig. 1),
  with the spotted word polygons drawn (co-embedded words red, other spotted words blue) and the
  caption underneath, co-embedded words highlighted.
* **Fig. 4a** (:func:`plot_word_count_heatmap`): caption word count against co-embedded word count.
* **Fig. 4b** (:func:`plot_area_vs_score`): total co-embedded text area against the CLIP score.
* **Fig. 4c** (:func:`plot_size_vs_parrot`): text size against the probability that a spotted word
  is parroted by the caption.
* **Fig. 5 left** (:func:`plot_cluster_removal_scores`): per cluster, the mean CLIP score of the raw
  images and after each text removal.

Where the data has ground truth (the demo generator records the rendered words and their
polygons), Figs. 3a and 4a-c get a ground-truth panel beside the spotted one. The paper merges its
4,000 clusters into 100 for readability; here clusters beyond ``max_clusters`` are merged the
same way (K-means on the centroids, weighted by cluster size) for Figs. 3a and 5.

Every plot function returns its matplotlib Figure (tests read the axes); ``run_*`` functions
read the workflow's files and write PNGs atomically.

**Dataset-wide, never the dataset in memory.** The figures summarise every sample of the study
dataset (LAION-2B: 2e9), so their inputs are queries over the per-part index, cluster assignment
and spot tables through :mod:`parrotscope.db`: the cluster profile is one GROUP BY over the index
joined by key with the assignments (:func:`cluster_study`), Fig. 4a one GROUP BY, and only small
results come back: per-cluster sums, the gallery's few picked rows (Fig. 1's top-``top_fraction``
cut is a sort by the engine, its examples a keyed-hash draw like :func:`parrotscope.curate.sample_keys`),
and the seeded sample of at most ``max_images`` images whose words Figs. 4b-c measure. Memory is
the engine's limit plus what ``max_images`` and the gallery sizes bound, whatever the dataset size.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from .db import (Engine, KeyPartitions, QueryError, columns_of, connect, hash_partitions, number, one_row,
                 parquet_source, query_df, register_keyed_rank, sql_name, sql_string)
from .inpainted import decode_inpainted, iter_inpainted_encoded
from .io import KEY, atomic_path, write_csv
from .match import Normalisation, normalise_word, truth_record

# Fig. 3a's three data types, in stacking order: (column, legend label, colour).
TEXT_TYPES = (
    ("no_text", "no embedded text", "#bdbdbd"),
    ("text_no_co", "embedded text, no co-emb. word", "#6baed6"),
    ("co", "co-embedded text (parrot caption)", "#de2d26"),
)
# Fig. 5 (left): (score column, label, which images, colour, line style).
REMOVALS = (
    ("s_raw", "S(raw), images w/ text", "text", "black", "-"),
    ("s_rand_all", "random All-Emb. removal", "text", "tab:blue", ":"),
    ("s_all", "All-Emb. text removal", "text", "tab:blue", "-"),
    ("s_rand_co", "random Co-Emb. removal", "co", "tab:red", ":"),
    ("s_co", "Co-Emb. text removal", "co", "tab:red", "-"),
)
CO_COLOUR, OTHER_COLOUR, HIGHLIGHT = (222, 45, 38), (33, 113, 181), (255, 222, 120)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out_png: str | os.PathLike, dpi: int = 120) -> None:
    """Write a figure as PNG atomically and free it."""
    fig.tight_layout()
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    _pyplot().close(fig)


def _undefined(value) -> bool:
    """Whether a list cell is missing: None, NaN (pandas) or pd.NA (DuckDB's NULL)."""
    return value is None or (np.ndim(value) == 0 and bool(pd.isna(value)))


def _as_set(values) -> set[str]:
    return set() if _undefined(values) else {str(v) for v in values}


def has_truth(con, index_paths: Sequence[str]) -> bool:
    """Whether the processed samples carry the demo generator's ground truth measures (every one
    of them, as :func:`parrotscope.tables.has_complete_truth`, and there is at least one)."""
    if not {"gt_has_text", "gt_is_parrot", "gt_co_words", "gt_cotr"} <= set(columns_of(con, index_paths)):
        return False
    n_ok, missing = one_row(con, f"SELECT count(*) FILTER (WHERE status = 'ok'), "
                                 f"count(*) FILTER (WHERE status = 'ok' AND {number('gt_cotr')} IS NULL) "
                                 f"FROM {parquet_source(index_paths)}")
    return n_ok > 0 and missing == 0


def _keyed_rank(con, seed: int) -> str:
    """The seeded keyed-hash rank function (:func:`parrotscope.db.register_keyed_rank`) on this
    connection, registered on first use: DuckDB refuses a second function of the same name."""
    name = f"keyed_rank_{int(seed)}"
    if not one_row(con, "SELECT count(*) FROM duckdb_functions() WHERE function_name = ?", [name])[0]:
        register_keyed_rank(con, seed, name)
    return name


def _require(con, paths: Sequence[str], columns: Sequence[str], what: str) -> dict[str, str]:
    """The files' column types, or a :class:`QueryError` naming the columns the step needs."""
    types = columns_of(con, paths)
    missing = [c for c in columns if c not in types]
    if missing:
        raise QueryError(f"the {what} has no column(s) {missing}: rebuild it (or check the configured scorer)")
    return types


# ----------------------------------------------------------------------------------------------
# Cluster profiles (Fig. 3a, Fig. 5 left)


def kind_sql(prefix: str = "") -> str:
    """Fig. 3a's data type of a sample as SQL: ``co`` (parroted), else ``text_no_co`` (with
    text), else ``no_text``; an undefined flag counts as false."""
    parrot = f"coalesce({sql_name(prefix + 'is_parrot')}, false)"
    text = f"coalesce({sql_name(prefix + 'has_text')}, false)"
    return f"CASE WHEN {parrot} THEN 'co' WHEN {text} THEN 'text_no_co' ELSE 'no_text' END"


# Fig. 5's samples per removal: with text, or with co-embedded text (spotted).
REMOVAL_SAMPLES = {"text": "kind <> 'no_text'", "co": "kind = 'co'"}


@dataclass
class ClusterStudy:
    """What the profiles of clusters (or of merged groups of clusters) are computed from: per
    cluster with processed, assigned samples, the sample count ``n``, the counts of each data type
    (``no_text``, ``gt_co``, ...), the sum and count of the defined scores of each removal setup
    (``sum_s_raw``/``cnt_s_raw``, ..., ``sum_s_raw_all`` over every sample) and ``best_key``, the
    key of its top-S sample (Fig. 3b). Counts and sums add up over clusters, so a merged group's
    profile follows exactly without a second pass over the data."""

    sums: pd.DataFrame
    truth: bool
    dtypes: dict  # score column -> the float type its values have in the index


# One assigned key in the engine's join: the key, its cluster and copies, the index side's
# flags and scores, and the hash tables' own overhead.
STUDY_ROW_BYTES = 160


def cluster_study(con, index_paths: Sequence[str], assign_paths: Sequence[str], scorer: str) -> ClusterStudy:
    """The index parts joined by key with the cluster assignment parts, grouped by cluster: one
    pass of the engine per hash partition of the keys (one partition unless the join would not fit
    the engine, :func:`parrotscope.db.hash_partitions`); counts and sums add up over partitions.

    The join is one to one, as a join by key must be: a key assigned twice, assigned but not in
    the index, or in the index twice is an error naming a few. Index samples without an
    assignment are left out, as are clusters without processed samples.
    """
    columns = [KEY, "status", "has_text", "is_parrot", *(f"{scorer}.{c}" for c, *_ in REMOVALS)]
    types = _require(con, index_paths, columns, "parrot index")
    _require(con, assign_paths, [KEY, "cluster"], "cluster assignment")
    truth = has_truth(con, index_paths)
    key, index = sql_name(KEY), parquet_source(index_paths)
    prefixes = [""] + (["gt_"] if truth else [])
    scores = [c for c, *_ in REMOVALS]
    index_side = ", ".join([key, "coalesce(status = 'ok', false) AS ok",
                            *(f"{kind_sql(p)} AS {p}kind" for p in prefixes),
                            *(f"{number(f'{scorer}.{c}')} AS {c}" for c in scores)])
    with KeyPartitions(con, key, hash_partitions(con, [*index_paths, *assign_paths], STUDY_ROW_BYTES)) as parts:
        parts.add("index", f"(SELECT {index_side} FROM {index})")
        parts.add("assign", f"(SELECT {key}, cluster FROM {parquet_source(assign_paths)})")
        done = [_study_partition(con, parts.source("index", i), parts.source("assign", i), prefixes, key)
                for i in range(parts.k)]
    twice = sum(t for t, _ in done)
    rows = _combine_partitions([r for _, r in done])
    if twice:
        examples = [k for (k,) in con.execute(f"SELECT {key} FROM {index} GROUP BY {key} HAVING count(*) > 1 "
                                              f"ORDER BY {key} LIMIT 3").fetchall()]
        raise ValueError(f"{twice} key(s) in the index twice, e.g. {examples}: keys must be unique across the "
                         f"dataset's parts")
    checks = []
    for i, problem in enumerate(STUDY_PROBLEMS):
        checks += [f"problem{i}", f"example{i}"]
        count = int(rows[f"problem{i}"].sum())
        if count:
            examples = sorted(rows[f"example{i}"].dropna())[:3]
            raise ValueError(f"{count} key(s) {problem}, e.g. {examples}: the cluster assignments must match "
                             f"the index one to one (rerun cluster_assign for this index)")
    sums = rows[rows["cluster"].notna() & (rows["n"] > 0)].drop(columns=checks)
    sums = sums.astype({"cluster": "int64"}).set_index("cluster").sort_index()
    dtypes = {c: np.float32 if types[f"{scorer}.{c}"] == "FLOAT" else np.float64 for c in scores}
    return ClusterStudy(sums=sums, truth=truth, dtypes=dtypes)


# The one-to-one checks of the study's join: problem -> the rows it counts.
STUDY_PROBLEMS = {"assigned twice": "copies > 1", "assigned but not in the index": "ok IS NULL"}


def _study_partition(con, index: str, assign: str, prefixes: list[str], key: str) -> tuple[int, pd.DataFrame]:
    """One key partition of the study (``index``: its index-side rows, with ``ok``, the data
    types and the scores; ``assign``: its assignments): how many index keys repeat, and its
    per-cluster counts, sums, checks and top-S sample (``best_key`` with its score ``best_s``)."""
    (twice,) = one_row(con, f"SELECT count(*) - count(DISTINCT {key}) FROM {index}")
    use = "copies = 1 AND ok"  # ok is NULL for an assigned key the index lacks
    aggregates = [f"count(*) FILTER (WHERE {use}) AS n"]
    for p in prefixes:
        aggregates += [f"count(*) FILTER (WHERE {use} AND {p}kind = '{t}') AS {p}{t}" for t, _, _ in TEXT_TYPES]
    for column, _, which, _, _ in REMOVALS:
        where = f"{use} AND {REMOVAL_SAMPLES[which]}"
        aggregates += [f"fsum({column}) FILTER (WHERE {where}) AS sum_{column}",
                       f"count({column}) FILTER (WHERE {where}) AS cnt_{column}"]
    aggregates += [f"fsum(s_raw) FILTER (WHERE {use}) AS sum_s_raw_all",
                   f"count(s_raw) FILTER (WHERE {use}) AS cnt_s_raw_all",
                   # the highest S, ties to the smallest key, so the pick does not hang on row order
                   f"arg_min({key}, (-s_raw, {key})) FILTER (WHERE {use} AND s_raw IS NOT NULL) AS best_key",
                   f"max(s_raw) FILTER (WHERE {use}) AS best_s"]
    for n, where in enumerate(STUDY_PROBLEMS.values()):
        aggregates += [f"count(*) FILTER (WHERE {where}) AS problem{n}",
                       f"min({key}) FILTER (WHERE {where}) AS example{n}"]
    rows = query_df(con, f"""
        WITH assigned AS (SELECT {key}, any_value(cluster) AS cluster, count(*) AS copies FROM {assign} GROUP BY {key})
        SELECT cluster, {", ".join(aggregates)}
        FROM assigned LEFT JOIN {index} USING ({key}) GROUP BY cluster""")
    return int(twice), rows


def _combine_partitions(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The per-cluster rows of every partition as one: counts and (compensated) sums added, the
    examples' smallest key, and the top-S sample of the partition with the highest S (ties: the
    smallest key, as within a partition). One partition is returned as it is, less ``best_s``."""
    if len(frames) == 1:
        return frames[0].drop(columns="best_s")
    rows = pd.concat(frames, ignore_index=True)
    rows["cluster"] = rows["cluster"].astype("Float64")  # NULL (unassigned index side) stays a group
    best = (rows[rows["best_key"].notna()].sort_values(["cluster", "best_s", "best_key"], ascending=[True, False, True])
            .drop_duplicates("cluster").set_index("cluster")["best_key"])
    examples = [c for c in rows.columns if c.startswith("example")]
    added = [c for c in rows.columns if c not in ("cluster", "best_key", "best_s", *examples)]
    grouped = rows.groupby("cluster", dropna=False, sort=False)
    out = grouped[added].agg(lambda v: (math.fsum(v.dropna()) if v.notna().any() else np.nan)
                             if v.name.startswith("sum_") else v.sum())
    for c in examples:
        out[c] = grouped[c].min()
    out["best_key"] = best.reindex(out.index)
    return out.reset_index()[[c for c in frames[0].columns if c != "best_s"]]


def _mean(total: pd.Series, count: pd.Series, dtype) -> pd.Series:
    """``total / count`` (NaN where nothing was counted) in the scores' own precision. The
    profile used to be pandas' mean, which averages the index's float32 scores in float32;
    dividing the (exact) sum the same way keeps the profile's printed digits as they were."""
    with np.errstate(invalid="ignore", divide="ignore"):
        values = total.to_numpy(np.float64).astype(dtype) / count.to_numpy().astype(dtype)
    return pd.Series(np.where(count.to_numpy() > 0, values, np.nan).astype(dtype), index=total.index)


def cluster_profile(study: ClusterStudy, groups: np.ndarray | None = None) -> pd.DataFrame:
    """Per cluster, or per group of clusters (``groups[cluster]``): the sample count, the shares
    of Fig. 3a's data types (and their ground truth ``gt_*`` where known), the mean S of each
    removal setup over its samples (Fig. 5 left), the counts with text and with co-embedded
    text, and the mean S(raw) of every sample."""
    sums, by = study.sums.drop(columns="best_key"), "cluster"
    if groups is not None:
        sums, by = sums.groupby(np.asarray(groups)[sums.index.to_numpy()]).sum(), "group"
    n = sums["n"]
    prof = pd.DataFrame({"n": n})
    for prefix in [""] + (["gt_"] if study.truth else []):
        for t, _, _ in TEXT_TYPES:
            prof[f"{prefix}share_{t}"] = sums[f"{prefix}{t}"] / n
        prof[f"{prefix}share_text"] = 1 - prof[f"{prefix}share_no_text"]
    for column, *_ in REMOVALS:
        prof[f"mean_{column}"] = _mean(sums[f"sum_{column}"], sums[f"cnt_{column}"], study.dtypes[column])
    prof["n_text"] = n - sums["no_text"]
    prof["n_co"] = sums["co"]
    prof["mean_s_raw_all"] = _mean(sums["sum_s_raw_all"], sums["cnt_s_raw_all"], study.dtypes["s_raw"])
    prof.index.name = by
    return prof


def merge_clusters(centroids: np.ndarray, sizes: np.ndarray, n_groups: int, seed: int = 0) -> np.ndarray:
    """Group of each cluster when ``n_groups`` < clusters: K-means on the centroids weighted by
    cluster size (the paper shows its 4,000 clusters merged into 100)."""
    import faiss

    from .cluster import nearest_centroid

    centroids = np.ascontiguousarray(centroids, np.float32)
    if n_groups >= len(centroids):
        return np.arange(len(centroids), dtype=np.int32)
    kmeans = faiss.Kmeans(centroids.shape[1], n_groups, niter=50, nredo=3, seed=seed, verbose=False,
                          min_points_per_centroid=1, max_points_per_centroid=len(centroids))
    kmeans.train(centroids, weights=np.asarray(sizes, np.float32) + 1e-3)
    return nearest_centroid(np.asarray(kmeans.centroids, np.float32), centroids)[0]


def sorted_by_text(profile: pd.DataFrame, prefix: str = "") -> pd.DataFrame:
    """Clusters by share of images with text, then share with co-embedded text (descending)."""
    return profile.sort_values([f"{prefix}share_text", f"{prefix}share_co"], ascending=False, kind="stable")


def plot_cluster_text_share(profile: pd.DataFrame, title: str = ""):
    """Fig. 3a: stacked shares per cluster, clusters sorted by share with text; a ground-truth
    panel (same cluster order) when the profile has ``gt_*`` columns."""
    plt = _pyplot()
    order = sorted_by_text(profile).index
    panels = [("", "spotted text")] + ([("gt_", "ground truth: rendered words")]
                                        if "gt_share_co" in profile.columns else [])
    width = max(9.0, min(20.0, 0.12 * len(order) + 6))
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, 3.4 * len(panels)), squeeze=False, sharex=True)
    x = np.arange(len(order))
    for ax, (prefix, name) in zip(axes[:, 0], panels):
        bottom = np.zeros(len(order))
        for t, label, colour in TEXT_TYPES:
            share = profile.loc[order, f"{prefix}share_{t}"].to_numpy(float)
            ax.bar(x, share, bottom=bottom, width=0.9, color=colour, label=label)
            bottom += share
        ax.set(ylim=(0, 1), ylabel="share of images", title=f"Fig. 3a: data types per image cluster ({name})")
        ax.grid(axis="y", alpha=0.3)
    axes[-1, 0].set_xlabel("image cluster (sorted by share of images with spotted text)")
    if len(order) <= 40:
        axes[-1, 0].set_xticks(x, [str(c) for c in order], fontsize=7)
    axes[0, 0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def plot_cluster_removal_scores(profile: pd.DataFrame, title: str = ""):
    """Fig. 5 (left): per cluster with text, mean S of the raw images and after each removal;
    clusters sorted by the mean raw S of their images with text."""
    plt = _pyplot()
    prof = profile[profile["n_text"] > 0].sort_values("mean_s_raw", ascending=False, kind="stable")
    fig, ax = plt.subplots(figsize=(max(9.0, min(20.0, 0.12 * len(prof) + 6)), 4.2))
    x = np.arange(len(prof))
    for column, label, _, colour, style in REMOVALS:
        ax.plot(x, prof[f"mean_{column}"].to_numpy(float), style, marker="o", ms=3, color=colour, label=label)
    ax.set(xlabel="image cluster (sorted by mean raw S of its images with text)", ylabel="mean CLIP score S",
           title="Fig. 5 (left): mean S per cluster under each text removal")
    if len(prof) <= 40:
        ax.set_xticks(x, [str(c) for c in prof.index], fontsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def run_cluster_figures(index_paths: Sequence[str], assign_paths: Sequence[str], model_path: str, scorer: str,
                        max_clusters: int, seed: int, out_profile: str, out_fig3a: str, out_fig5: str,
                        engine: Engine = Engine()) -> None:
    """Cluster profile table (one row per cluster), Fig. 3a and Fig. 5 (left)."""
    from .cluster import load_model

    study = cluster_study(connect(engine), index_paths, assign_paths, scorer)
    profile = cluster_profile(study)
    write_csv(profile.round(6), out_profile)
    model = load_model(model_path)
    note = ""
    if model.n_clusters > max_clusters:
        sizes = profile["n"].reindex(range(model.n_clusters), fill_value=0).to_numpy()
        profile = cluster_profile(study, merge_clusters(model.centroids, sizes, max_clusters, seed))
        note = f"{model.n_clusters} clusters merged into {max_clusters} groups for display"
    save_figure(plot_cluster_text_share(profile, note), out_fig3a)
    save_figure(plot_cluster_removal_scores(profile, note), out_fig5)


# ----------------------------------------------------------------------------------------------
# Galleries (Fig. 3b, Fig. 1)


def gallery_columns(scorer: str) -> list[str]:
    """The index columns a gallery tile and its title need."""
    return [KEY, "part", "shard", "caption", "co_words", f"{scorer}.s_raw"]


def rows_of(con, paths: Sequence[str], keys: Sequence[str], columns: Sequence[str]) -> pd.DataFrame:
    """The rows of a few keys in per-part tables (the engine scans the key column; only these
    rows come back)."""
    wanted = ", ".join(sql_name(c) for c in columns)
    return query_df(con, f"SELECT {wanted} FROM {parquet_source(paths)} "
                         f"WHERE list_contains(?::VARCHAR[], {sql_name(KEY)})", [list(keys)])


def text_heavy_picks(con, index_paths: Sequence[str], study: ClusterStudy, profile: pd.DataFrame, scorer: str,
                     share: float, n: int) -> tuple[pd.DataFrame, int]:
    """Fig. 3b: the top-S sample of each cluster whose share of images with text is at least
    ``share`` (as the paper), most text-heavy first, up to ``n``; if no cluster reaches ``share``,
    the ``n`` most text-heavy ones. Returns the picked rows (with their ``cluster``) and how many
    clusters reach ``share``."""
    order = sorted_by_text(profile)
    heavy = order[order["share_text"] >= share]
    n_heavy = len(heavy)
    best = study.sums["best_key"].dropna()
    picks = [c for c in (heavy if n_heavy else order).index if c in best.index][:n]
    rows = rows_of(con, index_paths, best[picks].tolist(), gallery_columns(scorer)).set_index(KEY)
    rows = rows.loc[best[picks].tolist()].reset_index()
    rows["cluster"] = picks
    return rows, n_heavy


def top_score_picks(con, index_paths: Sequence[str], scorer: str, fraction: float, n: int, seed: int
                    ) -> tuple[pd.DataFrame, dict]:
    """Fig. 1: a seeded sample of ``n`` pairs from the ``round(fraction x N)`` processed pairs
    with the highest S (ties by key), and how many of those top pairs carry text against all
    ``N`` scored pairs.

    The cut is the engine's sort (it spills; memory stays at its limit however large the top
    set is) and the sample is the lowest keyed hashes among the top pairs, as a subset is
    drawn (:func:`parrotscope.curate.sample_keys`), so only the ``n`` shown rows come back.
    """
    _require(con, index_paths, [*gallery_columns(scorer), "status", "has_text", "is_parrot"], "parrot index")
    key = sql_name(KEY)
    s = number(f"{scorer}.s_raw")
    scored = f"{parquet_source(index_paths)} WHERE status = 'ok' AND {s} IS NOT NULL"
    (n_scored,) = one_row(con, f"SELECT count(*) FROM {scored}")
    k = max(1, int(round(fraction * n_scored)))
    cut = con.execute(f"SELECT {s}, {key} FROM {scored} ORDER BY {s} DESC, {key} LIMIT 1 OFFSET {k - 1}").fetchall()
    if not cut:  # no scored pair at all
        stats = dict.fromkeys(["top_share_text", "top_share_co", "all_share_text", "all_share_co", "threshold"],
                              float("nan"))
        return pd.DataFrame(columns=gallery_columns(scorer)), {"n_top": 0, **stats}
    threshold, last = cut[0]
    t = f"CAST({sql_string(repr(float(threshold)))} AS DOUBLE)"  # repr round-trips a double exactly
    top = f"({s} > {t} OR ({s} = {t} AND {key} <= {sql_string(last)}))"
    text, parrot = "coalesce(has_text, false)::INT", "coalesce(is_parrot, false)::INT"
    n_top, *shares = one_row(con, f"""
        SELECT count(*) FILTER (WHERE {top}), avg({text}) FILTER (WHERE {top}), avg({parrot}) FILTER (WHERE {top}),
               avg({text}), avg({parrot}) FROM {scored}""")
    rank = _keyed_rank(con, seed)
    wanted = ", ".join(sql_name(c) for c in gallery_columns(scorer))
    shown = query_df(con, f"SELECT {wanted}, {s} AS _s FROM {scored} AND {top} "
                          f"ORDER BY {rank}({key}), {key} LIMIT {int(n)}")
    shown = shown.sort_values(["_s", KEY], ascending=[False, True]).drop(columns="_s").reset_index(drop=True)
    stats = {"n_top": int(n_top), **dict(zip(["top_share_text", "top_share_co", "all_share_text", "all_share_co"],
                                              map(float, shares))), "threshold": float(threshold)}
    return shown, stats


def gallery_font(px: int, bold: bool = False):
    """DejaVu Sans at ``px`` pixels (shipped with matplotlib, so always present)."""
    from matplotlib import font_manager
    from PIL import ImageFont

    path = font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans",
                                                             weight="bold" if bold else "normal"))
    return ImageFont.truetype(path, px)


def wrap_words(words: Sequence[str], font, width: int) -> list[list[str]]:
    """Greedy word wrap of ``words`` to lines no wider than ``width`` pixels (long words alone)."""
    lines: list[list[str]] = [[]]
    for word in words:
        trial = " ".join(lines[-1] + [word])
        if lines[-1] and font.getlength(trial) > width:
            lines.append([word])
        else:
            lines[-1].append(word)
    return lines if lines[0] else []


def render_tile(image: np.ndarray, polygons: Sequence[np.ndarray], co_polygon: Sequence[bool], caption: str,
                co_words: set[str], norm: Normalisation, tile_px: int = 200, font_px: int = 13,
                max_lines: int = 4):
    """One gallery tile: the image fitted into ``tile_px`` square with the word polygons drawn
    (co-embedded red, others blue), the caption below with co-embedded words highlighted."""
    from PIL import Image, ImageDraw

    h, w = image.shape[:2]
    scale = tile_px / max(h, w)
    shown = Image.fromarray(image[..., :3] if image.ndim == 3 else image).convert("RGB")
    shown = shown.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC)
    font, bold = gallery_font(font_px), gallery_font(font_px, bold=True)
    line_h = font_px + 5
    pad = 4
    words = caption.split()
    lines = wrap_words(words, bold, tile_px - 2 * pad)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1] + ["…"]
    tile = Image.new("RGB", (tile_px, tile_px + pad + line_h * max_lines + pad), "white")
    ox, oy = (tile_px - shown.width) // 2, (tile_px - shown.height) // 2
    tile.paste(shown, (ox, oy))
    draw = ImageDraw.Draw(tile)
    for poly, is_co in zip(polygons, co_polygon):
        pts = [(ox + float(x) * scale, oy + float(y) * scale) for x, y in np.asarray(poly).reshape(-1, 2)]
        draw.polygon(pts, outline=CO_COLOUR if is_co else OTHER_COLOUR, width=2)
    y = tile_px + pad
    for line in lines:
        x = pad
        for word in line:
            co = word != "…" and normalise_word(word, norm) in co_words
            f = bold if co else font
            length = f.getlength(word)
            if co:
                draw.rectangle([x - 1, y - 1, x + length + 1, y + font_px + 3], fill=HIGHLIGHT)
            draw.text((x, y), word, font=f, fill=CO_COLOUR if co else (20, 20, 20))
            x += length + font.getlength(" ")
        y += line_h
    return tile


def gallery_inputs(con, picks: pd.DataFrame, spot_paths: Mapping[str, str], max_pixels: int
                   ) -> tuple[dict[str, np.ndarray], dict[str, pd.Series]]:
    """Images (from the picked samples' own shards only) and spot rows of the picked keys."""
    from .shards import iter_images

    keys = set(picks[KEY])
    images = dict(iter_images(sorted(set(picks["shard"])), keys, max_pixels)) if keys else {}
    spots: dict[str, pd.Series] = {}
    for part, part_keys in picks.groupby("part")[KEY]:
        for _, row in rows_of(con, [spot_paths[part]], sorted(set(part_keys)), [KEY, "words", "polygons"]).iterrows():
            spots[row[KEY]] = row
    missing = keys - set(images)
    if missing:
        raise ValueError(f"gallery images not found in their shards: {sorted(missing)[:3]}")
    return images, spots


def word_polygons_of(key: str, words, polygons) -> tuple[list[str], list[np.ndarray]]:
    """Spotted words and their polygons as ``(k, 2)`` arrays, from a spot row's columns."""
    if _undefined(words) or _undefined(polygons):
        return [], []
    words = [str(w) for w in words]
    polys = [np.asarray(p, np.float64).reshape(-1, 2) for p in polygons]
    if len(words) != len(polys):
        raise ValueError(f"key {key!r}: {len(words)} words but {len(polys)} polygons in the spot table")
    return words, polys


def plot_gallery(tiles: Sequence, titles: Sequence[str], title: str, ncols: int = 4):
    """Tiles in a grid with a title each; the legend of the polygon colours under the title."""
    plt = _pyplot()
    n = max(1, len(tiles))
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 3.35 * nrows + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, tile, sub in zip(axes.flat, tiles, titles):
        ax.imshow(np.asarray(tile))
        ax.set_title(sub, fontsize=8)
    if not tiles:
        axes[0, 0].text(0.5, 0.5, "no samples to show", ha="center", va="center")
    import textwrap

    # Wrapped to the figure's width (about 15 characters per inch at this size): narrow galleries
    # would otherwise clip a long title.
    wrapped = textwrap.fill(title, width=max(40, int(2.6 * ncols * 15)))
    fig.suptitle(f"{wrapped}\nred boxes / highlighted words: co-embedded text; blue boxes: other spotted text",
                 fontsize=9)
    return fig


def _tiles(picks: pd.DataFrame, images: dict, spots: dict, norm: Normalisation) -> list:
    tiles = []
    for _, row in picks.iterrows():
        spot = spots.get(row[KEY])
        words, polys = word_polygons_of(row[KEY], spot["words"], spot["polygons"]) if spot is not None else ([], [])
        co = _as_set(row["co_words"])
        flags = [normalise_word(w, norm) in co for w in words]
        tiles.append(render_tile(images[row[KEY]], polys, flags, row["caption"], co, norm))
    return tiles


def run_galleries(index_paths: Sequence[str], assign_paths: Sequence[str], spot_paths: Mapping[str, str],
                  scorer: str, normalisation: dict, share: float, n_clusters_shown: int, top_fraction: float,
                  n_top: int, seed: int, max_pixels: int, out_fig3b: str, out_fig1: str,
                  engine: Engine = Engine()) -> None:
    """Fig. 3b (text-heavy clusters) and Fig. 1 (top-S pairs)."""
    norm = Normalisation.from_config(normalisation)
    con = connect(engine)
    study = cluster_study(con, index_paths, assign_paths, scorer)
    profile = cluster_profile(study)
    heavy, n_heavy = text_heavy_picks(con, index_paths, study, profile, scorer, share, n_clusters_shown)
    top, stats = top_score_picks(con, index_paths, scorer, top_fraction, n_top, seed)
    images, spots = gallery_inputs(con, pd.concat([heavy, top]), spot_paths, max_pixels)

    shares = profile["share_text"]
    titles = [f"cluster {int(r.cluster)}: {shares[int(r.cluster)]:.0%} w/ text\nS = {r[f'{scorer}.s_raw']:.3f}"
              for _, r in heavy.iterrows()]
    which = (f"{n_heavy} of {len(profile)} clusters have >= {share:.0%} images with text" if n_heavy else
             f"no cluster has >= {share:.0%} images with text; the most text-heavy shown")
    save_figure(plot_gallery(_tiles(heavy, images, spots, norm), titles,
                             f"Fig. 3b: top-S sample of the most text-heavy clusters ({which})"), out_fig3b)
    titles = [f"S = {r[f'{scorer}.s_raw']:.3f}" for _, r in top.iterrows()]
    title = (f"Fig. 1: pairs from the top {top_fraction:.0%} CLIP scores (S >= {stats['threshold']:.3f}): "
             f"{stats['top_share_text']:.0%} with text, {stats['top_share_co']:.0%} parrot captions "
             f"(all pairs: {stats['all_share_text']:.0%}, {stats['all_share_co']:.0%})")
    save_figure(plot_gallery(_tiles(top, images, spots, norm), titles, title, ncols=3),
                out_fig1)


# ----------------------------------------------------------------------------------------------
# Example figures: Fig. 10 (text as distractor or concept) and Table 16 / Fig. 17 (parrot captions)


def removal_picks(con, index_paths: Sequence[str], scorer: str, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fig. 10: the ``n`` images with text whose S rises most when all their text is removed
    (RSA = S(raw) - S(all removed) lowest: the text distracts from the concept) and the ``n``
    whose S falls most (RSA highest: the text is the concept); ties by key. Two top-N queries."""
    rsa, removed = f"{scorer}.rsa", f"{scorer}.s_all"
    columns = [*gallery_columns(scorer), removed, rsa]
    _require(con, index_paths, [*columns, "status", "has_text"], "parrot index")
    wanted = ", ".join(sql_name(c) for c in columns)
    base = (f"SELECT {wanted} FROM {parquet_source(index_paths)} "
            f"WHERE status = 'ok' AND coalesce(has_text, false) AND {number(rsa)} IS NOT NULL")
    key = sql_name(KEY)
    rises = query_df(con, f"{base} ORDER BY {number(rsa)} ASC, {key} LIMIT {int(n)}")
    falls = query_df(con, f"{base} ORDER BY {number(rsa)} DESC, {key} LIMIT {int(n)}")
    return rises, falls


def parrot_picks(con, index_paths: Sequence[str], scorer: str, n: int) -> pd.DataFrame:
    """Table 16 / Fig. 17: the ``n`` parrot captions (CoTR > 0) with the highest S(raw), ties by
    key: the pairs CLIP-score filtering keeps first."""
    columns = [*gallery_columns(scorer), "cotr"]
    _require(con, index_paths, [*columns, "status", "is_parrot"], "parrot index")
    s = number(f"{scorer}.s_raw")
    return query_df(con, f"SELECT {', '.join(sql_name(c) for c in columns)} FROM {parquet_source(index_paths)} "
                         f"WHERE status = 'ok' AND coalesce(is_parrot, false) AND {s} IS NOT NULL "
                         f"ORDER BY {s} DESC, {sql_name(KEY)} LIMIT {int(n)}")


def inpainted_images(picks: pd.DataFrame, inpaint_paths: Mapping[str, str]) -> dict[str, np.ndarray]:
    """The text-removed images of the picked keys, from their parts' inpainted tars only."""

    images: dict[str, np.ndarray] = {}
    for part, keys in picks.groupby("part")[KEY]:
        wanted = set(keys)
        for key, png, _, _ in iter_inpainted_encoded(inpaint_paths[part]):
            if key in wanted:
                images[key] = decode_inpainted(inpaint_paths[part], key, png, rgb=True)
    missing = set(picks[KEY]) - set(images)
    if missing:
        raise ValueError(f"text-removed images not found in their parts' inpainted tars: {sorted(missing)[:3]}")
    return images


def run_example_figures(index_paths: Sequence[str], spot_paths: Mapping[str, str], inpaint_paths: Mapping[str, str],
                        scorer: str, normalisation: dict, n_removal: int, n_parrot: int, max_pixels: int,
                        out_fig10: str, out_fig17: str, out_table16: str, engine: Engine = Engine()) -> None:
    """Fig. 10 (each picked image beside its text-removed copy, S before and after), Table 16 and
    Fig. 17 (the top-S parrot captions with their co-embedded words highlighted)."""
    norm = Normalisation.from_config(normalisation)
    con = connect(engine)
    rises, falls = removal_picks(con, index_paths, scorer, n_removal)
    parrots = parrot_picks(con, index_paths, scorer, n_parrot)
    picks = pd.concat([rises, falls, parrots])
    images, spots = gallery_inputs(con, picks, spot_paths, max_pixels)
    removed = inpainted_images(pd.concat([rises, falls]), inpaint_paths)
    s_raw, s_all, rsa = f"{scorer}.s_raw", f"{scorer}.s_all", f"{scorer}.rsa"
    tiles, titles = [], []
    for label, rows in (("removal raises S", rises), ("removal lowers S", falls)):
        for tile, (_, r) in zip(_tiles(rows, images, spots, norm), rows.iterrows()):
            tiles += [tile, render_tile(removed[r[KEY]], [], [], r["caption"], _as_set(r["co_words"]), norm)]
            titles += [f"{label}\nS(raw) = {r[s_raw]:.3f}", f"text removed: S = {r[s_all]:.3f}\nRSA = {r[rsa]:+.3f}"]
    save_figure(plot_gallery(tiles, titles, "Fig. 10: all spotted text removed (each image beside its inpainted "
                                            "copy): where it distracts from the concept S rises, where it is the "
                                            "concept S falls"), out_fig10)
    titles = [f"S = {r[s_raw]:.3f}, CoTR = {r['cotr']:.2f}" for _, r in parrots.iterrows()]
    save_figure(plot_gallery(_tiles(parrots, images, spots, norm), titles,
                             f"Fig. 17: the {len(parrots)} parrot captions with the highest S"), out_fig17)
    table = parrots.assign(co_words=[", ".join(sorted(_as_set(c))) for c in parrots["co_words"]])
    write_csv(table[[KEY, "caption", "co_words", "cotr", s_raw]].rename(columns={s_raw: "S(raw)"}), out_table16,
              index=False)


# ----------------------------------------------------------------------------------------------
# Text measures (Fig. 4)


def polygon_area(poly: np.ndarray) -> float:
    """Shoelace area of a polygon given as ``(k, 2)`` points."""
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def text_height(poly: np.ndarray) -> float:
    """Height of a word box: its area over its longest side (the baseline of a horizontal word;
    correct for rotated boxes too)."""
    sides = np.linalg.norm(np.roll(poly, -1, axis=0) - poly, axis=1)
    longest = float(sides.max()) if len(sides) else 0.0
    return polygon_area(poly) / longest if longest > 0 else 0.0


def truth_regions(meta: str | None) -> tuple[list[str], list[np.ndarray]] | None:
    """The demo generator's rendered words and their polygons, or None without ground truth."""
    truth = truth_record(meta, "word_polygons")
    if truth is None:
        return None
    return [str(w) for w in truth["words"]], [np.asarray(p, np.float64).reshape(-1, 2) for p in truth["word_polygons"]]


def word_measures(words: Sequence[str], polys: Sequence[np.ndarray], co_words: set[str], width: int,
                  height: int, norm: Normalisation) -> tuple[np.ndarray, np.ndarray, float]:
    """Per word: relative height (of the image height) and whether it is co-embedded; and the
    image's total co-embedded text area as a fraction of the image area."""
    rel_h = np.array([text_height(p) / height for p in polys], float)
    co = np.array([normalise_word(w, norm) in co_words for w in words], bool)
    area = sum(polygon_area(p) for p, c in zip(polys, co) if c) / float(width * height)
    return rel_h, co, area


def text_measures(con, index_paths: Sequence[str], spot_paths: Mapping[str, str],
                  sample_paths: Mapping[str, str] | None, scorer: str, norm: Normalisation, max_images: int,
                  seed: int) -> dict[str, pd.DataFrame]:
    """Per-word and per-image text measures for Figs. 4b-c, spotted (``spotted``) and, where
    the samples carry ground truth (``sample_paths``), true (``truth``), over a seeded sample of
    at most ``max_images`` processed images: the lowest keyed hashes, as a subset is drawn, so
    the sample depends on the keys and the seed only, and is every image when there are fewer.

    The engine keeps the sample (keys and the few index columns measured) in a temporary table
    and joins it with one part's spot table (and samples' metadata) at a time, so Python holds
    only the sampled rows of one part and the measures.
    """
    key = sql_name(KEY)
    index_columns = [KEY, "part", "co_words", "width", "height", *(["gt_co_words"] if sample_paths else [])]
    _require(con, index_paths, [*index_columns, "status", f"{scorer}.s_raw"], "parrot index")
    rank = _keyed_rank(con, seed)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE text_sample AS
        SELECT {", ".join(sql_name(c) for c in index_columns)}, {number(f"{scorer}.s_raw")} AS s_raw
        FROM {parquet_source(index_paths)} WHERE status = 'ok'
        ORDER BY {rank}({key}), {key} LIMIT {int(max_images)}""")
    parts = [part for (part,) in con.execute("SELECT DISTINCT part FROM text_sample ORDER BY part").fetchall()]
    words: dict[str, list] = {"spotted": [], "truth": []}
    images: dict[str, list] = {"spotted": [], "truth": []}

    def add(kind: str, key: str, found, co_words, width: int, height: int, s: float) -> None:
        if len(found[0]):
            rel_h, co, area = word_measures(*found, _as_set(co_words), width, height, norm)
            words[kind].append((rel_h, co))
            images[kind].append((key, area, bool(co.any()), s))

    def sampled(table: str, columns: str, part: str) -> pd.DataFrame:
        return query_df(con, f"SELECT t.{key}, {columns}, t.width, t.height, t.s_raw FROM text_sample t "
                             f"JOIN {parquet_source([table])} x USING ({key}) WHERE t.part = ? ORDER BY t.{key}",
                        [part])

    for part in tqdm(parts, desc="text measures", unit="part", file=sys.stderr):
        for row in sampled(spot_paths[part], "x.words, x.polygons, t.co_words", part).itertuples(index=False):
            add("spotted", row[0], word_polygons_of(row[0], row.words, row.polygons), row.co_words, row.width,
                row.height, row.s_raw)
        if sample_paths is None:
            continue
        for row in sampled(sample_paths[part], "x.meta, t.gt_co_words", part).itertuples(index=False):
            truth = truth_regions(None if _undefined(row.meta) else row.meta)
            if truth:
                add("truth", row[0], truth, row.gt_co_words, row.width, row.height, row.s_raw)
    con.execute("DROP TABLE text_sample")
    result = {}
    for kind in words:
        if images[kind]:
            heights, co = zip(*words[kind])
            result[f"{kind}_words"] = pd.DataFrame({"height": np.concatenate(heights), "co": np.concatenate(co)})
            result[f"{kind}_images"] = pd.DataFrame(images[kind], columns=[KEY, "co_area", "is_parrot", "s_raw"])
    return result


PANELS = {"": "spotted text", "gt_": "ground truth: rendered words"}


def word_count_grid(con, index_paths: Sequence[str], prefix: str = "", cap: int = 20) -> pd.DataFrame:
    """Fig. 4a's counts: images with text by (co-embedded words, caption words), both capped at
    ``cap`` (the last row/column holds ``cap`` or more); one GROUP BY of the engine."""
    co, has_text = sql_name(f"{prefix}co_words"), sql_name(f"{prefix}has_text")
    rows = con.execute(f"""
        SELECT least(coalesce(len(list_distinct({co})), 0), {int(cap)}) AS n_co,
               least(n_caption_words, {int(cap)}) AS n_cap, count(*)
        FROM {parquet_source(index_paths)} WHERE status = 'ok' AND coalesce({has_text}, false)
        GROUP BY ALL""").fetchall()
    top_co = max([1, *(int(r[0]) for r in rows)])
    top_cap = max([1, *(int(r[1]) for r in rows)])
    grid = pd.DataFrame(0, index=pd.Index(range(top_co + 1)), columns=pd.Index(range(top_cap + 1)), dtype="int64")
    for n_co, n_cap, count in rows:
        grid.loc[int(n_co), int(n_cap)] = count
    grid.index.name, grid.columns.name = "co-embedded words", "caption words"
    return grid


def plot_word_count_heatmap(grids: Mapping[str, pd.DataFrame], cap: int = 20):
    """Fig. 4a: images with text by caption word count (x) and co-embedded word count (y), one
    panel per grid (keyed by column prefix: spotted, ground truth); the diagonal are full parrot
    captions."""
    from matplotlib.colors import LogNorm

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(grids), figsize=(5.8 * len(grids), 3.8), squeeze=False)
    for ax, (prefix, grid) in zip(axes[0], grids.items()):
        values = grid.to_numpy(float)
        image = ax.imshow(np.where(values > 0, values, np.nan), origin="lower", cmap="viridis",
                          norm=LogNorm(vmin=1, vmax=max(1.0, values.max())), aspect="auto")
        diag = min(grid.shape) - 1
        ax.plot([0, diag], [0, diag], color="tab:red", lw=0.8, ls="--")
        for axis, n in ((ax.xaxis, grid.shape[1]), (ax.yaxis, grid.shape[0])):
            ticks = np.arange(n)[::max(1, n // 12)]
            axis.set_ticks(ticks, [f"{t}+" if t == cap else str(t) for t in ticks])
        ax.set(xlabel="number of caption words", ylabel="number of co-embedded words",
               title=f"Fig. 4a: {PANELS[prefix]} ({int(values.sum())} images with text)\n"
                     f"dashed: full parrot captions (every caption word co-embedded)")
        fig.colorbar(image, ax=ax, label="images")
    return fig


def binned_mean(x: np.ndarray, y: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Mean, standard error and count of ``y`` in quantile bins of ``x`` (bins with data only)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if not len(x):
        return pd.DataFrame(columns=["x", "mean", "se", "n"])
    edges = np.unique(np.quantile(x, np.linspace(0, 1, n_bins + 1)))
    if len(edges) < 2:
        edges = np.array([x.min(), x.max() + 1e-12])
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    rows = []
    for b in np.unique(which):
        v = y[which == b]
        rows.append({"x": float(np.median(x[which == b])), "mean": float(v.mean()),
                     "se": float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0, "n": int(len(v))})
    return pd.DataFrame(rows)


def plot_area_vs_score(measures: Mapping[str, pd.DataFrame], scorer: str, n_bins: int = 10):
    """Fig. 4b: total co-embedded text area (share of the image) against S(raw), images with
    co-embedded text; points and the binned mean."""
    plt = _pyplot()
    kinds = [k for k in ("spotted", "truth") if f"{k}_images" in measures]
    fig, axes = plt.subplots(1, max(1, len(kinds)), figsize=(5.6 * max(1, len(kinds)), 4.3), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        images = measures[f"{kind}_images"]
        images = images[images["is_parrot"]]
        s = images["s_raw"].to_numpy(float)
        area = images["co_area"].to_numpy(float)
        ax.scatter(area, s, s=6, alpha=0.3, color="tab:gray", label=f"images (n={len(images)})")
        b = binned_mean(area, s, n_bins)
        ax.errorbar(b["x"], b["mean"], yerr=b["se"], color="tab:red", marker="o", ms=4, capsize=2,
                    label="mean per area decile (± s.e.)")
        ax.set(xlabel="co-embedded text area (share of the image)", ylabel=f"CLIP score S(raw) ({scorer})",
               title=f"Fig. 4b: {PANELS['' if kind == 'spotted' else 'gt_']}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def plot_size_vs_parrot(measures: Mapping[str, pd.DataFrame], n_bins: int = 10):
    """Fig. 4c: text height (share of the image height) against the probability that the word
    is co-embedded (appears in the caption), per word in quantile bins."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.3))
    styles = {"spotted": ("tab:red", "spotted words (spotter's boxes)"),
              "truth": ("tab:green", "ground truth: rendered words (glyph boxes)")}
    for kind, (colour, label) in styles.items():
        if f"{kind}_words" not in measures:
            continue
        words = measures[f"{kind}_words"]
        b = binned_mean(words["height"].to_numpy(), words["co"].to_numpy(float), n_bins)
        ax.errorbar(b["x"], b["mean"], yerr=b["se"], color=colour, marker="o", ms=4, capsize=2,
                    label=f"{label} (n={len(words)})")
    ax.set(xlabel="text height (share of the image height)", ylabel="P(word is co-embedded in the caption)",
           title="Fig. 4c: text size against the probability of being parroted", ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def run_text_figures(index_paths: Sequence[str], spot_paths: Mapping[str, str], sample_paths: Mapping[str, str],
                     scorer: str, normalisation: dict, max_images: int, seed: int, out_fig4a: str,
                     out_fig4b: str, out_fig4c: str, engine: Engine = Engine()) -> None:
    """Figs. 4a-c from the index, the spot tables and (for ground truth) the samples' metadata."""
    norm = Normalisation.from_config(normalisation)
    con = connect(engine)
    truth = has_truth(con, index_paths)
    grids = {prefix: word_count_grid(con, index_paths, prefix) for prefix in ([""] + (["gt_"] if truth else []))}
    save_figure(plot_word_count_heatmap(grids), out_fig4a)
    measures = text_measures(con, index_paths, spot_paths, sample_paths if truth else None, scorer, norm, max_images,
                             seed)
    save_figure(plot_area_vs_score(measures, scorer), out_fig4b)
    save_figure(plot_size_vs_parrot(measures), out_fig4c)
