"""Did a change move any result? Compare two runs of the workflow (two working directories).

    .venv/bin/python bench/compare_runs.py BEFORE AFTER --label "tiny config" [--no-write]

Tables (``results/*.csv``) and subset shards (tars, ``sizes.json``) byte for byte; subset keys and
vocabularies (parquet) by content, since the writer may differ; each subset's ``stats.json`` by
value, listing every value that moved. Only files present in BEFORE are compared (a target the
before-run did not build is not asked of the after-run). The result is printed and recorded under
``## before and after: LABEL`` in docs/BENCHMARKS.md unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pandas as pd

from benchdoc import publish

ROOT = Path(__file__).resolve().parents[1]


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def flat(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def compare(before: Path, after: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """(path, verdict) rows, and the stats values that moved."""
    rows, moved = [], []
    for p in sorted((before / "results").glob("*.csv")):
        q = after / p.relative_to(before)
        rows.append((str(p.relative_to(before)), "missing" if not q.exists() else
                     "byte-identical" if md5(p) == md5(q) else "DIFFERENT"))
    for pattern in ("*/subsets/*/keys.parquet", "synth/*/*gram.parquet"):
        for p in sorted((before / "results").glob(pattern)):
            q = after / p.relative_to(before)
            same = q.exists() and pd.read_parquet(p).reset_index(drop=True).equals(pd.read_parquet(q).reset_index(drop=True))
            rows.append((str(p.relative_to(before)), "same content" if same else "missing" if not q.exists() else "DIFFERENT"))
    shards = sorted((before / "results").glob("*/subsets/*/shards/*"))
    differ = [p for p in shards if not (after / p.relative_to(before)).exists()
              or md5(p) != md5(after / p.relative_to(before))]
    rows.append((f"subset shards ({len(shards)} tars and sizes.json)",
                 "byte-identical" if not differ else f"{len(differ)} DIFFERENT, e.g. {differ[0].relative_to(before)}"))
    for p in sorted((before / "results").glob("*/subsets/*/stats.json")):
        q = after / p.relative_to(before)
        if not q.exists():
            rows.append((str(p.relative_to(before)), "missing"))
            continue
        a, b = dict(flat(json.loads(p.read_text()))), dict(flat(json.loads(q.read_text())))
        changed = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        rows.append((str(p.relative_to(before)), "same values" if not changed else f"{len(changed)} value(s) moved"))
        moved += [f"`{p.parent.name}` {k}: {a.get(k)!r} → {b.get(k)!r}" for k in changed]
    return rows, moved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--label", required=True)
    parser.add_argument("--note", default="", help="one sentence on what the two runs are")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows, moved = compare(args.before, args.after)
    heading = f"## before and after: {args.label}"
    lines = [heading, "", f"Written by `bench/compare_runs.py`. {args.note}".rstrip(), "",
             "| output | verdict |", "|---|---|", *[f"| {path} | {verdict} |" for path, verdict in rows]]
    if moved:
        lines += ["", "Values in the subsets' stats.json that moved (last digits: the engine sums in another order):",
                  "", *[f"- {m}" for m in moved]]
    publish(heading, "\n".join(lines) + "\n", args)


if __name__ == "__main__":
    main()
