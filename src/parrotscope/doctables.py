"""The docs' numbers from results: every marked table and figure block, regenerated or checked.

A block in README.md or docs/*.md is marked by a comment naming its source, and ends at the
closing comment; the prose around it stays hand-written::

    <!-- table results/table1.csv -->
    | statistic | demo (spotted) | ... |
    <!-- /table -->

    <!-- table results/table_filters.csv columns="subset|filter|tiny-rn IN" -->
    ...
    <!-- /table -->

    <!-- figure results/figures/fig5_relative_scores.png docs/img/fig5_relative_scores.png -->

A table block is the CSV rendered as a markdown table (``columns``: only these, in this order;
``decimals``: rounding). A figure marker copies the result's image to the docs' copy.
``python -m parrotscope.doctables`` rewrites the blocks from ``results/``; with ``--check`` it
writes nothing and exits 1 when any block or image differs from the current results (2 when a
source is missing), so a README that no longer matches its run is caught.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .io import atomic_path

TABLE = re.compile(r"^<!-- table (?P<spec>.+?) -->\n(?P<body>.*?)^<!-- /table -->$", re.M | re.S)
FIGURE = re.compile(r"^<!-- figure (?P<source>\S+) (?P<copy>\S+) -->$", re.M)


class DocTableError(ValueError):
    """A marked block cannot be regenerated: the message names the document and the source."""


@dataclass(frozen=True)
class TableSpec:
    """What a table marker asks for: the CSV, and optionally a column selection, a row selection
    (values of the first column, in the CSV's order) and rounding."""

    source: str
    columns: tuple[str, ...] = ()
    decimals: int | None = None
    rows: tuple[str, ...] = ()


def parse_spec(text: str) -> TableSpec:
    """``results/x.csv [columns="a|b"] [rows="x|y"] [decimals=N]`` from a table marker."""
    words = shlex.split(text)
    options = dict(w.split("=", 1) for w in words[1:] if "=" in w)
    unknown = set(options) - {"columns", "rows", "decimals"}
    if not words or unknown or len(options) != len(words) - 1:
        raise DocTableError(f"table marker {text!r}: expected a CSV path, then columns=\"a|b\", rows=\"x|y\" "
                            "and/or decimals=N")
    columns = tuple(options["columns"].split("|")) if "columns" in options else ()
    rows = tuple(options["rows"].split("|")) if "rows" in options else ()
    decimals = int(options["decimals"]) if "decimals" in options else None
    return TableSpec(words[0], columns, decimals, rows)


def render_table(spec: TableSpec, root: Path) -> str:
    """The markdown table of a CSV under ``root`` (tabulate's pipe format, as pandas writes it)."""
    path = root / spec.source
    if not path.exists():
        raise FileNotFoundError(spec.source)
    table = pd.read_csv(path)
    if spec.rows:
        # Rows by their first column's value (a model, a subset), so a long table can be shown in part.
        missing = sorted(set(spec.rows) - set(table.iloc[:, 0].astype(str)))
        if missing:
            raise DocTableError(f"{spec.source} has no row(s) {missing} in its first column {table.columns[0]!r}")
        table = table[table.iloc[:, 0].astype(str).isin(spec.rows)]
    if spec.columns:
        missing = [c for c in spec.columns if c not in table.columns]
        if missing:
            raise DocTableError(f"{spec.source} has no column(s) {missing}; it has {list(table.columns)}")
        table = table[list(spec.columns)]
    if spec.decimals is not None:
        table = table.round(spec.decimals)
    return table.to_markdown(index=False) + "\n"


def regenerate(text: str, root: Path, skip_missing: bool = False) -> tuple[str, list[str]]:
    """The document with every table block rebuilt from ``root``. With ``skip_missing`` a block
    whose result does not exist (a table outside the run's targets) is left as it is; those
    results are returned beside the text."""
    kept: list[str] = []

    def block(match: re.Match) -> str:
        spec = parse_spec(match.group("spec"))
        if skip_missing and not (root / spec.source).exists():
            kept.append(spec.source)
            return match.group(0)
        return f"<!-- table {match.group('spec')} -->\n{render_table(spec, root)}<!-- /table -->"

    return TABLE.sub(block, text), kept


def figures(text: str) -> list[tuple[str, str]]:
    """(result image, docs copy) of every figure marker."""
    return [(m.group("source"), m.group("copy")) for m in FIGURE.finditer(text)]


def documents(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def check(root: Path) -> list[str]:
    """What differs from the current results: one line per stale table block or figure copy."""
    stale = []
    for doc in documents(root):
        text = doc.read_text()
        new, _ = regenerate(text, root)
        for old_block, new_block in zip(TABLE.finditer(text), TABLE.finditer(new)):
            if old_block.group(0) != new_block.group(0):
                stale.append(f"{doc.relative_to(root)}: table from {parse_spec(old_block.group('spec')).source}")
        for source, copy in figures(text):
            if not (root / source).exists():
                raise FileNotFoundError(source)
            if not (root / copy).exists() or not filecmp.cmp(root / source, root / copy, shallow=False):
                stale.append(f"{doc.relative_to(root)}: figure {copy} from {source}")
    return stale


def write(root: Path, skip_missing: bool = False) -> list[str]:
    """Rewrite every document's blocks and figure copies; return what changed (and, with
    ``skip_missing``, what was kept for want of its result)."""
    changed = []
    for doc in documents(root):
        text = doc.read_text()
        new, kept = regenerate(text, root, skip_missing)
        if new != text:
            with atomic_path(doc) as tmp:
                Path(tmp).write_text(new)
            changed.append(str(doc.relative_to(root)))
        changed += [f"kept, no result: {source}" for source in kept]
        for source, copy in figures(text):
            if skip_missing and not (root / source).exists():
                changed.append(f"kept, no result: {source}")
                continue
            if not (root / copy).exists() or not filecmp.cmp(root / source, root / copy, shallow=False):
                with atomic_path(root / copy) as tmp:
                    shutil.copyfile(root / source, tmp)
                changed.append(copy)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the checkout (results/ and the docs)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a block is stale")
    parser.add_argument("--skip-missing", action="store_true",
                        help="rewrite what the results hold; leave blocks whose result is missing as they are")
    args = parser.parse_args(argv)
    try:
        if args.check:
            stale = check(args.root)
            for line in stale:
                print(f"stale: {line}")
            return 1 if stale else 0
        for line in write(args.root, args.skip_missing):
            print(line if line.startswith("kept") else f"rewritten: {line}")
        return 0
    except FileNotFoundError as exc:
        print(f"missing result {exc.args[0]}: run the workflow first (`snakemake -c all`)", file=sys.stderr)
        return 2
    except DocTableError as exc:
        print(str(exc), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
