"""Stage ``heldout``: the study pool's held-out split and Fig. 9, each trained CLIP's alignment on it.

The paper's Fig. 9 scores held-out pairs with every CLIP trained on a curated subset, in three
groups: raw pairs without text, raw pairs with text, and the same pairs with their text removed.
The more parrot captions a CLIP trained on, the better it aligns pairs whose image spells the
caption, and the worse text-free pairs.

* **The split** (:func:`parrotscope.keyhash.heldout_flags`): a sample is held out when its seeded
  keyed hash (that of the uniform draws) falls in the lowest ``heldout.fraction`` of the range.
  The index carries the flag (column ``heldout``), and every curated and filtered subset leaves
  those samples out, so no CLIP trains on them.
* **The pairs** (:func:`select_pairs`, :func:`extract_pairs`): from the held-out status-ok rows
  of the chosen parts, per group (with or without spotted text) at most ``max_per_group``, the
  lowest keyed ranks (a uniform draw). Their image bytes and the text-removed images (the
  configured inpainting, mask ``all``) are copied to two small tars once, so every model's job
  reads those alone, not the dataset's shards.
* **The scores** (:func:`score_model`) of one CLIP on them, and Fig. 9 (:func:`run_fig9`): mean S
  per model and group, averaged over seeds with their spread.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import webdataset as wds
from tqdm import tqdm

from .db import Engine, columns_of, connect, parquet_source, query_df, register_keyed_rank, sql_name
from .inpainted import iter_inpainted_encoded
from .io import KEY, atomic_path, read_json, read_parquet, write_csv, write_json, write_parquet
from .shards import ShardError, iter_encoded

log = logging.getLogger(__name__)

GROUPS = ("raw, no text", "raw, with text", "text removed")
TEXT, NO_TEXT = "with text", "no text"


class HeldoutError(ValueError):
    """The held-out split cannot give Fig. 9 its pairs (none held out, a group empty, ...)."""


def select_pairs(index_paths: Sequence[str], max_per_group: int, seed: int, engine: Engine = Engine()) -> pd.DataFrame:
    """The held-out status-ok pairs of the index parts, at most ``max_per_group`` with spotted text
    and as many without, the lowest keyed ranks of each group: ``(key, part, shard, caption, group)``
    sorted by key."""
    con = connect(engine)
    types = columns_of(con, index_paths)
    if "heldout" not in types:
        raise HeldoutError("the index has no `heldout` column; rebuild it with the index stage")
    rank = register_keyed_rank(con, seed)
    text = "coalesce(CAST(has_text AS BOOLEAN), false)"
    pairs = query_df(con, f"""
        SELECT {sql_name(KEY)}, part, shard, caption, CASE WHEN {text} THEN '{TEXT}' ELSE '{NO_TEXT}' END AS grp
        FROM {parquet_source(index_paths)}
        WHERE coalesce(heldout, false) AND status = 'ok'
        QUALIFY row_number() OVER (PARTITION BY {text} ORDER BY {rank}({sql_name(KEY)}), {sql_name(KEY)})
                <= {int(max_per_group)}""")
    counts = pairs["grp"].value_counts()
    empty = [g for g in (NO_TEXT, TEXT) if not counts.get(g, 0)]
    if empty:
        raise HeldoutError(f"the held-out split of these parts has no status-ok pair {' or '.join(empty)}; "
                           f"raise heldout.fraction or figures.fig9_parts")
    return pairs.rename(columns={"grp": "group"}).sort_values(KEY, kind="stable").reset_index(drop=True)


def extract_pairs(pairs: pd.DataFrame, part_shards: Mapping[str, Sequence[str]], removed_tars: Mapping[str, str],
                  out_raw: str, out_removed: str) -> dict:
    """Copy the pairs' images from their parts' shards to ``out_raw`` (``KEY.jpg``, the bytes as
    stored, and ``KEY.txt``) and the text-removed images of the pairs with text from their parts' inpainted
    tars to ``out_removed`` (the inpaint stage's format); return the counts. Every pair must be
    found: an index and shards that disagree are an error."""
    wanted = {part: set(keys) for part, keys in pairs.groupby("part")[KEY]}
    with_text = set(pairs.loc[pairs["group"] == TEXT, KEY])
    captions = dict(zip(pairs[KEY], pairs["caption"]))
    found_raw, found_removed = set(), set()
    with atomic_path(out_raw, suffix=".tar") as raw_tmp, atomic_path(out_removed, suffix=".tar") as removed_tmp:
        with open(raw_tmp, "wb") as raw_fh, open(removed_tmp, "wb") as removed_fh:
            raw, removed = wds.TarWriter(raw_fh, mtime=0.0), wds.TarWriter(removed_fh, mtime=0.0)
            try:
                for part in tqdm(sorted(wanted), desc="held-out pairs", unit="part", file=sys.stderr, mininterval=10):
                    # The part's shards read as every stage after ingest reads them; a key not found raises.
                    # Stored as `jpg` whatever the format: readers decode by content, as from any shard.
                    for key, _, data in iter_encoded(part_shards[part], wanted[part]):
                        found_raw.add(key)
                        raw.write({KEY: key, "jpg": data, "txt": captions[key]})
                    keys = wanted[part] & with_text
                    for key, png, mask, meta in iter_inpainted_encoded(removed_tars[part]) if keys else ():
                        if key in keys:
                            found_removed.add(key)
                            removed.write({KEY: key, "png": png, "mask.png": mask,
                                           "json": json.dumps(meta).encode("utf-8")})
            except ShardError as exc:
                raise HeldoutError(f"held-out pairs not found in their parts' shards: {exc}") from exc
            finally:
                raw.close()
                removed.close()
        missing = (set(pairs[KEY]) - found_raw) | (with_text - found_removed)
        if missing:
            raise HeldoutError(f"{len(missing)} held-out pairs not found in their parts' shards or inpainted "
                               f"tars, e.g. {sorted(missing)[:3]}; the index and the files disagree")
    return {"pairs": int(len(pairs)), "with_text": len(with_text), "no_text": int(len(pairs) - len(with_text)),
            "parts": len(wanted)}


def run_pairs(index_paths: Sequence[str], part_shards: Mapping[str, Sequence[str]], removed_tars: Mapping[str, str],
              max_per_group: int, seed: int, out_table: str, out_raw: str, out_removed: str, out_counts: str,
              engine: Engine = Engine()) -> dict:
    """Select the held-out pairs of the given index parts and copy their images (see the module
    docstring); write the pairs table, the two tars and the counts."""
    pairs = select_pairs(index_paths, max_per_group, seed, engine)
    counts = extract_pairs(pairs, part_shards, removed_tars, out_raw, out_removed)
    write_parquet(pairs, out_table)
    write_json(counts, out_counts)
    log.info("held-out pairs: %s", counts)
    return counts


def score_model(spec: dict, pairs_path: str, raw_tar: str, removed_tar: str, batch_size: int, device: str,
                max_pixels: int, precision: str = "auto") -> pd.DataFrame:
    """One CLIP's S on the held-out pairs, one row per pair: ``(key, group, s_raw, s_removed)``,
    ``s_removed`` the pair with its text removed (empty for a pair without text)."""
    from .feed import InpaintedPairs, ShardPairs
    from .score import load_scorer, score_table

    scorer = load_scorer(spec, device, precision)
    pairs = read_parquet(pairs_path)
    captions = dict(zip(pairs[KEY], pairs["caption"]))
    with_text = set(pairs.loc[pairs["group"] == TEXT, KEY])
    raw = score_table(scorer, ShardPairs((raw_tar,), captions, max_pixels), batch_size)
    removed = score_table(scorer, InpaintedPairs(removed_tar, {k: c for k, c in captions.items() if k in with_text}),
                          batch_size)
    scores = (pairs[[KEY, "group"]]
              .merge(raw.rename(columns={"s": "s_raw"}), on=KEY, how="left", validate="one_to_one")
              .merge(removed.rename(columns={"s": "s_removed"}), on=KEY, how="left", validate="one_to_one"))
    unscored = scores["s_raw"].isna() | (scores[KEY].isin(with_text) & scores["s_removed"].isna())
    if unscored.any() or len(raw) != len(pairs) or len(removed) != len(with_text):
        raise HeldoutError(f"{spec.get('name')}: held-out pairs without their scores, e.g. "
                           f"{scores.loc[unscored, KEY].head(3).tolist()}")
    return scores


def group_means(scores: pd.DataFrame) -> dict:
    """Mean S and pair count of each of Fig. 9's groups."""
    text = scores["group"] == TEXT
    groups = {GROUPS[0]: scores.loc[~text, "s_raw"], GROUPS[1]: scores.loc[text, "s_raw"],
              GROUPS[2]: scores.loc[text, "s_removed"]}
    return {"mean_s": {g: float(v.mean()) for g, v in groups.items()}, "n": {g: int(len(v)) for g, v in groups.items()}}


def run_score(spec: dict, pairs_path: str, raw_tar: str, removed_tar: str, out_table: str, out_json: str,
              batch_size: int, device: str, max_pixels: int, precision: str = "auto", threads: int = 1) -> dict:
    """Score the held-out pairs with one CLIP; write the per-pair table and the group means."""
    from .devices import set_torch_threads

    set_torch_threads(threads)
    scores = score_model(spec, pairs_path, raw_tar, removed_tar, batch_size, device, max_pixels, precision)
    summary = {"model": spec.get("name"), **group_means(scores)}
    write_parquet(scores, out_table)
    write_json(summary, out_json)
    return summary


def fig9_table(labels: Sequence[str], seeds: Sequence[int], summaries: Sequence[dict]) -> pd.DataFrame:
    """Per model (its label without the seed) and group: mean S over seeds, its std over seeds
    (NaN with one seed) and the pairs per seed."""
    rows = [{"model": label, "seed": seed, "group": g, "mean S": s["mean_s"][g], "pairs": s["n"][g]}
            for label, seed, s in zip(labels, seeds, summaries) for g in GROUPS]
    frame = pd.DataFrame(rows)
    order = list(dict.fromkeys(labels))
    table = frame.groupby(["model", "group"], sort=False).agg(
        **{"mean S": ("mean S", "mean"), "mean S seed std": ("mean S", "std"), "seeds": ("seed", "nunique"),
           "pairs": ("pairs", "first")}).reset_index()
    table["model"] = pd.Categorical(table["model"], order, ordered=True)
    table["group"] = pd.Categorical(table["group"], GROUPS, ordered=True)
    return table.sort_values(["model", "group"]).reset_index(drop=True).astype({"model": str, "group": str})


def draw_fig9(table: pd.DataFrame, out_png: str) -> None:
    """Grouped bars: per model, mean S of each group, seed std as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(table["model"]))
    width = 0.8 / len(GROUPS)
    fig, ax = plt.subplots(figsize=(max(5.5, 0.9 * len(models) + 2), 4), dpi=110)
    x = np.arange(len(models))
    for i, group in enumerate(GROUPS):
        part = table[table["group"] == group].set_index("model").reindex(models)
        ax.bar(x + (i - 1) * width, part["mean S"], width, yerr=part["mean S seed std"].fillna(0), label=group,
               capsize=2)
    ax.set_xticks(x, models, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("mean S on held-out pairs")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.legend(fontsize=8)
    ax.set_title("Fig. 9: alignment of each trained CLIP on the held-out split", fontsize=10)
    fig.tight_layout()
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def run_fig9(labels: Sequence[str], seeds: Sequence[int], summary_paths: Sequence[str], out_csv: str, out_png: str,
             decimals: int) -> pd.DataFrame:
    """Fig. 9 and its table from every model's held-out summary."""
    summaries = [read_json(p) for p in summary_paths]
    table = fig9_table(labels, seeds, summaries)
    draw_fig9(table, out_png)
    write_csv(table.round({"mean S": decimals, "mean S seed std": decimals}), out_csv, index=False)
    return table
