"""The DuckDB engine settings of a job: memory limit, threads, and a spill folder that goes away."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from parrotscope.db import Engine, connect, engine_of


def test_engine_takes_the_jobs_memory_and_threads():
    engine = engine_of(SimpleNamespace(mem_mb=2000, tmpdir="/scratch/job"), 4)
    assert (engine.mem_mb, engine.threads, engine.tmpdir) == (2000, 4, "/scratch/job")
    con = connect(Engine(mem_mb=1000, threads=1))
    limit = con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    con.close()
    assert limit.endswith("MiB") or limit.endswith("MB")


def test_the_spill_folder_is_removed_when_the_connection_closes(tmp_path):
    """A sort past the memory limit spills under the job's tmpdir; closing leaves nothing there."""
    con = connect(Engine(mem_mb=150, threads=1, tmpdir=str(tmp_path)))
    # A table larger than the limit stays in the spill folder while the connection is open.
    con.execute("CREATE TEMP TABLE t AS SELECT i, random() AS r, i::VARCHAR AS s FROM range(8000000) t(i) ORDER BY r")
    assert con.execute("SELECT count(*) FROM t").fetchall()[0][0] == 8_000_000
    assert [p.name for p in tmp_path.iterdir()][0].startswith("duckdb-spill-")
    con.close()
    assert list(tmp_path.iterdir()) == []


def test_hash_partitions_grow_with_the_rows_past_the_engines_share(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from parrotscope.db import PARTITION_SHARE, KeyPartitions, hash_partitions, parquet_source

    paths = []
    for p in range(3):
        paths.append(str(tmp_path / f"p{p}.parquet"))
        pq.write_table(pa.table({"__key__": [f"{p}-{i}" for i in range(1000)], "v": list(range(1000))}), paths[-1])
    con = connect(Engine(mem_mb=1000, threads=1, tmpdir=str(tmp_path / "tmp")))
    budget = 600 * 2 ** 20 * PARTITION_SHARE  # 60% of the job's 1000 MB, then the share
    assert hash_partitions(con, paths, 64) == 1
    assert hash_partitions(con, paths, int(budget // 3000) + 1) == 2  # 3,000 rows just past the budget
    assert hash_partitions(con, paths, int(budget)) == 3000
    # Four partitions written once to the job's scratch: each key in exactly one, the columns kept.
    with KeyPartitions(con, '"__key__"', 4) as parts:
        parts.add("t", f"(SELECT * FROM {parquet_source(paths)})")
        got = [con.execute(f"SELECT count(*), sum(v) FROM {parts.source('t', i)}").fetchall()[0] for i in range(4)]
        keys = [k for i in range(4) for (k,) in con.execute(f'SELECT "__key__" FROM {parts.source("t", i)}').fetchall()]
        assert [c for c, *_ in con.execute(f"DESCRIBE SELECT * FROM {parts.source('t', 0)}").fetchall()] == ["__key__", "v"]
        assert list((tmp_path / "tmp").glob("key-partitions-*"))
    assert sum(c for c, _ in got) == 3000 and min(c for c, _ in got) > 500 and sum(v for _, v in got) == 3 * 499500
    assert sorted(keys) == sorted(f"{p}-{i}" for p in range(3) for i in range(1000))
    assert not list((tmp_path / "tmp").glob("key-partitions-*"))  # the scratch files went with the block
    with KeyPartitions(con, '"__key__"', 1) as parts:  # one partition: the source itself, nothing written
        parts.add("t", "(SELECT 1 AS x)")
        assert parts.source("t", 0) == "(SELECT 1 AS x)"


@pytest.mark.parametrize("values", ["uniform", "ties", "skewed", "constant"])
def test_order_statistics_in_linear_time_equal_order_by_limit(tmp_path, values):
    """rows_in_order and copy_first_in_order give what ORDER BY value, key LIMIT n OFFSET k gives,
    for ties, a value piled into one bucket, and a constant value (one bucket for all)."""
    from parrotscope.db import copy_first_in_order, rows_in_order

    rng = np.random.default_rng(3)
    n = 5000
    v = {"uniform": rng.random(n), "ties": rng.integers(0, 7, n).astype(float),
         "skewed": np.r_[rng.random(n - 50) * 1e-9, rng.random(50) * 1e6], "constant": np.full(n, 2.5)}[values]
    path = tmp_path / "t.parquet"
    pd.DataFrame({"__key__": [f"k{i:05d}" for i in rng.permutation(n)], "v": v}).to_parquet(path)
    con = connect()
    rel = f"read_parquet('{path}')"
    for offset, count in [(0, 1), (n // 2 - 1, 2), (n - 1, 1), (1234, 40)]:
        want = con.execute(f"SELECT v, __key__ FROM {rel} ORDER BY v, __key__ LIMIT {count} OFFSET {offset}").fetchall()
        assert rows_in_order(con, rel, "v", "__key__", offset, count, "v, __key__") == want
        assert rows_in_order(con, rel, "-v", "__key__", offset, count, "v, __key__") == con.execute(
            f"SELECT v, __key__ FROM {rel} ORDER BY v DESC, __key__ LIMIT {count} OFFSET {offset}").fetchall()
    for size in (1, 777, n - 1, n, n + 5):
        copy_first_in_order(con, rel, "v", "__key__", size, tmp_path / "first.parquet")
        got = set(pd.read_parquet(tmp_path / "first.parquet")["__key__"])
        want = {k for (k,) in con.execute(f"SELECT __key__ FROM {rel} ORDER BY v, __key__ LIMIT {size}").fetchall()}
        assert got == want and len(got) == min(size, n)
