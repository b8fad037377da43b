"""The fault suite (issue 9): kill it, corrupt it, fill its disk, misconfigure it, cut its
network, feed it hostile data, run it twice at once, and lose nothing.

Workflow-level faults run the real Snakefile on the tiny config (tests/configs/tiny.yaml) plus a
one-shard dataset of hostile captions and members; one uninterrupted reference run is shared by
the module, and every fault is compared with it. They are marked ``faults`` (their own CI step)
and ``slow``; the unit-level checks in this file are neither. Every fault appends a record
(fault, test, outcome, samples lost) that ``bench/fault_report.py`` writes into
docs/RELIABILITY.md.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from faults import (HOSTILE_CAPTIONS, agreement, compare_runs, copy_run, evil_pickle, evil_torch_file,
                    hostile_shard, incomplete_outputs, kill_tree, output_files, samples_lost, start,
                    temporaries, wait_for)
from workflow import ROOT, planned_jobs, snakemake, tiny_config, write_config

SCHEMA = yaml.safe_load((ROOT / "schemas" / "config.schema.yaml").read_text())
# What the suite runs: Tables 1-3 of the tiny config, and the hostile dataset to its index.
TARGETS = ("results/table1.csv", "results/table2.csv", "results/table3.csv", "results/hostile/index/p00000.parquet")
HOSTILE_SHARD = "inputs/hostile-000.tar"
MARKER = "PWNED"  # created (in the job's working directory) if anything unpickles a hostile member
RUN_TIMEOUT = 1800

workflow_fault = [pytest.mark.faults, pytest.mark.slow]


# ----------------------------------------------------------------------------------------------
# Recording what was tried


RECORDS: list[dict] = []


def record(fault: str, test: str, outcome: str, survived: bool, samples_lost: int | None = 0, **detail):
    """One line of docs/RELIABILITY.md: a fault, the test that tried it, and what happened."""
    RECORDS.append({"fault": fault, "test": test, "outcome": outcome, "survived": bool(survived),
                    "samples_lost": samples_lost, **detail})


@pytest.fixture(scope="module", autouse=True)
def write_records():
    """Write the records to $PARROTSCOPE_FAULT_RECORD (a JSON list) when it is set."""
    yield
    target = os.environ.get("PARROTSCOPE_FAULT_RECORD")
    if target and RECORDS:
        previous = json.loads(Path(target).read_text()) if Path(target).exists() else []
        Path(target).write_text(json.dumps(previous + RECORDS, indent=2, ensure_ascii=False) + "\n")


# ----------------------------------------------------------------------------------------------
# Runs


def suite_config() -> dict:
    cfg = tiny_config()
    cfg["datasets"]["hostile"] = {"shards": HOSTILE_SHARD, "shards_per_part": 1}
    return cfg


def prepare(workdir: Path, cfg: dict | None = None) -> Path:
    """A run directory: config and the hostile shard (relative paths, so runs compare equal)."""
    (workdir / "inputs").mkdir(parents=True, exist_ok=True)
    hostile_shard(workdir / HOSTILE_SHARD, Path(MARKER))
    write_config(workdir, cfg or suite_config())
    return workdir


def run_to_end(workdir: Path, *args: str, wrap: list[str] | None = None) -> subprocess.CompletedProcess:
    proc = start(workdir, "-c", "2", *args, wrap=wrap)
    rc = proc.wait(timeout=RUN_TIMEOUT)
    out = (workdir / "snakemake.out").read_text(errors="replace")
    return subprocess.CompletedProcess(proc.args, rc, out, "")


def network_cut() -> tuple[list[str] | None, str]:
    """A command prefix that runs its command in a network namespace of its own (no interface but
    a downed loopback), and how; None with the reason where neither form works here."""
    for prefix in (["unshare", "--net"], ["unshare", "--map-root-user", "--net"]):
        if shutil.which(prefix[0]) and subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
            return prefix, " ".join(prefix)
    return None, "unshare --net and unshare -rn both refused (no CAP_SYS_ADMIN, user namespaces off)"


def mount_namespace() -> tuple[list[str] | None, str]:
    """A prefix giving its command a private mount namespace (for a tmpfs), or None and why."""
    for prefix in (["unshare", "--mount", "--propagation", "private"],
                   ["unshare", "--map-root-user", "--mount", "--propagation", "private"]):
        probe = [*prefix, "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=64k t $d && umount $d"]
        if shutil.which(prefix[0]) and subprocess.run(probe, capture_output=True).returncode == 0:
            return prefix, " ".join(prefix)
    return None, "mounting a tmpfs is not permitted here (not root, user namespaces off)"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run of the suite's config: the yardstick of every workflow fault."""
    work = prepare(tmp_path_factory.mktemp("reference"))
    proc = run_to_end(work, *TARGETS)
    assert proc.returncode == 0, proc.stdout[-6000:]
    return work


@pytest.fixture(scope="module")
def second_run(reference, tmp_path_factory):
    """The same config from scratch again, with the network cut where this machine allows it."""
    wrap, how = network_cut()
    work = prepare(tmp_path_factory.mktemp("again"))
    t0 = time.monotonic()
    proc = run_to_end(work, *TARGETS, wrap=wrap)
    return {"work": work, "wrap": wrap, "how": how, "proc": proc, "seconds": time.monotonic() - t0}


# ----------------------------------------------------------------------------------------------
# 1. Kill -9 mid-job, rerun, compare with the uninterrupted run


def any_file(pattern: str) -> Callable[[Path], bool]:
    return lambda work: any(work.glob(pattern))


