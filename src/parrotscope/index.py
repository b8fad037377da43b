"""Stage ``index``: the parrot index, one row per sample joining everything known about it, one file per part.

Joined by ``__key__`` from the per-part tables: ingest (caption, status, size), spot (spotted
words), match (CoTR exact and fuzzy, ground truth where the data has it) and, per scorer,
``S(raw)``, the scores after each text removal and the relative scores RSA and RSC. Scorer columns
are prefixed with the scorer's name (``ref.s_raw``, ``ref.rsa``, ...). Skipped samples keep their
row, status and reason, with empty measures. Column ``heldout`` flags the held-out split
(config ``heldout``), which no curated or filtered subset takes (:mod:`parrotscope.heldout`).
"""

from __future__ import annotations

import pandas as pd

from .io import KEY, read_parquet, write_parquet
from .keyhash import heldout_flags

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


def run_index_part(part: str, samples: str, spot: str, match: str, scores: dict[str, str],
                   out_path: str, heldout: dict | None = None) -> int:
    """Write one part's index (``results/{dataset}/index/{part}.parquet``); ``scores`` maps
    scorer name -> that scorer's score table of the part; ``heldout`` (``fraction``, ``seed``)
    flags the held-out split in column ``heldout``. Returns the part's row count.

    The index of a dataset is its folder of parts: per-part jobs run in parallel on a cluster, and
    dataset-wide steps read the folder through :mod:`parrotscope.db` (never one concatenated
    table). Keys must be unique across parts too; selection refuses a chosen key seen twice.
    """
    frame = part_index(read_parquet(samples), read_parquet(spot), read_parquet(match),
                       {name: read_parquet(path) for name, path in scores.items()})
    frame.insert(1, "part", part)
    heldout = heldout or {"fraction": 0.0, "seed": 0}
    frame["heldout"] = heldout_flags(frame[KEY].to_numpy(), heldout["fraction"], heldout["seed"])
    write_parquet(frame, out_path)
    return len(frame)

