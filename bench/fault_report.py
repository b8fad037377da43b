"""Run the fault suite (tests/test_faults.py) and record what happened in docs/RELIABILITY.md.

    .venv/bin/python bench/fault_report.py              # every fault, then the "Faults tried" section
    .venv/bin/python bench/fault_report.py --from-record results.json   # render a recorded run only

Each fault test appends a record (fault, test, outcome, survived, samples lost) to the JSON file
named by $PARROTSCOPE_FAULT_RECORD; this script runs pytest with it set and writes the table and
the counts. Nothing in the section is typed by hand.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchdoc import publish  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## Faults tried"


def run_suite(record: Path, pytest_args: list[str]) -> tuple[int, float, str]:
    """pytest on the whole fault suite with records going to ``record``; (rc, seconds, summary)."""
    env = dict(os.environ, PARROTSCOPE_FAULT_RECORD=str(record))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           str(ROOT / "tests" / "test_faults.py"), *pytest_args],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    summary = next((line for line in reversed(proc.stdout.splitlines()) if " in " in line and
                    ("passed" in line or "failed" in line)), "").strip("= ")
    sys.stdout.write(proc.stdout[-3000:])
    return proc.returncode, time.monotonic() - t0, summary


def cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(records: list[dict], seconds: float | None, summary: str) -> str:
    tried = [r for r in records if not r.get("skipped")]
    survived = [r for r in tried if r["survived"]]
    lost = sum(r["samples_lost"] or 0 for r in tried)
    skipped = [r for r in records if r.get("skipped")]
    when = datetime.date.today().isoformat()
    lines = [
        HEADING,
        "",
        f"Recorded {when} by `bench/fault_report.py` (pytest on `tests/test_faults.py`) on "
        f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores, Python "
        f"{platform.python_version()}" + (f"; the suite took {seconds / 60:.1f} min" if seconds else "")
        + (f" ({summary})" if summary else "") + ".",
        "",
        f"**Faults tried: {len(tried)}. Survived: {len(survived)}. Samples lost: {lost}.**"
        + (f" Not tried here: {len(skipped)} (reason in the table)." if skipped else ""),
        "",
        "| fault | test | what happened | survived | samples lost |",
        "|---|---|---|---|---:|",
    ]
    for r in records:
        verdict = "not tried" if r.get("skipped") else ("yes" if r["survived"] else "**no**")
        lost_cell = "" if r["samples_lost"] is None else str(r["samples_lost"])
        lines.append(f"| {cell(r['fault'])} | `{cell(r['test'])}` | {cell(r['outcome'])} | {verdict} | {lost_cell} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from-record", type=Path, help="render this record file instead of running the suite")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "RELIABILITY.md")
    parser.add_argument("--no-write", action="store_true", help="print the section only")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()
    rc, seconds, summary = 0, None, ""
    if args.from_record:
        record = args.from_record
    else:
        record = Path(tempfile.mkdtemp(prefix="faults-")) / "record.json"
        rc, seconds, summary = run_suite(record, args.pytest_args)
    records = json.loads(record.read_text()) if record.exists() else []
    section = render(records, seconds, summary)
    publish(HEADING, section, args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