@dataclass(frozen=True)
class KillCase:
    """A stage's outputs, removed from a copy of the reference run and rebuilt under a SIGKILL
    that lands when ``writing`` holds (the stage's job is running, or its output half-written)."""

    stage: str
    outputs: tuple[str, ...]
    writing: Callable[[Path], bool]
    moment: str
    by_products: tuple[str, ...] = ()  # the reference run's, removed too so `writing` sees the new job's


PARTS = ("p00000", "p00001")
KILL_CASES = [
    KillCase("spot", tuple(f"results/demo/spot/{p}.parquet" for p in PARTS),
             any_file("logs/spot/demo/*.log"), "a spot job has opened its log (OCR running)"),
    KillCase("inpaint", tuple(f"results/demo/inpaint/telea/{m}/{p}.{ext}" for m in ("all", "co", "rand_all", "rand_co")
                              for p in PARTS for ext in ("tar", "counts.json")),
             any_file("results/demo/inpaint/telea/*/.p0000?.tar.*.tmp"),
             "an inpaint job's tar is half-written (its temporary exists)"),
    KillCase("score", tuple(f"results/demo/score/ref/{p}.parquet" for p in PARTS),
             any_file("logs/score/demo/ref/*.log"), "a score job has opened its log (CLIP scoring)"),
    KillCase("train", ("results/models/demo/pool/tiny-rn/seed0/checkpoint.pt", "results/models/demo/pool/tiny-rn/seed0/results.json"),
             any_file("results/models/demo/pool/tiny-rn/seed0/run/console.log"),
             "the train job has started OpenCLIP's trainer (its console log exists)",
             by_products=("results/models/demo/pool/tiny-rn/seed0/run",)),
]


@pytest.mark.faults
@pytest.mark.slow
@pytest.mark.parametrize("case", KILL_CASES, ids=[c.stage for c in KILL_CASES])
def test_kill_mid_job_then_rerun_equals_uninterrupted_run(case, reference, tmp_path):
    work = copy_run(reference, tmp_path / "run")
    for attempt in range(3):  # a job can finish between two polls; then start it again
        for rel in case.outputs:
            (work / rel).unlink(missing_ok=True)
        for rel in case.by_products:
            shutil.rmtree(work / rel, ignore_errors=True)
        proc = start(work, "-c", "2", *case.outputs)
        caught = wait_for(lambda: case.writing(work), proc, timeout=RUN_TIMEOUT)
        if caught and proc.poll() is None:
            break
        proc.wait(timeout=RUN_TIMEOUT)
    else:
        pytest.fail(f"never caught {case.stage} while writing ({case.moment})")
    killed = kill_tree(proc)
    assert killed >= 2, "only Snakemake was killed: the stage's job had not started"
    left_temporaries = temporaries(work)

    # Nothing half-done may look finished: each output that exists is the finished one, or
    # Snakemake itself marks it incomplete (and the default profile's rerun-incomplete redoes it).
    incomplete = incomplete_outputs(work, *case.outputs)
    present = [rel for rel in case.outputs if (work / rel).exists()]
    unfinished = [rel for rel in present if agreement(reference / rel, work / rel) is None]
    assert set(unfinished) <= incomplete, (unfinished, incomplete)

    # The documented recovery after a crash: the killed Snakemake's lock stays until --unlock.
    snakemake(work, "--unlock")
    snakemake(work, "-c", "2", *case.outputs)
    agreed, problems = compare_runs(reference, work)
    lost = samples_lost(reference, work)
    assert not problems, problems
    assert temporaries(work) == [], "a killed writer's temporary survived the rerun"
    # Nothing missing, incomplete or older than its inputs is left (code edits aside: mtime only).
    assert planned_jobs(work, *case.outputs, "--rerun-triggers", "mtime") == {}
    assert lost == 0
    rebuilt = {rel: agreed[rel] for rel in case.outputs}
    record(f"kill -9 mid-job: {case.stage}", f"test_kill_mid_job_then_rerun_equals_uninterrupted_run[{case.stage}]",
           f"killed {killed} processes when {case.moment} (attempt {attempt + 1}); {len(present)} of "
           f"{len(case.outputs)} outputs existed{', all finished' if present else ''}; {len(incomplete)} marked incomplete; "
           f"{len(left_temporaries)} temporaries left, removed by the rerun; after `--unlock` the rerun rebuilt "
           f"{len(case.outputs)} outputs, equal to the uninterrupted run "
           f"({_kinds(rebuilt)}), all {len(agreed)} outputs of the run directory equal",
           survived=True, samples_lost=lost)


def _kinds(agreed: dict[str, str]) -> str:
    counts = pd.Series(list(agreed.values()), dtype=str).value_counts()
    names = {"bytes": "byte-equal", "table": "equal tables", "json": "equal JSON but timings"}
    return ", ".join(f"{n} {names[k]}" for k, n in counts.items())


# ----------------------------------------------------------------------------------------------
# 2. Determinism, and 6. the whole run with the network cut


@pytest.mark.faults
@pytest.mark.slow
def test_same_seeds_from_scratch_give_identical_outputs(reference, second_run):
    assert second_run["proc"].returncode == 0, second_run["proc"].stdout[-6000:]
    agreed, problems = compare_runs(reference, second_run["work"])
    assert not problems, problems
    tables = [rel for rel in agreed if rel.endswith(".csv")]
    assert {f"results/table{i}.csv" for i in (1, 2, 3)} <= set(tables)
    assert all(agreed[t] == "bytes" for t in tables)
    record("two runs from scratch, same seeds", "test_same_seeds_from_scratch_give_identical_outputs",
           f"all {len(agreed)} outputs equal ({_kinds(agreed)}); tables byte-equal: {', '.join(sorted(tables))}",
           survived=True, samples_lost=samples_lost(reference, second_run["work"]))


