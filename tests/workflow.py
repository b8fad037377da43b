"""Running the real Snakefile on a test config in a temporary directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def write_config(workdir: Path, config: dict) -> Path:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def tiny_config(datasets: dict | None = None) -> dict:
    """tests/configs/tiny.yaml; with ``datasets``, those instead of its own (and without its
    `curate.table_datasets` and study datasets, which name the tiny demo_mix that is then gone)."""
    cfg = yaml.safe_load((ROOT / "tests" / "configs" / "tiny.yaml").read_text())
    if datasets is not None:
        cfg["datasets"] = datasets
        cfg["curate"].pop("table_datasets")
        cfg.pop("study_datasets")
        cfg.pop("study_tables")
    return cfg


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 1800) -> subprocess.CompletedProcess:
    """Run snakemake with the repository's Snakefile in ``workdir`` (which holds config.yaml)."""
    cmd = [*SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir), *args]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Rule -> job count of what a dry run would execute (empty when nothing is to be done)."""
    out = snakemake(workdir, "-n", *args).stdout
    if "Job stats:" not in out:
        return {}
    table = out.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    jobs = {}
    for line in table.splitlines()[3:]:
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
            jobs[parts[0]] = int(parts[1])
    return jobs


def plan_after_editing(tmp_path: Path, module: str, workdir: Path, *targets: str, timeout: int = 600
                       ) -> subprocess.CompletedProcess:
    """Dry run, on ``workdir``'s results, of a copy of the workflow whose library module ``module``
    differs by one comment: what an edit of that module reruns."""
    import shutil

    copy = tmp_path / "repo"
    copy.mkdir()
    for part in ("Snakefile", "rules", "scripts", "schemas", "profiles", "src"):
        src = ROOT / part
        (shutil.copytree if src.is_dir() else shutil.copy)(src, copy / part)
    with open(copy / "src" / "parrotscope" / f"{module}.py", "a") as fh:
        fh.write("\n# an edit\n")
    return subprocess.run([*SNAKEMAKE, "-n", "--snakefile", str(copy / "Snakefile"), "--directory", str(workdir),
                           *targets], capture_output=True, text=True, timeout=timeout)
