"""The cluster profile (slurm/config.yaml) on a real one-node Slurm started on this machine.

`snakemake --profile slurm`, typed from the repository root exactly as docs/CLUSTER.md says for a
CPU-only cluster (targets first, then `--set-resources score:gpu=0 ... inpaint:gpu=0`), runs
the tiny config to Tables 1 and 3 (the design card's command) with every job submitted to Slurm:
demo shards, the grouped per-part jobs, curation, materialisation, OpenCLIP training, evaluation and
the tables (tests/slurm/cluster.sh brings up
munged, slurmctld and slurmd; Debian's Slurm 22.05 is installed with apt-get when missing). The
profile is the file users get; three flags are added for the test only: the Slurm logs of successful
jobs are kept (evidence that each job ran inside Slurm), job states are polled every 5 s rather
than the profile's 40 s, and the profile's 8 threads per training become 1 (the test node has 2 CPUs) (a one-node cluster with a handful of jobs; the profile's relation between
that interval and MinJobAge is checked separately).

Needs root (slurmd runs as root) and Slurm installed or apt-get; skipped otherwise. A few minutes:
every job is a Slurm job that starts its own Snakemake.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import yaml

from conftest import image_bytes, write_tar
from workflow import ROOT, tiny_config, write_config

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

CLUSTER = ROOT / "tests" / "slurm" / "cluster.sh"
SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+) \(log: ([^)]+)\)")
SLURM_COMMANDS = ("slurmctld", "slurmd", "sinfo", "squeue", "sbatch", "munged")
PROFILE = yaml.safe_load((ROOT / "slurm" / "config.yaml").read_text())
POLL_S = 5  # test only: seconds before the first job status check (the profile says 40)


def _cluster(action: str, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CLUSTER), action], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def slurm_env():
    """A running one-node Slurm for this module; the environment that reaches it."""
    if os.geteuid() != 0:
        pytest.skip("needs root: slurmd runs as root and Slurm is installed with apt-get")
    installed = all(shutil.which(c) or shutil.which(c, path="/usr/sbin") for c in SLURM_COMMANDS)
    if not installed and shutil.which("apt-get") is None:
        pytest.skip("Slurm is not installed and apt-get is not available to install it")
    up = _cluster("up", timeout=900)  # apt-get on a fresh machine, then seconds
    if up.returncode == 3:  # cluster.sh: cannot run here
        pytest.skip(up.stderr.strip())
    assert up.returncode == 0, f"cluster.sh up failed:\n{up.stdout}\n{up.stderr}"
    was_up = "already up" in up.stderr
    conf = re.search(r"SLURM_CONF=(\S+)", up.stdout).group(1)
    env = dict(os.environ, SLURM_CONF=conf, PYTHONUNBUFFERED="1")
    # Jobs run Snakemake with this Python; its scripts and tools come from the same environment.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    try:
        yield env
    finally:
        if not was_up:  # leave a cluster someone else started alone
            down = _cluster("down", timeout=120)
            assert down.returncode == 0, f"cluster.sh down failed:\n{down.stdout}\n{down.stderr}"


def run_profile(env: dict, workdir: Path, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    """`snakemake --profile slurm` from the repository root, the workflow running in ``workdir``."""
    cmd = [sys.executable, "-m", "snakemake", "--profile", "slurm", "--directory", str(workdir),
           "--slurm-keep-successful-logs", "--slurm-init-seconds-before-status-checks", str(POLL_S),
           *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    (workdir / "snakemake.out").write_text(proc.stdout + proc.stderr)
    return proc


def slurm_jobs(env: dict, ids: list[str]) -> dict[str, tuple[str, str]]:
    """Job id -> (state, name) of the jobs squeue still lists (finished ones for MinJobAge s)."""
    out = subprocess.run(["squeue", "-h", "--states=all", "-o", "%i|%T|%j", "-j", ",".join(ids)],
                         env=env, capture_output=True, text=True, timeout=60).stdout
    return {i: (state, name) for i, state, name in (line.split("|") for line in out.split())}


def generated_sizes() -> dict[str, tuple[int, int]]:
    """Shards and parts of each dataset the tiny config generates (demo, and demo_mix for Tables
    4-6); Table 1 has a column pair for each."""
    sizes = {}
    for name, dataset in tiny_config()["datasets"].items():
        n_shards = dataset["generator"]["n_shards"]
        sizes[name] = n_shards, math.ceil(n_shards / dataset.get("shards_per_part", 10))  # schema default
    return sizes


def tail(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"


def test_min_job_age_fits_the_profile(slurm_env):
    """Without accounting the plugin reads job states from squeue, which lists a finished job for
    MinJobAge seconds; below 3 x the first-check delay it silently goes back to sacct (which then
    fails). The test cluster's slurm.conf must satisfy the profile's own setting."""
    assert PROFILE["slurm-status-command"] == "squeue"
    config = subprocess.run(["scontrol", "show", "config"], env=slurm_env, capture_output=True,
                            text=True, timeout=60, check=True).stdout
    min_job_age = int(re.search(r"^MinJobAge\s*=\s*(\d+)", config, re.M).group(1))
    assert min_job_age >= 3 * PROFILE["slurm-init-seconds-before-status-checks"]
    assert min_job_age >= 3 * POLL_S


# docs/CLUSTER.md's CPU-only overrides: the test node has no GPU. It has 2 CPUs, so (test only) the
# profile's 8 threads for train and score become 1: a job asking for more CPUs than any node has
# would pend for ever (Reason=PartitionConfig).
CPU_ONLY = ("--set-resources", "score:gpu=0", "embed:gpu=0", "filter_rescore:gpu=0", "synth_eval:gpu=0",
            "train:gpu=0", "inpaint:gpu=0",
            "--set-threads", "train=1", "score=1", "embed=1", "filter_rescore=1", "synth_eval=1", "inpaint=1")
TARGETS = ("results/table1.csv", "results/table3.csv")


@pytest.fixture(scope="module")
def tiny_on_slurm(slurm_env, tmp_path_factory):
    work = tmp_path_factory.mktemp("slurm_tiny")
    write_config(work, tiny_config())
    proc = run_profile(slurm_env, work, *TARGETS, *CPU_ONLY, timeout=3600)
    return work, proc


def rule_of(log_path: str) -> str:
    """The rule (or group) of a Slurm job, from the plugin's log path (``rule_<name>/...``)."""
    parts = Path(log_path).parts
    return next(p[len("rule_"):] if p.startswith("rule_") else p for p in parts if p.startswith(("rule_", "group_")))