@pytest.mark.faults
@pytest.mark.slow
def test_whole_run_with_network_cut(reference, second_run):
    if second_run["wrap"] is None:
        record("network cut for the whole run", "test_whole_run_with_network_cut",
               f"not tried: {second_run['how']}", survived=False, samples_lost=None, skipped=True)
        pytest.skip(second_run["how"])
    proc = second_run["proc"]
    assert proc.returncode == 0, proc.stdout[-6000:]
    # The tables built without a network are the uninterrupted run's, byte for byte.
    for table in ("table1.csv", "table2.csv", "table3.csv"):
        got = (second_run["work"] / "results" / table).read_bytes()
        assert got == (reference / "results" / table).read_bytes(), table
    record("network cut for the whole run", "test_whole_run_with_network_cut",
           f"`{second_run['how']}`: Tables 1-3 and the hostile dataset's index built, "
           f"{second_run['seconds']:.0f} s", survived=True)


@pytest.mark.faults
@pytest.mark.slow
def test_a_different_demo_seed_changes_data_and_subsets(reference, tmp_path):
    cfg = suite_config()
    cfg["datasets"]["demo"]["generator"]["seed"] = 1
    work = prepare(tmp_path / "seed1", cfg)
    subsets = [f"results/demo/subsets/{s}/keys.parquet" for s in ("random", "no_text", "text_only")]
    shards = [f"results/demo/shards/{i:05d}.tar" for i in range(2)]
    proc = run_to_end(work, *shards, *subsets)
    assert proc.returncode == 0, proc.stdout[-6000:]
    for rel in shards:
        assert (work / rel).read_bytes() != (reference / rel).read_bytes(), rel
    # Demo keys are positions in the pool, so a subset drawn without looking at the data (random)
    # keeps its key names while its samples are new images; the data-driven ones change keys.
    changed = [rel for rel in subsets
               if set(pd.read_parquet(work / rel)["__key__"]) != set(pd.read_parquet(reference / rel)["__key__"])]
    assert changed
    record("demo seed 0 -> 1", "test_a_different_demo_seed_changes_data_and_subsets",
           f"both demo shards differ; {len(changed)} of {len(subsets)} subsets select other keys "
           f"({', '.join(Path(rel).parent.name for rel in changed)})", survived=True, samples_lost=None)


SHUFFLE_ORDER = r"""
import sys
import webdataset as wds
if sys.argv[1] == "seeded":
    from parrotscope.openclip_main import seed_webdataset_shuffle
    seed_webdataset_shuffle()
print([list(wds.shuffle(bufsize=50, initial=20)(iter(range(200)))) for epoch in range(2)])
"""


@pytest.mark.slow
def test_openclip_sample_shuffle_is_reproducible_only_when_seeded():
    """Two processes shuffle alike with parrotscope.openclip_main's seeding (each epoch its own
    order), and differently without it: the cause of unreproducible trainings it removes."""
    def order(mode):
        return subprocess.run([sys.executable, "-c", SHUFFLE_ORDER, mode], capture_output=True, text=True,
                              check=True).stdout

    seeded = order("seeded")
    assert seeded == order("seeded")
    first, second = eval(seeded)
    assert first != second and sorted(first) == list(range(200))
    assert order("plain") != order("plain")


# ----------------------------------------------------------------------------------------------
# 3. Corrupted intermediates


def truncate_half(path: Path) -> str:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return "truncated to half its size"


def truncate_at_member(path: Path) -> str:
    """Cut a tar exactly before a member header: tarfile alone would read it as a shorter tar."""
    with tarfile.open(path) as tar:
        offsets = [m.offset for m in tar.getmembers()]
    cut = offsets[len(offsets) // 2]
    path.write_bytes(path.read_bytes()[:cut])
    return f"truncated at a member boundary (byte {cut}, before member {len(offsets) // 2} of {len(offsets)})"


def garble_header(path: Path) -> str:
    """Flip bytes in a member's name field: the header checksum no longer matches."""
    with tarfile.open(path) as tar:
        member = tar.getmembers()[len(tar.getmembers()) // 2]
    data = bytearray(path.read_bytes())
    for i in range(member.offset + 2, member.offset + 6):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    return f"garbled the header of member {member.name}"


def garble_png(path: Path) -> str:
    """Flip bytes inside an inpainted PNG's image data (the tar headers stay valid)."""
    with tarfile.open(path) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".png") and not m.name.endswith("mask.png"))
    data = bytearray(path.read_bytes())
    start = member.offset_data + member.size // 2
    for i in range(start, start + 8):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    return f"garbled image bytes of {member.name}"


def garble_parquet_page(path: Path) -> str:
    """Flip bytes inside the caption column's first page, which holds the values (the dictionary
    page where there is one), not in the footer."""
    meta = pq.ParquetFile(path).metadata
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    column = meta.row_group(0).column(names.index("caption") if "caption" in names else 0)
    start = (column.dictionary_page_offset or column.data_page_offset) + 40
    data = bytearray(path.read_bytes())
    for i in range(start, start + 16):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    return f"garbled 16 bytes of a data page of column {column.path_in_schema}"


def truncate_json(path: Path) -> str:
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    return "truncated to half"


@dataclass(frozen=True)
class CorruptCase:
    """An intermediate damaged after a finished run, and the output of the job that reads it."""

    name: str
    path: str
    damage: Callable[[Path], str]
    reader: str
    rebuild: bool = False  # also delete the damaged file and check the rerun rebuilds it equal


