"""Stage ``ingest``: one row per sample of a part, with its status, before anything expensive runs.

The samples table is the ledger every later stage reconciles against: a later stage processes the
``ok`` rows and carries the others through as skipped, so samples in = processed + skipped holds
at every stage. Repeated keys cannot be rows of a keyed table; they are counted and listed in the
part's counts file instead.

Damaged shards follow ``ingest.on_bad_shard`` (:mod:`parrotscope.shards`): in ``record`` mode a
truncated or garbled shard keeps its whole samples (the sample open at the cut is a
``truncated_shard`` row) and a missing local shard contributes none; the counts file lists both
(``shards_truncated``, ``shards_missing``, with the reader's error per shard in ``shard_errors``),
and ``parts.json`` gathers them with totals.
"""

from __future__ import annotations

import collections
import logging
import sys

import pandas as pd
from tqdm import tqdm

from .io import read_json, write_json, write_parquet
from .shards import MISSING, OK, RECORD, TRUNCATED, ShardDamage, iter_checked

log = logging.getLogger(__name__)

SAMPLE_COLUMNS = ["__key__", "shard", "status", "error", "caption", "width", "height", "mode",
                  "format", "n_bytes", "meta"]


def ingest_part(shards: list[str], max_pixels: int, on_bad_shard: str = RECORD) -> tuple[pd.DataFrame, dict]:
    """Read and check every sample of the part's shards; return (samples table, counts)."""
    rows, duplicates = [], []
    reasons: collections.Counter[str] = collections.Counter()
    damage: list[ShardDamage] = []
    n_in = 0
    for checked, _ in tqdm(iter_checked(shards, max_pixels, on_bad_shard, damage), desc="ingest",
                           unit="sample", file=sys.stderr, mininterval=10):
        n_in += 1
        if checked.status == "duplicate_key":
            duplicates.append({"__key__": checked.key, "shard": checked.shard})
            reasons["duplicate_key"] += 1
            continue
        if checked.status != OK:
            reasons[checked.status] += 1
        rows.append(checked.as_row())
    table = pd.DataFrame(rows, columns=SAMPLE_COLUMNS)
    counts = {
        "shards": list(shards),
        "samples_in": n_in,
        "ok": int((table["status"] == OK).sum()),
        "skipped": int(sum(reasons.values())),
        "skipped_by_reason": dict(sorted(reasons.items())),
        "duplicates": duplicates,
        "shards_truncated": [d.url for d in damage if d.kind == TRUNCATED],
        "shards_missing": [d.url for d in damage if d.kind == MISSING],
        "shard_errors": {d.url: d.error for d in damage},
    }
    assert counts["samples_in"] == counts["ok"] + counts["skipped"], counts
    return table, counts


def run_ingest(shards: list[str], max_pixels: int, out_table: str, out_counts: str,
               on_bad_shard: str = RECORD) -> None:
    table, counts = ingest_part(shards, max_pixels, on_bad_shard)
    log.info("ingest: %d samples in, %d ok, %d skipped %s", counts["samples_in"], counts["ok"],
             counts["skipped"], counts["skipped_by_reason"])
    if counts["shards_truncated"] or counts["shards_missing"]:
        log.warning("ingest: %d of %d shard(s) truncated %s, %d missing %s; their whole samples are "
                    "kept and counted", len(counts["shards_truncated"]), len(shards),
                    counts["shards_truncated"], len(counts["shards_missing"]), counts["shards_missing"])
    write_parquet(table, out_table)
    write_json(counts, out_counts)


def merge_part_counts(parts: dict[str, dict]) -> dict:
    """Combine per-part counts into the dataset's ``parts.json``: per part and in total.

    Damaged shards are listed over all parts with their numbers; counts files written before
    shards were recorded (no such keys) count as none.
    """
    total = collections.Counter()
    by_reason: collections.Counter[str] = collections.Counter()
    truncated: list[str] = []
    missing: list[str] = []
    for c in parts.values():
        total.update({k: c[k] for k in ("samples_in", "ok", "skipped")})
        by_reason.update(c["skipped_by_reason"])
        truncated.extend(c.get("shards_truncated", []))
        missing.extend(c.get("shards_missing", []))
    return {
        "n_parts": len(parts),
        "n_shards": sum(len(c["shards"]) for c in parts.values()),
        "samples_in": total["samples_in"],
        "ok": total["ok"],
        "skipped": total["skipped"],
        "skipped_by_reason": dict(sorted(by_reason.items())),
        "n_shards_truncated": len(truncated),
        "n_shards_missing": len(missing),
        "shards_truncated": truncated,
        "shards_missing": missing,
        "parts": parts,
    }


def run_parts(counts_paths: dict[str, str], out_path: str) -> None:
    """Write ``parts.json`` from the parts' counts files (part name -> path)."""
    write_json(merge_part_counts({p: read_json(path) for p, path in counts_paths.items()}), out_path)


def read_part_shards(parts_json: str) -> list[str]:
    """Every shard URL of a dataset, in part order, as ``parts.json`` records them.

    Rules that read the whole dataset (materialising a subset, training on the pool) take their
    shard list from here rather than listing every shard as an input: for a LAION-2B-sized
    dataset (~230k shards) such inputs make planning the DAG quadratic. parts.json is rewritten
    whenever a part is re-ingested, so those rules still rerun when a shard changes. Shards that
    ingest recorded as missing are left out: they hold no sample, and a reader cannot open them.
    """
    urls = []
    for part in read_json(parts_json)["parts"].values():
        missing = set(part.get("shards_missing", ()))
        urls.extend(url for url in part["shards"] if url not in missing)
    return urls
