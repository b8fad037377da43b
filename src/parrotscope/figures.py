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
"""

from __future__ import annotations

import os
import sys
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from .index import read_index_parts
from .io import KEY, atomic_path, read_parquet, write_csv
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


def _as_set(values) -> set[str]:
    if values is None or (isinstance(values, float) and np.isnan(values)):
        return set()
    return {str(v) for v in values}


def has_truth(frame: pd.DataFrame) -> bool:
    """Whether the processed samples carry the demo generator's ground truth measures."""
    ok = frame["status"] == "ok"
    return "gt_has_text" in frame.columns and bool(ok.any()) and frame.loc[ok, "gt_cotr"].notna().all()


# ----------------------------------------------------------------------------------------------
# Cluster profiles (Fig. 3a, Fig. 5 left)


def study_frame(index: pd.DataFrame, assign: pd.DataFrame) -> pd.DataFrame:
    """The index with each sample's cluster (by key); samples without one keep NA."""
    dup = assign[KEY].duplicated()
    if dup.any():
        raise ValueError(f"a key is assigned twice: {assign.loc[dup, KEY].head(3).tolist()}")
    unknown = set(assign[KEY]) - set(index[KEY])
    if unknown:
        raise ValueError(f"{len(unknown)} assigned keys are not in the index, e.g. {sorted(unknown)[:3]}")
    out = index.merge(assign[[KEY, "cluster", "distance"]], on=KEY, how="left", validate="one_to_one")
    out["cluster"] = out["cluster"].astype("Int64")
    return out


def text_type(frame: pd.DataFrame, prefix: str = "") -> pd.Series:
    """Fig. 3a's data type of each sample: ``no_text``, ``text_no_co`` or ``co``."""
    has_text = frame[f"{prefix}has_text"].fillna(False).astype(bool)
    parrot = frame[f"{prefix}is_parrot"].fillna(False).astype(bool)
    return pd.Series(np.where(parrot, "co", np.where(has_text, "text_no_co", "no_text")), index=frame.index)


def cluster_profile(frame: pd.DataFrame, scorer: str, by: str = "cluster") -> pd.DataFrame:
    """Per cluster (processed, assigned samples): counts and shares of Fig. 3a's data types (and
    their ground truth ``gt_*`` where known) and the mean S of each removal setup (Fig. 5 left)."""
    ok = frame[(frame["status"] == "ok") & frame[by].notna()].copy()
    ok[by] = ok[by].astype(int)
    groups = ok.groupby(by)
    prof = pd.DataFrame({"n": groups.size()})
    prefixes = [""] + (["gt_"] if has_truth(frame) else [])
    for prefix in prefixes:
        kind = text_type(ok, prefix)
        counts = pd.crosstab(ok[by], kind).reindex(columns=[t for t, _, _ in TEXT_TYPES], fill_value=0)
        for t, _, _ in TEXT_TYPES:
            prof[f"{prefix}share_{t}"] = counts[t] / prof["n"]
        prof[f"{prefix}share_text"] = 1 - prof[f"{prefix}share_no_text"]
    kind = text_type(ok)
    selections = {"text": kind != "no_text", "co": kind == "co"}
    for column, _, which, _, _ in REMOVALS:
        values = pd.to_numeric(ok[f"{scorer}.{column}"], errors="coerce").where(selections[which])
        prof[f"mean_{column}"] = values.groupby(ok[by]).mean()
    prof["n_text"] = selections["text"].groupby(ok[by]).sum()
    prof["n_co"] = selections["co"].groupby(ok[by]).sum()
    prof["mean_s_raw_all"] = pd.to_numeric(ok[f"{scorer}.s_raw"], errors="coerce").groupby(ok[by]).mean()
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