CORRUPT_CASES = [
    CorruptCase("spot-parquet-truncated", "results/demo/spot/p00000.parquet", truncate_half,
                "results/demo/match/p00000.parquet", rebuild=True),
    CorruptCase("samples-parquet-garbled", "results/demo/samples/p00001.parquet", garble_parquet_page,
                "results/demo/match/p00001.parquet"),
    CorruptCase("shard-truncated-at-member", "results/demo/shards/00001.tar", truncate_at_member,
                "results/demo/samples/p00001.parquet", rebuild=True),
    CorruptCase("inpaint-tar-header-garbled", "results/demo/inpaint/telea/all/p00000.tar", garble_header,
                "results/demo/score/ref/p00000.parquet"),
    CorruptCase("inpaint-png-garbled", "results/demo/inpaint/telea/co/p00001.tar", garble_png,
                "results/demo/score/ref/p00001.parquet"),
    CorruptCase("subset-shard-truncated", "results/demo/subsets/random/shards/00000.tar", truncate_at_member,
                "results/models/demo/random/tiny-rn/seed0/checkpoint.pt"),
    CorruptCase("counts-json-truncated", "results/demo/samples/p00000.counts.json", truncate_json,
                "results/demo/parts.json"),
]


def job_logs(work: Path) -> str:
    """Snakemake's console and every job log it names."""
    console = (work / "snakemake.out").read_text(errors="replace") if (work / "snakemake.out").exists() else ""
    text = console
    for path in sorted((work / "logs").rglob("*.log")) if (work / "logs").exists() else []:
        text += "\n" + path.read_text(errors="replace")
    return text


@pytest.mark.faults
@pytest.mark.slow
@pytest.mark.parametrize("case", CORRUPT_CASES, ids=[c.name for c in CORRUPT_CASES])
def test_corrupted_intermediate_is_refused_naming_the_file(case, reference, tmp_path):
    work = copy_run(reference, tmp_path / "run")
    how = case.damage(work / case.path)
    proc = run_to_end(work, case.reader)
    assert proc.returncode != 0, f"the run took the damaged {case.path} silently"
    text = job_logs(work)
    assert case.path in text.replace(str(work) + "/", ""), f"no message names {case.path}:\n{text[-4000:]}"
    assert not (work / case.reader).exists(), "the reader's output was left in place"
    outcome = f"{how}; the reader ({case.reader}) failed naming the file, its output removed"
    if case.rebuild:
        (work / case.path).unlink()
        again = run_to_end(work, case.reader)
        assert again.returncode == 0, again.stdout[-4000:]
        for rel in (case.path, case.reader):
            assert agreement(reference / rel, work / rel) is not None, rel
        outcome += "; deleting it and rerunning rebuilt both, equal to the reference"
    record(f"corrupted intermediate: {case.name}", f"test_corrupted_intermediate_is_refused_naming_the_file[{case.name}]",
           outcome, survived=True)


# ----------------------------------------------------------------------------------------------
# 4. Full disk


@pytest.mark.faults
@pytest.mark.slow
def test_full_disk_fails_clearly_and_a_rerun_with_space_completes(reference, tmp_path):
    prefix, how = mount_namespace()
    if prefix is None:
        record("full disk (tmpfs)", "test_full_disk_fails_clearly_and_a_rerun_with_space_completes",
               f"not tried: {how}", survived=False, samples_lost=None, skipped=True)
        pytest.skip(how)
    work = copy_run(reference, tmp_path / "run")
    stage_dir = work / "results" / "demo" / "inpaint"
    outputs = sorted(rel for rel in output_files(reference) if rel.startswith("results/demo/inpaint/"))
    shutil.rmtree(stage_dir)
    stage_dir.mkdir()
    seen = tmp_path / "on_tmpfs"  # what the tmpfs held when the run stopped (it goes with the namespace)
    seen.mkdir()
    # Room for about two of the eight inpainted tars: the third job runs out of space mid-write.
    size_kb = 300
    script = (f'mount -t tmpfs -o size={size_kb}k parrotscope-full "{stage_dir}" && '
              f'"$@"; rc=$?; cp -a "{stage_dir}/." "{seen}/"; df -k "{stage_dir}" | tail -1; exit $rc')
    proc = run_to_end(work, *outputs, wrap=[*prefix, "sh", "-c", script, "sh"])
    assert proc.returncode != 0, "the run did not notice the full disk"
    text = job_logs(work)
    assert "No space left on device" in text
    finished = [p for p in seen.rglob("*") if p.is_file()]
    for path in finished:  # whatever the full disk held is a finished output, equal to the reference
        rel = "results/demo/inpaint/" + path.relative_to(seen).as_posix()
        assert rel in outputs and agreement(reference / rel, path) is not None, rel
    left = [p for p in seen.rglob("*") if p.name.startswith(".")]
    assert not left, f"temporaries left on the full disk: {left}"
    again = run_to_end(work, *outputs)  # the tmpfs is gone: the same directory, now with space
    assert again.returncode == 0, again.stdout[-4000:]
    agreed, problems = compare_runs(reference, work, only=lambda rel: rel in outputs)
    assert not problems and len(agreed) == len(outputs), problems
    record("full disk (tmpfs of 300 KB under the inpaint outputs)",
           "test_full_disk_fails_clearly_and_a_rerun_with_space_completes",
           f"`{how}` + tmpfs: a job failed with 'No space left on device'; the full disk held "
           f"{len(finished)} finished outputs (equal to the reference) and no temporary; the rerun with "
           f"space built all {len(outputs)} outputs, equal to the reference ({_kinds(agreed)})",
           survived=True, samples_lost=0)


# ----------------------------------------------------------------------------------------------
# 5. Bad configs: every schema rule


def _resolve(node: dict) -> dict:
    if "$ref" in node:
        target = SCHEMA
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


WRONG_TYPED = {"string": 12345, "integer": "twelve", "number": "twelve", "boolean": "yes",
               "array": 7, "object": 7, "null": "x"}