def test_profile_runs_the_dag_through_slurm(slurm_env, tiny_on_slurm):
    work, proc = tiny_on_slurm
    assert proc.returncode == 0, tail(proc)
    log = proc.stdout + proc.stderr
    submitted = SUBMITTED.findall(log)
    rules = [rule_of(path) for _, path in submitted]
    sizes = generated_sizes()
    # The per-part rules ingest -> spot -> match ran as grouped Slurm jobs (group `part`), several
    # parts per job (the profile's group-components: Snakemake chunks the group's connected components,
    # one per part of any dataset); one job per generated shard.
    n_parts = sum(n for _, n in sizes.values())
    n_groups = math.ceil(n_parts / PROFILE["group-components"]["part"])
    groups = [r for r in rules if r.startswith("group_part")]  # group_part_<its rules>
    assert len(groups) == n_groups, rules
    assert rules.count("demo_shard") == sum(n_shards for n_shards, _ in sizes.values()), rules
    # Table 3's chain went through Slurm too: one training, evaluation and sync evaluation per row.
    rows = len(pd.read_csv(work / "results" / "table3.csv"))
    for rule in ("train", "evaluate", "evaluate_sync"):
        assert rules.count(rule) == rows, rules
    assert {"table1", "curation_table", "curate_select", "materialise_reduce"} <= set(rules)
    # Snakemake ran nothing outside Slurm: every job it started is one of the submitted ones.
    assert "localrule" not in log, log[-6000:]  # Snakemake's mark of a job run on the submitting host
    ids = [i for i, _ in submitted]
    for job_id, path in submitted:
        slurm_log = Path(path)
        assert slurm_log.name == f"{job_id}.log" and slurm_log.is_file()  # written by Slurm (%j)
        assert "Finished jobid" in slurm_log.read_text(errors="replace")  # the job's own Snakemake
    run_id = re.search(r"SLURM run ID: (\S+)", log).group(1)
    listed = slurm_jobs(slurm_env, ids)
    assert ids[-1] in listed  # the last job finished seconds ago: still listed
    for job_id, (state, name) in listed.items():
        assert (state, name) == ("COMPLETED", run_id)