def run_cluster_figures(index_path: str, assign_paths: list[str], model_path: str, scorer: str,
                        max_clusters: int, seed: int, out_profile: str, out_fig3a: str, out_fig5: str) -> None:
    """Cluster profile table (one row per cluster), Fig. 3a and Fig. 5 (left)."""
    from .cluster import load_model

    frame = study_frame(read_index_parts(index_path), pd.concat([read_parquet(p) for p in assign_paths],
                                                           ignore_index=True))
    profile = cluster_profile(frame, scorer)
    write_csv(profile.round(6), out_profile)
    model = load_model(model_path)
    note = ""
    if model.n_clusters > max_clusters:
        sizes = profile["n"].reindex(range(model.n_clusters), fill_value=0).to_numpy()
        groups = merge_clusters(model.centroids, sizes, max_clusters, seed)
        frame["group"] = frame["cluster"].map(lambda c: groups[c] if pd.notna(c) else pd.NA).astype("Int64")
        profile = cluster_profile(frame, scorer, by="group")
        note = f"{model.n_clusters} clusters merged into {max_clusters} groups for display"
    save_figure(plot_cluster_text_share(profile, note), out_fig3a)
    save_figure(plot_cluster_removal_scores(profile, note), out_fig5)


# ----------------------------------------------------------------------------------------------
# Galleries (Fig. 3b, Fig. 1)


def text_heavy_picks(frame: pd.DataFrame, profile: pd.DataFrame, scorer: str, share: float,
                     n: int) -> tuple[pd.DataFrame, int]:
    """Fig. 3b: the top-S sample of each cluster whose share of images with text is at least
    ``share`` (as the paper), most text-heavy first, up to ``n``; if no cluster reaches ``share``,
    the ``n`` most text-heavy ones. Returns the picked rows and how many clusters reach ``share``."""
    order = sorted_by_text(profile)
    heavy = order[order["share_text"] >= share]
    n_heavy = len(heavy)
    ok = frame[(frame["status"] == "ok") & frame["cluster"].notna()]
    s = pd.to_numeric(ok[f"{scorer}.s_raw"], errors="coerce")
    best = ok.loc[s.dropna().groupby(ok["cluster"]).idxmax()].set_index("cluster", drop=False)
    picks = [c for c in (heavy if n_heavy else order).index if c in best.index][:n]
    return best.loc[picks].reset_index(drop=True), n_heavy


def top_score_picks(frame: pd.DataFrame, scorer: str, fraction: float, n: int, seed: int
                    ) -> tuple[pd.DataFrame, dict]:
    """Fig. 1: a seeded sample of ``n`` pairs from those with the top ``fraction`` of S, and how
    many of the top pairs carry text against the whole data."""
    ok = frame[frame["status"] == "ok"].copy()
    ok["_s"] = pd.to_numeric(ok[f"{scorer}.s_raw"], errors="coerce")
    ok = ok.dropna(subset=["_s"])
    k = max(1, int(round(fraction * len(ok))))
    top = ok.nlargest(k, "_s")
    shown = top.sample(n=min(n, len(top)), random_state=seed).sort_values("_s", ascending=False)
    stats = {"n_top": int(len(top)), "top_share_text": float(top["has_text"].astype(bool).mean()),
             "top_share_co": float(top["is_parrot"].astype(bool).mean()),
             "all_share_text": float(ok["has_text"].astype(bool).mean()),
             "all_share_co": float(ok["is_parrot"].astype(bool).mean()), "threshold": float(top["_s"].min())}
    return shown.drop(columns="_s"), stats


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


def gallery_inputs(picks: pd.DataFrame, spot_paths: Mapping[str, str], max_pixels: int
                   ) -> tuple[dict[str, np.ndarray], dict[str, pd.Series]]:
    """Images (from the picked samples' own shards only) and spot rows of the picked keys."""
    from .shards import iter_images

    keys = set(picks[KEY])
    images = dict(iter_images(sorted(set(picks["shard"])), keys, max_pixels)) if keys else {}
    spots: dict[str, pd.Series] = {}
    for part in sorted(set(picks["part"])):
        spot = read_parquet(spot_paths[part], columns=[KEY, "words", "polygons"])
        for _, row in spot[spot[KEY].isin(keys)].iterrows():
            spots[row[KEY]] = row
    missing = keys - set(images)
    if missing:
        raise ValueError(f"gallery images not found in their shards: {sorted(missing)[:3]}")
    return images, spots