def _types(node: dict) -> set[str]:
    if "type" in node:
        return set(node["type"]) if isinstance(node["type"], list) else {node["type"]}
    alternatives = node.get("oneOf") or node.get("anyOf") or []
    return set().union(*(_types(_resolve(a)) for a in alternatives)) if alternatives else set()


def _wrong_value(types: set[str]):
    """A value of a JSON type the node does not accept (integers are numbers; 1.5 is not an integer)."""
    for value in ("twelve", 1.5, 12345, True, [], {"k": 1}, None):
        kind = {str: "string", float: "number", int: "integer", bool: "boolean", list: "array",
                dict: "object", type(None): "null"}[type(value)]
        accepted = kind in types or (kind == "integer" and "number" in types)
        if not accepted:
            return value
    return None


def schema_cases(node: dict, path: tuple = ()):
    """``(id, path, bad value, words the message must hold)`` for every rule of the schema: each
    key's type, its range or choices, and an unknown key beside every closed set of keys."""
    node = _resolve(node)
    props = node.get("properties")
    if props is not None:
        for key, sub in props.items():
            yield from schema_cases(sub, (*path, key))
        if node.get("additionalProperties") is False:
            typo = (props and next(iter(props)) + "_typo") or "unknown_key"
            yield "unknown:" + ".".join((*path, typo)), (*path, typo), 1, ["unknown key"]
        return
    if isinstance(node.get("additionalProperties"), dict):
        yield from schema_cases(node["additionalProperties"], (*path, "*"))
        return
    types = _types(node)
    if types and not {"string", "integer", "number", "boolean", "array", "object", "null"} <= types:
        wrong = _wrong_value(types)
        yield "type:" + ".".join(path), path, wrong, sorted(types)[:1]
    for bound, shift in (("minimum", -1), ("exclusiveMinimum", 0), ("maximum", 1), ("exclusiveMaximum", 0)):
        if bound in node:
            value = node[bound] + shift if shift else node[bound]
            if "integer" in types and not isinstance(value, int):
                value = int(value) + (1 if shift > 0 else -1)
            yield f"{bound}:" + ".".join(path), path, value, [f"{bound} {node[bound]!r}"]
    if "enum" in node:
        yield "enum:" + ".".join(path), path, "not-an-option", [repr(node["enum"][0])]
    if "minLength" in node:
        yield "minLength:" + ".".join(path), path, "", ["minLength"]


@functools.cache
def _base_config() -> dict:
    """The suite's config with every default filled in, so every map (``datasets.*``) has a member."""
    from snakemake.utils import validate

    from parrotscope.config import check_config

    cfg = suite_config()
    cfg["datasets"]["hostile"]["shards"] = str(ROOT / "tests" / "configs" / "tiny.yaml")  # exists; never read
    validate(cfg, str(ROOT / "schemas" / "config.schema.yaml"), set_default=True)
    check_config(cfg)
    return cfg


def _set(cfg: dict, path: tuple, value) -> bool:
    """Set ``path`` in ``cfg``: ``*`` is the first member of a map (a member ``x`` is added to an
    empty one), and an unset (null) section becomes a mapping. False if the path crosses a value
    that is neither."""
    node = cfg
    for part in path[:-1]:
        if not isinstance(node, dict):
            return False
        if part == "*":
            part = next(iter(node), "x")
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
    if not isinstance(node, dict):
        return False
    node[next(iter(node), "x") if path[-1] == "*" else path[-1]] = value
    return True


SCHEMA_CASES = list(schema_cases(SCHEMA))


def test_schema_cases_cover_every_rule_kind():
    kinds = {case[0].split(":")[0] for case in SCHEMA_CASES}
    assert {"type", "minimum", "maximum", "enum", "unknown"} <= kinds
    assert any(case[1] == ("datasets", "*", "shards_per_part_typo") or case[1][-1].endswith("_typo")
               for case in SCHEMA_CASES)


# case id -> "ok" or why it failed: the record below follows the sweep's real outcome.
SCHEMA_OUTCOMES: dict[str, str] = {}


@pytest.fixture
def schema_outcome(request):
    """Record the parametrized schema case's outcome, whichever assertion ends it."""
    case_id = request.node.callspec.params["case_id"]
    SCHEMA_OUTCOMES[case_id] = "did not finish"
    yield
    rep = getattr(request.node, "rep_call", None)
    SCHEMA_OUTCOMES[case_id] = "ok" if rep is not None and rep.passed else "failed"


@pytest.mark.parametrize("case_id, path, value, words", SCHEMA_CASES, ids=[c[0] for c in SCHEMA_CASES])
def test_every_schema_rule_rejects_with_key_and_expected_value(case_id, path, value, words, schema_outcome):
    from parrotscope.config import ConfigError, check_schema, config_key

    cfg = copy.deepcopy(_base_config())
    assert _set(cfg, path, value), f"{'.'.join(path)}: cannot be set on the suite's config"
    with pytest.raises(ConfigError) as err:
        check_schema(cfg, SCHEMA)
    message = str(err.value)
    # The key as the user writes it, with the map member the path went through.
    shown = config_key([p for p in _concrete(cfg, path)])
    assert shown in message, (shown, message)
    for word in words:
        assert word in message, (word, message)


def _concrete(cfg: dict, path: tuple) -> list:
    node, out = cfg, []
    for part in path:
        if part == "*":
            part = next(iter(node), "x")
        out.append(part)
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return out


def test_unknown_key_suggests_the_known_one():
    from parrotscope.config import ConfigError, check_schema

    cfg = copy.deepcopy(_base_config())
    cfg["datasets"]["demo"]["shards_per_prt"] = 3
    with pytest.raises(ConfigError, match=r"datasets\.demo\.shards_per_prt: unknown key; did you mean `shards_per_part`"):
        check_schema(cfg, SCHEMA)


