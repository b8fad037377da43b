"""Planning time and memory of a LAION-2B-sized workflow (dry run only: nothing is executed).

Run on demand (not a test):

    .venv/bin/python bench/bench_plan.py                         # 1k, 10k, 100k, 230k shards
    .venv/bin/python bench/bench_plan.py --sizes 1000 10000 --no-write   # quick look

LAION-2B is ~2.3 billion pairs in ~230,000 webdataset shards of 10,000 samples. For each size the
benchmark writes a configuration of the study on such a dataset (a ``shards:`` brace pattern over
empty placeholder shard files, the paper's released scorers as local checkpoint paths, Table 3-6
subsets of 3M samples, RN50 and ViT-B-32 trained on each, DataComp evaluation, the aesthetic
predictor of the fix) and times, in a fresh process each, what a user runs first on a cluster:

    snakemake TARGET -n --quiet rules host      # the default target (`all`) and results/table3.csv

The placeholders are empty files: a dry run only stats them (Snakemake never opens inputs while
planning, and the configured weights are plain paths). Per row: the jobs planned, wall time, CPU
time (user + system of the snakemake process: the load-independent figure on a shared machine) and
peak resident memory (``wait4`` of that process). The markdown table is printed and, unless
``--no-write``, written under ``## planning (LAION-2B scale)`` in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from benchdoc import add_common_arguments, publish

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## planning (LAION-2B scale)"
LAION2B_SHARDS = 230_000
TARGETS = ["all", "results/table3.csv"]


@dataclass
class Case:
    n_shards: int
    shards_per_part: int
    track_shards: bool
    target: str


@dataclass
class Result:
    case: Case
    n_parts: int
    n_jobs: int
    wall_s: float
    cpu_s: float
    peak_mb: float


def load_note(load: float) -> str:
    """How to read the wall times, given the machine's load while they were measured."""
    if load < 1.0:
        return "a quiet machine: wall time is the planning time a user waits"
    return "the machine was shared: wall times stretch with the load, CPU times much less"


def make_placeholders(root: Path, n_shards: int) -> dict[str, Path]:
    """Empty shard files 000000.tar ... and empty weight files; existing ones are kept (reruns are
    quick)."""
    shards = root / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    present = {e.name for e in os.scandir(shards)}
    for i in range(n_shards):
        name = f"{i:06d}.tar"
        if name not in present:
            (shards / name).touch()
    weights = root / "weights"
    weights.mkdir(exist_ok=True)
    files = {name: weights / name for name in ("ViT-B-32-openai.pt", "ViT-L-14-openai.pt", "aesthetic-l14.pth")}
    for path in files.values():
        path.touch()
    (root / "datacomp").mkdir(exist_ok=True)
    return {"shards": shards, **files}


def laion_config(case: Case, paths: dict[str, Path], datacomp: Path) -> dict:
    """The study on a LAION-2B-like dataset, as a cluster user would configure it (the paper's
    scorers, subset sizes and architectures; weights and evaluation sets as local paths)."""
    return {
        "datasets": {
            "laion2b": {
                "shards": f"{paths['shards']}/{{000000..{case.n_shards - 1:06d}}}.tar",
                "shards_per_part": case.shards_per_part,
                "track_shards": case.track_shards,
            },
        },
        "study_dataset": "laion2b",
        "score": {"scorers": {
            "openai_b32": {"arch": "ViT-B-32", "checkpoint": str(paths["ViT-B-32-openai.pt"])},
            "openai_l14": {"arch": "ViT-L-14", "checkpoint": str(paths["ViT-L-14-openai.pt"])},
        }},
        "train": {"models": ["RN50", "ViT-B-32"]},
        "curate": {"size": 3_000_000, "n_shards": 300},
        "evaluate": {"datacomp_root": str(datacomp)},
        "filters": {"aesthetic": {"scorer": "openai_l14", "weights": str(paths["aesthetic-l14.pth"])}},
        "str": {"benchmarks": ["synth"]},
    }


def job_count(stdout: str) -> int:
    """Total of Snakemake's "Job stats" table (0 when there is nothing to do)."""
    match = re.search(r"^total\s+(\d+)\s*$", stdout, re.M)
    return int(match.group(1)) if match else 0