def word_polygons_of(key: str, words, polygons) -> tuple[list[str], list[np.ndarray]]:
    """Spotted words and their polygons as ``(k, 2)`` arrays, from a spot row's columns."""
    if words is None or polygons is None:
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


def run_galleries(index_path: str, assign_paths: list[str], spot_paths: Mapping[str, str], scorer: str,
                  normalisation: dict, share: float, n_clusters_shown: int, top_fraction: float, n_top: int,
                  seed: int, max_pixels: int, out_fig3b: str, out_fig1: str) -> None:
    """Fig. 3b (text-heavy clusters) and Fig. 1 (top-S pairs)."""
    norm = Normalisation.from_config(normalisation)
    frame = study_frame(read_index_parts(index_path), pd.concat([read_parquet(p) for p in assign_paths],
                                                           ignore_index=True))
    profile = cluster_profile(frame, scorer)
    heavy, n_heavy = text_heavy_picks(frame, profile, scorer, share, n_clusters_shown)
    top, stats = top_score_picks(frame, scorer, top_fraction, n_top, seed)
    images, spots = gallery_inputs(pd.concat([heavy, top]), spot_paths, max_pixels)

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


def text_measures(frame: pd.DataFrame, spot_paths: Mapping[str, str], sample_paths: Mapping[str, str] | None,
                  norm: Normalisation, max_images: int | None, seed: int) -> dict[str, pd.DataFrame]:
    """Per-word and per-image text measures for Figs. 4b-c, spotted (``spotted``) and, where
    the samples carry ground truth, true (``truth``); over a seeded sample of ``max_images``
    processed images with text."""
    ok = frame[frame["status"] == "ok"]
    if max_images is not None and len(ok) > max_images:
        ok = ok.sample(n=max_images, random_state=seed)
    truth_cols = ["gt_co_words"] if sample_paths is not None else []
    out: dict[str, dict[str, list]] = {k: {"words": [], "images": []} for k in ("spotted", "truth")}

    def add(kind: str, key: str, words, polys, co_words, width: int, height: int) -> None:
        if len(words):
            rel_h, co, area = word_measures(words, polys, _as_set(co_words), width, height, norm)
            out[kind]["words"].append(pd.DataFrame({"height": rel_h, "co": co}))
            out[kind]["images"].append((key, area, bool(co.any())))

    for part, rows in tqdm(ok.groupby("part"), desc="text measures", unit="part", file=sys.stderr):
        rows = rows[[KEY, "co_words", "width", "height", *truth_cols]]
        spot = read_parquet(spot_paths[part], columns=[KEY, "words", "polygons"]).merge(rows, on=KEY)
        for row in spot.itertuples(index=False):
            add("spotted", row[0], *word_polygons_of(row[0], row.words, row.polygons), row.co_words,
                row.width, row.height)
        if sample_paths is None:
            continue
        samples = read_parquet(sample_paths[part], columns=[KEY, "meta"]).merge(rows, on=KEY)
        for row in samples.itertuples(index=False):
            truth = truth_regions(row.meta)
            if truth:
                add("truth", row[0], *truth, row.gt_co_words, row.width, row.height)
    result = {}
    for kind, parts in out.items():
        if parts["images"]:
            result[f"{kind}_words"] = pd.concat(parts["words"], ignore_index=True)
            result[f"{kind}_images"] = pd.DataFrame(parts["images"], columns=[KEY, "co_area", "is_parrot"])
    return result