BAD_CONFIGS = {
    "wrong type": (lambda c: c["datasets"]["demo"].__setitem__("shards_per_part", "two"),
                   ["datasets.demo.shards_per_part", "integer"]),
    "out of range": (lambda c: c.setdefault("match", {}).__setitem__("fuzzy_threshold", 1.5),
                     ["match.fuzzy_threshold", "maximum 1"]),
    "unknown key": (lambda c: c["datasets"]["demo"].__setitem__("shards_per_prt", 3),
                    ["datasets.demo.shards_per_prt", "shards_per_part"]),
    # In the default `record` mode a missing shard is recorded by ingest; `fail` refuses the plan.
    "missing shard path": (lambda c: (c["datasets"]["hostile"].__setitem__("shards", "inputs/nowhere-{000..002}.tar"),
                                      c.setdefault("ingest", {}).__setitem__("on_bad_shard", "fail")),
                           ["datasets.hostile.shards", "not found", "nowhere-000.tar"]),
}


@pytest.mark.faults
@pytest.mark.slow
@pytest.mark.parametrize("name", list(BAD_CONFIGS))
def test_bad_config_fails_before_any_job(name, tmp_path):
    mutate, words = BAD_CONFIGS[name]
    cfg = suite_config()
    mutate(cfg)
    work = prepare(tmp_path, cfg)
    proc = snakemake(work, "-c", "1", *TARGETS, check=False, timeout=600)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    for word in words:
        assert word in text, (word, text[-3000:])
    assert not (work / "results").exists() and not (work / "logs").exists(), "a job ran"
    line = next(l for l in text.splitlines() if words[0] in l)
    record(f"bad config: {name}", f"test_bad_config_fails_before_any_job[{name}]",
           f"refused while parsing, no job started: `{line.strip()[:160]}`", survived=True, samples_lost=0)


def test_schema_rules_are_recorded():
    """One record for the in-process sweep over every schema rule (counted, not listed), from the
    outcomes the sweep's cases recorded: a failed or missing case makes it a failure."""
    if not SCHEMA_OUTCOMES:
        pytest.skip("the schema sweep was deselected in this run: nothing to record")
    kinds = pd.Series([c[0].split(":")[0] for c in SCHEMA_CASES]).value_counts().to_dict()
    failed = sorted(c[0] for c in SCHEMA_CASES if SCHEMA_OUTCOMES.get(c[0]) != "ok")
    refused = len(SCHEMA_CASES) - len(failed)
    record("bad config: every schema rule", "test_every_schema_rule_rejects_with_key_and_expected_value",
           f"{refused} of {len(SCHEMA_CASES)} cases generated from schemas/config.schema.yaml ("
           + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) +
           "), refused with the key and the expected value"
           + (f"; not refused so: {failed[:5]}" if failed else ""), survived=not failed, samples_lost=0)
    assert not failed, failed


# ----------------------------------------------------------------------------------------------
# 6. No network: hub code paths fail fast and name the key


HUB_PROBE = r"""
import json, sys, time
from parrotscope.inpaint import make_inpainter
from parrotscope.score import load_scorer
import diffusers, open_clip  # imported before timing: the time measured is the hub attempt
cases = {
    "score.scorers.<name>.pretrained": lambda: load_scorer({"name": "b32", "arch": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"}, "cpu"),
    "inpaint.sd.model": lambda: make_inpainter("sd", {"model": "stable-diffusion-v1-5/stable-diffusion-inpainting", "device": "cpu"}),
    "inpaint.lama.checkpoint": lambda: make_inpainter("lama", {"device": "cpu"}),
}
out = {}
for key, call in cases.items():
    t = time.monotonic()
    try:
        call()
        out[key] = {"error": None}
    except Exception as exc:
        out[key] = {"error": f"{type(exc).__name__}: {exc}"}
    out[key]["seconds"] = time.monotonic() - t
print("RESULT" + json.dumps(out))
"""


@pytest.mark.faults
@pytest.mark.slow
@pytest.mark.parametrize("offline_env", [False, True], ids=["network-cut", "HF_HUB_OFFLINE"])
def test_hub_code_paths_fail_fast_naming_the_key(offline_env):
    wrap, how = network_cut()
    if wrap is None and not offline_env:
        pytest.skip(how)
    env = dict(os.environ)
    if offline_env:
        env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run([*(wrap if not offline_env else []), sys.executable, "-c", HUB_PROBE],
                          capture_output=True, text=True, timeout=900, env=env)
    assert "RESULT" in proc.stdout, proc.stderr[-3000:]
    results = json.loads(proc.stdout.split("RESULT", 1)[1])
    # What each message must say: the config key to point at local weights.
    named = {"score.scorers.<name>.pretrained": "`pretrained` key", "inpaint.sd.model": "inpaint.sd.model",
             "inpaint.lama.checkpoint": "inpaint.lama.checkpoint"}
    assert set(results) == set(named)
    for key, result in results.items():
        assert result["error"], f"{key}: loaded without a hub?"
        assert named[key] in result["error"], (key, result["error"])
        assert result["seconds"] < 30, (key, result["seconds"])
    mode = "HF_HUB_OFFLINE=1" if offline_env else f"network cut (`{how}`)"
    record(f"model hub unreachable ({mode})", f"test_hub_code_paths_fail_fast_naming_the_key[{'HF_HUB_OFFLINE' if offline_env else 'network-cut'}]",
           "; ".join(f"{k}: failed in {r['seconds']:.1f} s naming it" for k, r in results.items()),
           survived=True, samples_lost=0)


# ----------------------------------------------------------------------------------------------
# 7. Untrusted inputs


@pytest.fixture(scope="module")
def torch_one_thread(one_torch_thread):
    yield


