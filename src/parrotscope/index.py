"""Stage ``index``: the parrot index, one row per sample joining everything known about it.

Joined by ``__key__`` from the per-part tables: ingest (caption, status, size), spot (spotted
words), match (CoTR exact and fuzzy, ground truth where the data has it) and, per scorer,
``S(raw)``, the scores after each text removal and the relative scores RSA and RSC. Scorer columns
are prefixed with the scorer's name (``ref.s_raw``, ``ref.rsa``, ...). Skipped samples keep their
row, status and reason, with empty measures.
"""

from __future__ import annotations

import pandas as pd

from .io import KEY, read_parquet, write_parquet

SAMPLE_COLUMNS = [KEY, "shard", "status", "error", "caption", "width", "height"]
SPOT_COLUMNS = [KEY, "words", "n_words", "n_dropped"]
MATCH_DROP = ["status", "error"]  # carried by the samples table / overridden below
SCORE_DROP = ["status"]


def part_index(samples: pd.DataFrame, spot: pd.DataFrame, match: pd.DataFrame,
               scores: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Join one part's tables by key; a key missing from any stage is an error, never a silent drop."""
    out = samples[SAMPLE_COLUMNS].rename(columns={"status": "ingest_status", "error": "ingest_error"})
    stage_status = spot[[KEY, "status", "error"]]
    out = out.merge(stage_status, on=KEY, how="left", validate="one_to_one")
    out = out.merge(spot[SPOT_COLUMNS], on=KEY, how="left", validate="one_to_one")
    out = out.merge(match.drop(columns=[c for c in MATCH_DROP if c in match]), on=KEY, how="left",
                    validate="one_to_one")
    for name, table in scores.items():
        renamed = table.drop(columns=[c for c in SCORE_DROP if c in table]).rename(
            columns=lambda c: c if c == KEY else f"{name}.{c}")
        out = out.merge(renamed, on=KEY, how="left", validate="one_to_one")
    keys = set(samples[KEY])
    for stage, table in {"spot": spot, "match": match, **{f"score {n}": t for n, t in scores.items()}}.items():
        if set(table[KEY]) != keys:
            diff = keys.symmetric_difference(table[KEY])
            raise ValueError(f"{stage} table disagrees with the samples table on {len(diff)} keys, "
                             f"e.g. {sorted(diff)[:3]}")
    return out


def build_index(parts: list[str], paths: dict[str, dict[str, str]], scorers: list[str]) -> pd.DataFrame:
    """Concatenate the parts' joined tables; ``paths[part]`` maps stage names to files."""
    frames = []
    for part in parts:
        p = paths[part]
        scores = {s: read_parquet(p[f"score:{s}"]) for s in scorers}
        frame = part_index(read_parquet(p["samples"]), read_parquet(p["spot"]), read_parquet(p["match"]), scores)
        frame.insert(1, "part", part)
        frames.append(frame)
    index = pd.concat(frames, ignore_index=True)
    dup = index[KEY].duplicated()
    if dup.any():
        raise ValueError(f"the same key occurs in several parts: {index.loc[dup, KEY].head(5).tolist()}; "
                         "keys must be unique across the dataset's shards")
    return index


def run_index(parts: list[str], samples: list[str], spot: list[str], match: list[str],
              scores: list[str], scorers: list[str], out_path: str) -> None:
    """Paths come in the rule's order: per part for samples/spot/match; scorer-major for scores."""
    paths = {part: {"samples": samples[i], "spot": spot[i], "match": match[i]} for i, part in enumerate(parts)}
    for j, scorer in enumerate(scorers):
        for i, part in enumerate(parts):
            paths[part][f"score:{scorer}"] = scores[j * len(parts) + i]
    write_parquet(build_index(parts, paths, scorers), out_path)
