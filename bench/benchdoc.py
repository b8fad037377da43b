"""Shared by the benchmarks: recording a result section in docs/BENCHMARKS.md."""

from __future__ import annotations

import re
from pathlib import Path

HEADER = "# Benchmarks\n\nThroughput of the workflow's stages, one section per stage.\n"


def write_section(heading: str, section: str, path: Path) -> None:
    """Replace (or append) the section starting with ``heading`` (a ``## ...`` line), keeping
    every other section of the file as it is."""
    text = path.read_text() if path.exists() else HEADER
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def publish(heading: str, section: str, args) -> None:
    """Print a benchmark's section and record it in ``args.out`` unless ``--no-write``."""
    print(section)
    if not args.no_write:
        write_section(heading, section, args.out)
        print(f"written to {args.out}", flush=True)


def add_common_arguments(parser, root: Path, shards: bool = True) -> None:
    """The options every benchmark shares: repeats, where the demo shards are (``shards=False``
    for a benchmark that reads none), where results go."""
    parser.add_argument("--repeats", type=int, default=3)
    if shards:
        parser.add_argument("--shards", default=str(root / "results/demo/shards/*.tar"))
    parser.add_argument("--out", type=Path, default=root / "docs/BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