def test_malicious_checkpoint_is_refused_without_running_it(tmp_path, torch_one_thread):
    from parrotscope.score import load_scorer
    from parrotscope.train import read_state_dict

    marker = tmp_path / "ran"
    ckpt = tmp_path / "evil.pt"
    ckpt.write_bytes(evil_torch_file(marker))
    with pytest.raises(Exception, match="(?i)weights_only|unpickl|global"):
        read_state_dict(ckpt)
    with pytest.raises(Exception, match="(?i)weights_only|unpickl|global"):
        load_scorer({"name": "x", "arch": "tiny-rn", "checkpoint": str(ckpt)}, "cpu")
    with pytest.raises(Exception, match="(?i)weights_only|unpickl|global"):  # a local `pretrained` file
        load_scorer({"name": "x", "arch": "tiny-rn", "pretrained": str(ckpt)}, "cpu")
    assert not marker.exists()
    record("malicious pickle checkpoint (scorer checkpoint / pretrained file)",
           "test_malicious_checkpoint_is_refused_without_running_it",
           "refused by torch.load(weights_only=True) in read_state_dict and open_clip.load_checkpoint; "
           "the payload never ran", survived=True, samples_lost=0)


def test_malicious_lama_file_is_not_run(tmp_path, torch_one_thread):
    from parrotscope.inpaint import make_inpainter

    marker = tmp_path / "ran"
    ckpt = tmp_path / "big-lama.pt"
    ckpt.write_bytes(evil_torch_file(marker))
    with pytest.raises(ValueError, match="not a TorchScript archive") as err:
        make_inpainter("lama", {"checkpoint": str(ckpt), "device": "cpu"})
    assert "inpaint.lama.checkpoint" in str(err.value) and str(ckpt) in str(err.value)
    assert not marker.exists()
    record("pickle file given as the LaMa checkpoint", "test_malicious_lama_file_is_not_run",
           "torch.jit.load refused it (not a TorchScript archive); the payload never ran. A real "
           "TorchScript file is code by design: point inpaint.lama.checkpoint only at files you trust",
           survived=True, samples_lost=0)


def test_workflow_readers_ignore_pickled_shard_members(tmp_path):
    from parrotscope.ingest import ingest_part
    from parrotscope.shards import iter_shard

    marker = tmp_path / "ran"
    shard = hostile_shard(tmp_path / "h.tar", marker)
    samples = list(iter_shard(str(shard)))
    assert {"pyd", "pickle", "pth"} <= set(next(s for s in samples if s.key == "rtl").files)
    table, counts = ingest_part([str(shard)], 10**8)
    assert not marker.exists()
    status = dict(zip(table["__key__"], table["status"]))
    assert status["onlypickle"] == "missing_image" and status["rtl"] == "ok"


def test_training_refuses_shards_with_members_the_trainer_would_unpickle(tmp_path):
    """OpenCLIP's loader decodes with webdataset's defaults, which unpickle .pyd/.pickle members."""
    import webdataset.autodecode as autodecode

    from parrotscope.train import TrainError, check_training_shards

    marker = tmp_path / "ran"
    shard = hostile_shard(tmp_path / "h.tar", marker)
    parts = tmp_path / "parts.json"
    parts.write_text(json.dumps({"ok": 4, "parts": {}}))
    with pytest.raises(TrainError, match=r"rtl\.pyd"):
        check_training_shards([str(shard)], str(parts))
    assert not marker.exists()
    # Why the guard exists: webdataset's default decoder would have run the payload.
    autodecode.Decoder([]).decode({"__key__": "rtl", "pyd": evil_pickle(marker)})
    assert marker.exists()
    record("shard members that unpickle (.pyd/.pickle/.pth)",
           "test_workflow_readers_ignore_pickled_shard_members, test_training_refuses_shards_with_members_the_trainer_would_unpickle",
           "parrotscope's readers ignore them (a sample of only such members is `missing_image`); "
           "training refuses a shard holding them before OpenCLIP's loader, whose webdataset "
           "decoder would unpickle them (shown: it runs the payload)", survived=True, samples_lost=0)


@pytest.mark.faults
@pytest.mark.slow
def test_hostile_captions_pass_through_every_stage(reference):
    samples = pd.read_parquet(reference / "results/hostile/samples/p00000.parquet")
    index = pd.read_parquet(reference / "results/hostile/index/p00000.parquet")
    spot = pd.read_parquet(reference / "results/hostile/spot/p00000.parquet")
    match = pd.read_parquet(reference / "results/hostile/match/p00000.parquet")
    import unicodedata

    for key, caption in HOSTILE_CAPTIONS.items():
        expected = unicodedata.normalize("NFC", caption).strip()
        got = samples.set_index("__key__").loc[key]
        assert got["status"] == "ok" and got["caption"] == expected, key
        assert index.set_index("__key__").loc[key, "caption"] == expected, key
    assert set(spot["__key__"]) == set(match["__key__"]) == set(samples["__key__"])
    found = match.set_index("__key__")["has_text"].astype(bool)
    assert found[list(HOSTILE_CAPTIONS)].sum() >= 3  # the spotter read the words in most images
    table1 = pd.read_csv(reference / "results/table1.csv", index_col=0)
    assert table1.loc["Samples in", "hostile (spotted)"] == len(samples)
    assert not (reference / MARKER).exists() and not (ROOT / MARKER).exists()
    record("hostile captions (100k characters, NUL/ESC/CR-LF/DEL, RTL with bidi overrides, emoji)",
           "test_hostile_captions_pass_through_every_stage",
           f"{len(HOSTILE_CAPTIONS)} captions kept exactly (NFC, trimmed) through ingest, spot, match, "
           f"inpaint, score and the index; Table 1 counts them; "
           f"{int(found[list(HOSTILE_CAPTIONS)].sum())} of {len(HOSTILE_CAPTIONS)} images' words spotted",
           survived=True, samples_lost=0)