def test_subset_clips_were_trained_inside_slurm_jobs(tiny_on_slurm):
    """Each row's CLIP: a train job with a Slurm job id whose log ran OpenCLIP's trainer on that
    subset and wrote the checkpoint the table's evaluation read."""
    work, proc = tiny_on_slurm
    assert proc.returncode == 0, tail(proc)
    table = pd.read_csv(work / "results" / "table3.csv", index_col="subset")
    trains = {i: Path(path) for i, path in SUBMITTED.findall(proc.stdout + proc.stderr) if rule_of(path) == "train"}
    for subset in table.index:
        checkpoint = f"results/models/demo/{subset}/tiny-rn/seed0/checkpoint.pt"
        assert (work / checkpoint).stat().st_size > 0
        jobs = [i for i, path in trains.items() if checkpoint in path.read_text(errors="replace")]
        assert len(jobs) == 1, f"{subset}: Slurm train jobs {jobs}"
        train_log = (work / "logs" / "train" / "demo" / subset / "tiny-rn" / "seed0.log").read_text(errors="replace")
        assert "Start epoch 0" in train_log  # open_clip_train's own loop ran
        assert table.loc[subset, "samples"] > 0 and 0 <= table.loc[subset, "tiny-rn IN"] <= 1


def test_outputs_and_counts(tiny_on_slurm):
    work, proc = tiny_on_slurm
    assert proc.returncode == 0, tail(proc)
    table = pd.read_csv(work / "results" / "table1.csv", index_col=0)
    assert {"demo (spotted)", "demo (ground truth)"} <= set(table.columns)
    generator = tiny_config()["datasets"]["demo"]["generator"]
    n_shards, n_parts = generated_sizes()["demo"]
    for col in ("demo (spotted)", "demo (ground truth)"):
        t = table[col]
        assert t["Samples in"] == t["Samples processed"] + t["Samples skipped"]
        assert t["Samples in"] == n_shards * generator["samples_per_shard"]
    parts = [f"p{i:05d}.parquet" for i in range(n_parts)]
    for stage in ("samples", "spot", "match"):
        assert sorted(p.name for p in (work / "results" / "demo" / stage).glob("*.parquet")) == parts


def test_failing_job_fails_the_run(slurm_env, tmp_path):
    """With `ingest.on_bad_shard: fail`, a truncated shard stops its ingest job inside Slurm; Snakemake retries it once (the
    profile's `retries: 1`) and then exits non-zero without writing the table."""
    good = image_bytes(size=(96, 64))
    shard = Path(write_tar(tmp_path / "bad-000.tar", [
        ("a.jpg", good), ("a.txt", b"a red square"), ("b.jpg", good), ("b.txt", b"a blue circle"),
    ]))
    shard.write_bytes(shard.read_bytes()[:1500])  # cut inside a.jpg
    cfg = tiny_config({"bad": {"shards": str(shard), "shards_per_part": 1}})
    cfg["ingest"] = {"on_bad_shard": "fail"}  # the default, `record`, would keep the shard's whole samples
    write_config(tmp_path, cfg)

    proc = run_profile(slurm_env, tmp_path, "results/table1.csv")
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, tail(proc)
    submitted = SUBMITTED.findall(log)
    assert len(submitted) == 2, log[-6000:]  # the first attempt and its one retry
    assert all("group_part" in path for _, path in submitted)
    assert "Error in group part" in log and "Error in rule ingest" in log, log[-6000:]
    assert "Trying to restart job" in log
    for _, path in submitted:
        slurm_log = Path(path).read_text(errors="replace")  # Slurm's log of a failed job is kept
        assert "ShardError" in slurm_log and "bad-000.tar" in slurm_log
    ingest_log = (tmp_path / "logs" / "ingest" / "bad" / "p00000.log").read_text(errors="replace")
    assert "bad-000.tar" in ingest_log
    assert not (tmp_path / "results" / "table1.csv").exists()
    assert not (tmp_path / "results" / "bad" / "samples" / "p00000.parquet").exists()
    for state, _ in slurm_jobs(slurm_env, [i for i, _ in submitted]).values():
        assert state == "FAILED"