def _panels(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """(column prefix, panel name): spotted, and ground truth when the data has it."""
    return [("", "spotted text")] + ([("gt_", "ground truth: rendered words")] if has_truth(frame) else [])


def word_count_grid(frame: pd.DataFrame, prefix: str = "", cap: int = 20) -> pd.DataFrame:
    """Fig. 4a's counts: images with text by (co-embedded words, caption words), both capped at
    ``cap`` (the last row/column holds ``cap`` or more)."""
    ok = frame[(frame["status"] == "ok") & frame[f"{prefix}has_text"].fillna(False).astype(bool)]
    n_cap = ok["n_caption_words"].clip(upper=cap).astype(int)
    n_co = ok[f"{prefix}co_words"].map(lambda v: len(_as_set(v))).clip(upper=cap).astype(int)
    top_cap = int(max(n_cap.max() if len(ok) else 1, 1))
    top_co = int(max(n_co.max() if len(ok) else 1, 1))
    grid = pd.crosstab(n_co, n_cap).reindex(index=range(top_co + 1), columns=range(top_cap + 1), fill_value=0)
    grid.index.name, grid.columns.name = "co-embedded words", "caption words"
    return grid


def plot_word_count_heatmap(frame: pd.DataFrame, cap: int = 20):
    """Fig. 4a: images with text by caption word count (x) and co-embedded word count (y); the
    diagonal are full parrot captions."""
    from matplotlib.colors import LogNorm

    plt = _pyplot()
    panels = _panels(frame)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.8 * len(panels), 3.8), squeeze=False)
    for ax, (prefix, name) in zip(axes[0], panels):
        grid = word_count_grid(frame, prefix, cap)
        values = grid.to_numpy(float)
        image = ax.imshow(np.where(values > 0, values, np.nan), origin="lower", cmap="viridis",
                          norm=LogNorm(vmin=1, vmax=max(1.0, values.max())), aspect="auto")
        diag = min(grid.shape) - 1
        ax.plot([0, diag], [0, diag], color="tab:red", lw=0.8, ls="--")
        for axis, n in ((ax.xaxis, grid.shape[1]), (ax.yaxis, grid.shape[0])):
            ticks = np.arange(n)[::max(1, n // 12)]
            axis.set_ticks(ticks, [f"{t}+" if t == cap else str(t) for t in ticks])
        ax.set(xlabel="number of caption words", ylabel="number of co-embedded words",
               title=f"Fig. 4a: {name} ({int(values.sum())} images with text)\n"
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


def plot_area_vs_score(measures: Mapping[str, pd.DataFrame], scores: pd.Series, scorer: str, n_bins: int = 10):
    """Fig. 4b: total co-embedded text area (share of the image) against S(raw), images with
    co-embedded text; points and the binned mean."""
    plt = _pyplot()
    kinds = [k for k in ("spotted", "truth") if f"{k}_images" in measures]
    fig, axes = plt.subplots(1, max(1, len(kinds)), figsize=(5.6 * max(1, len(kinds)), 4.3), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        images = measures[f"{kind}_images"]
        images = images[images["is_parrot"]]
        s = scores.reindex(images[KEY]).to_numpy(float)
        area = images["co_area"].to_numpy(float)
        ax.scatter(area, s, s=6, alpha=0.3, color="tab:gray", label=f"images (n={len(images)})")
        b = binned_mean(area, s, n_bins)
        ax.errorbar(b["x"], b["mean"], yerr=b["se"], color="tab:red", marker="o", ms=4, capsize=2,
                    label="mean per area decile (± s.e.)")
        name = "spotted text" if kind == "spotted" else "ground truth: rendered words"
        ax.set(xlabel="co-embedded text area (share of the image)", ylabel=f"CLIP score S(raw) ({scorer})",
               title=f"Fig. 4b: {name}")
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


def run_text_figures(index_path: str, spot_paths: Mapping[str, str], sample_paths: Mapping[str, str],
                     scorer: str, normalisation: dict, max_images: int | None, seed: int, out_fig4a: str,
                     out_fig4b: str, out_fig4c: str) -> None:
    """Figs. 4a-c from the index, the spot tables and (for ground truth) the samples' metadata."""
    norm = Normalisation.from_config(normalisation)
    index = read_index_parts(index_path)
    truth = has_truth(index)
    measures = text_measures(index, spot_paths, sample_paths if truth else None, norm, max_images, seed)
    scores = pd.to_numeric(index.set_index(KEY)[f"{scorer}.s_raw"], errors="coerce")
    save_figure(plot_word_count_heatmap(index), out_fig4a)
    save_figure(plot_area_vs_score(measures, scores, scorer), out_fig4b)
    save_figure(plot_size_vs_parrot(measures), out_fig4c)