def test_hostile_text_round_trips_through_csv_and_parquet(tmp_path):
    from parrotscope.io import read_parquet, write_csv, write_parquet

    df = pd.DataFrame({"__key__": list(HOSTILE_CAPTIONS), "caption": list(HOSTILE_CAPTIONS.values())})
    write_parquet(df, tmp_path / "t.parquet")
    assert read_parquet(tmp_path / "t.parquet").equals(df)
    write_csv(df, tmp_path / "t.csv", index=False)
    back = pd.read_csv(tmp_path / "t.csv", keep_default_na=False)
    assert back.equals(df)


# ----------------------------------------------------------------------------------------------
# 8. Concurrent runs, and recovery from a crash with --unlock


@pytest.mark.faults
@pytest.mark.slow
def test_second_run_on_the_same_directory_is_refused_and_unlock_recovers(reference, tmp_path):
    work = copy_run(reference, tmp_path / "run")
    outputs = [f"results/demo/spot/{p}.parquet" for p in PARTS]
    for rel in outputs:
        (work / rel).unlink()
    first = start(work, "-c", "1", *outputs)
    assert wait_for(lambda: any((work / "logs" / "spot").rglob("*.log")), first, timeout=RUN_TIMEOUT)
    # Frozen while it holds the lock, so the second run meets it however slow its start-up is.
    os.killpg(first.pid, signal.SIGSTOP)
    second = snakemake(work, "-c", "1", *outputs, check=False)
    refused = second.stdout + second.stderr
    assert second.returncode != 0 and "cannot be locked" in refused, refused[-3000:]
    kill_tree(first)  # a crash: the lock stays behind
    stale = snakemake(work, "-c", "1", *outputs, check=False)
    assert stale.returncode != 0 and "cannot be locked" in stale.stdout + stale.stderr
    snakemake(work, "--unlock")
    snakemake(work, "-c", "2", *outputs)
    agreed, problems = compare_runs(reference, work)
    assert not problems, problems
    record("a second snakemake on the same directory", "test_second_run_on_the_same_directory_is_refused_and_unlock_recovers",
           "refused with Snakemake's lock message ('Directory cannot be locked'); after the first was "
           "killed the stale lock refused a new run until `snakemake --unlock`; the rerun then matched "
           "the reference", survived=True, samples_lost=samples_lost(reference, work))


# ----------------------------------------------------------------------------------------------
# Library level: atomic writes under faults


def test_a_failed_write_leaves_no_file(tmp_path):
    from parrotscope.io import atomic_path

    target = tmp_path / "out.parquet"
    with pytest.raises(OSError):
        with atomic_path(target, suffix=".parquet") as tmp:
            tmp.write_bytes(b"half")
            raise OSError(28, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_a_killed_writers_temporary_is_removed_by_the_next_attempt(tmp_path):
    from parrotscope.io import atomic_dir, atomic_path

    target = tmp_path / "p00000.tar"
    stale = tmp_path / ".p00000.tar.ab12cd_9.tar.tmp"  # as mkstemp names it; SIGKILL ran no cleanup
    stale.write_bytes(b"half a tar")
    other = tmp_path / ".p00000.tar.counts.json.ab12cd_9.tmp"  # not this output's: kept
    other.write_text("{")
    stale_dir = tmp_path / ".eval.zz99yy88.tmp"
    stale_dir.mkdir()
    with atomic_path(target, suffix=".tar") as tmp:
        tmp.write_bytes(b"whole")
    with atomic_dir(tmp_path / "eval") as d:
        (d / "x").write_text("x")
    assert not stale.exists() and not stale_dir.exists() and other.exists()
    assert target.read_bytes() == b"whole" and (tmp_path / "eval" / "x").exists()


def test_outputs_are_readable_like_any_new_file(tmp_path):
    """mkstemp makes private files; a published output gets the permissions the umask allows."""
    from parrotscope.io import write_json

    umask = os.umask(0o022)
    try:
        write_json({"a": 1}, tmp_path / "x.json")
    finally:
        os.umask(umask)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644


def test_truncated_and_garbled_files_are_named_by_the_library(tmp_path, make_tar):
    from parrotscope.io import read_json, read_parquet, write_parquet
    from parrotscope.shards import ShardError, iter_shard, scan_shard
    from conftest import image_bytes

    df = pd.DataFrame({"__key__": [f"k{i}" for i in range(200)], "caption": [f"caption {i}" * 5 for i in range(200)]})
    write_parquet(df, tmp_path / "t.parquet")
    garble_parquet_page(tmp_path / "t.parquet")
    with pytest.raises(ValueError, match=str(tmp_path / "t.parquet")):
        read_parquet(tmp_path / "t.parquet")
    (tmp_path / "c.json").write_text('{"ok": 3, "sk')
    with pytest.raises(ValueError, match=str(tmp_path / "c.json")):
        read_json(tmp_path / "c.json")
    members = [(f"{i:03d}.{ext}", image_bytes() if ext == "jpg" else b"cap") for i in range(6) for ext in ("jpg", "txt")]
    for damage in (truncate_at_member, garble_header):
        path = Path(make_tar(f"{damage.__name__}.tar", members))
        damage(path)
        with pytest.raises(ShardError, match=str(path)):
            list(iter_shard(str(path), on_bad_shard="fail"))
        with pytest.raises(ShardError, match=str(path)):
            scan_shard(str(path))
        # record mode (real downloads): the whole samples before the damage, the open one marked cut
        samples = list(iter_shard(str(path)))
        assert samples and samples[-1].cut and not any(s.cut for s in samples[:-1])
