"""Planning a large dataset: shard tracking (datasets.*.track_shards) and the LAION-2B-scale
benchmark (bench/bench_plan.py), on small sizes."""

import re
import sys

import pytest

from workflow import ROOT, snakemake, tiny_config, write_config

sys.path.insert(0, str(ROOT / "bench"))
import bench_plan  # noqa: E402


def ingest_inputs(workdir) -> list[str]:
    """The input files of the planned ingest job of dataset `mine`'s first part."""
    out = snakemake(workdir, "-n", "results/mine/samples/p00000.parquet").stdout
    block = out[out.index("rule ingest:"):].split("output:")[0]
    found = re.search(r"input: (.*)", block)
    return found.group(1).split(", ") if found else []


@pytest.mark.slow
@pytest.mark.parametrize("track", [True, False])
def test_track_shards_decides_whether_shards_are_ingest_inputs(tmp_path, track):
    shards = [tmp_path / f"{i:02d}.tar" for i in range(3)]
    for s in shards:
        s.touch()
    cfg = tiny_config()
    cfg["datasets"]["mine"] = {"shards": str(tmp_path / "{00..02}.tar"), "shards_per_part": 2,
                               "track_shards": track}
    write_config(tmp_path, cfg)
    assert ingest_inputs(tmp_path) == ([str(shards[0]), str(shards[1])] if track else [])


@pytest.mark.slow
def test_in_fail_mode_untracked_shards_must_still_exist(tmp_path):
    cfg = tiny_config()
    cfg["datasets"]["mine"] = {"shards": str(tmp_path / "{00..01}.tar"), "track_shards": False}
    cfg["ingest"] = {"on_bad_shard": "fail"}
    (tmp_path / "00.tar").touch()
    write_config(tmp_path, cfg)
    proc = snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0 and "1 shard(s) not found" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_in_record_mode_a_missing_tracked_shard_is_no_input(tmp_path):
    """Ingest records it as missing; Snakemake must neither refuse the plan nor wait for it."""
    cfg = tiny_config()
    cfg["datasets"]["mine"] = {"shards": str(tmp_path / "{00..01}.tar"), "shards_per_part": 2}
    (tmp_path / "00.tar").touch()
    write_config(tmp_path, cfg)
    assert ingest_inputs(tmp_path) == [str(tmp_path / "00.tar")]


@pytest.mark.slow
def test_bench_plans_a_laion_like_config(tmp_path):
    """The benchmark's configuration stays valid as rules are added, and its counts add up."""
    paths = bench_plan.make_placeholders(tmp_path, 40)
    case = bench_plan.Case(n_shards=40, shards_per_part=10, track_shards=False, target="results/table3.csv")
    result = bench_plan.run_case(case, tmp_path, paths, repeats=1)
    assert result.n_parts == 4 and result.n_jobs > 3 * result.n_parts  # ingest, spot, match per part
    assert result.cpu_s > 0 and result.peak_mb > 50
    table = bench_plan.markdown([result], 0.0, 0.0)
    assert table.startswith(bench_plan.SECTION) and "| 40 | 10 | 4 | no | `results/table3.csv` |" in table