def plan(case: Case, workdir: Path) -> tuple[int, float, float, float]:
    """Dry-run ``case.target`` in ``workdir``: (jobs, wall s, CPU s, peak RSS MB) of the snakemake
    process. Raises with Snakemake's output when planning fails."""
    cmd = [sys.executable, "-m", "snakemake", case.target, "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(workdir), "-n", "--quiet", "rules", "host"]
    out, err = workdir / "plan.out", workdir / "plan.err"
    start = time.perf_counter()
    with open(out, "w") as fout, open(err, "w") as ferr:
        proc = subprocess.Popen(cmd, stdout=fout, stderr=ferr)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.read_text()[-3000:]}")
    return job_count(out.read_text()), wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def run_case(case: Case, root: Path, paths: dict[str, Path], repeats: int) -> Result:
    """Best wall time of ``repeats`` fresh dry runs (CPU time and memory of the same run)."""
    workdir = root / f"plan-{case.n_shards}-{case.shards_per_part}-{int(case.track_shards)}"
    if workdir.exists():
        shutil.rmtree(workdir)  # no .snakemake metadata from an earlier run
    workdir.mkdir(parents=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(laion_config(case, paths, root / "datacomp"),
                                                        sort_keys=False))
    best = None
    for _ in range(repeats):
        n_jobs, wall, cpu, peak = plan(case, workdir)
        if best is None or wall < best[1]:
            best = (n_jobs, wall, cpu, peak)
    n_parts = -(-case.n_shards // case.shards_per_part)
    return Result(case, n_parts, *best)


def markdown(results: list[Result], load_start: float, load_end: float) -> str:
    import snakemake

    lines = [
        SECTION,
        "",
        f"Measured {datetime.date.today().isoformat()} by `bench/bench_plan.py` on {platform.machine()} "
        f"Linux, {os.cpu_count()} CPU cores, Python {platform.python_version()}, Snakemake "
        f"{snakemake.__version__}; 1-minute load average {load_start:.1f} when the run started and "
        f"{load_end:.1f} at its end ({load_note(max(load_start, load_end))}). Dry runs "
        f"(`snakemake TARGET -n`) of the study on a LAION-2B-like dataset: N empty "
        f"placeholder shards of a `shards:` brace pattern, two released scorers (ViT-B-32, ViT-L-14) as "
        f"local checkpoints, Tables 3-6 subsets of 3M samples, RN50 and ViT-B-32 trained on each, DataComp "
        f"evaluation, the fix with the aesthetic predictor. `all` is the default target. CPU = user + "
        f"system time of the snakemake process; memory = its peak resident set (`wait4`).",
        "",
        "| shards | shards/part | parts | track_shards | target | jobs | wall s | CPU s | peak MB |",
        "|---:|---:|---:|:---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        c = r.case
        lines.append(f"| {c.n_shards:,} | {c.shards_per_part} | {r.n_parts:,} | {'yes' if c.track_shards else 'no'} "
                     f"| `{c.target}` | {r.n_jobs:,} | {r.wall_s:.1f} | {r.cpu_s:.1f} | {r.peak_mb:,.0f} |")
    return "\n".join(lines) + "\n"


def cases(args) -> list[Case]:
    """Every size at the chosen part size; at the largest size also the compared part sizes and,
    for Table 3, tracked shards (each shard file an input of ingest)."""
    out = [Case(n, args.shards_per_part, False, t) for n in args.sizes for t in args.targets]
    largest = max(args.sizes)
    out += [Case(largest, spp, False, t) for spp in args.compare_per_part for t in args.targets]
    if args.compare_tracked:
        out.append(Case(largest, args.shards_per_part, True, args.targets[-1]))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, LAION2B_SHARDS],
                        help="shard counts to plan (default: 1k, 10k, 100k, 230k)")
    parser.add_argument("--shards-per-part", type=int, default=500,
                        help="datasets.*.shards_per_part of every size (default 500)")
    parser.add_argument("--compare-per-part", type=int, nargs="*", default=[250],
                        help="other part sizes planned at the largest size (default: 250)")
    parser.add_argument("--compare-tracked", action=argparse.BooleanOptionalAction, default=True,
                        help="also plan the largest size with track_shards: true (default: yes)")
    parser.add_argument("--targets", nargs="+", default=TARGETS)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/parrotscope-bench-plan"),
                        help="placeholder shards and run directories (kept for reruns; ~1 MB)")
    add_common_arguments(parser, ROOT, shards=False)
    parser.set_defaults(repeats=1)  # one plan of 230k shards takes a minute on a loaded 2-core machine
    args = parser.parse_args(argv)

    load_start = os.getloadavg()[0]
    paths = make_placeholders(args.workdir, max(args.sizes))
    results = []
    for case in cases(args):
        result = run_case(case, args.workdir, paths, args.repeats)
        print(f"{case}: {result.n_jobs} jobs, {result.wall_s:.1f} s wall, {result.cpu_s:.1f} s CPU, "
              f"{result.peak_mb:.0f} MB", flush=True)
        results.append(result)
    section = markdown(results, load_start, os.getloadavg()[0])
    publish(SECTION, section, args)


if __name__ == "__main__":
    main()
