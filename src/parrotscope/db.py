"""Dataset-wide queries: the one module that owns DuckDB access.

Per-part steps (spot, match, score, index, ...) hold one part in memory. Steps that look at the
whole dataset (Tables 1-2, subset selection, filter thresholds, figure aggregates, n-gram
vocabularies) never hold it: they query the per-part parquet files through an embedded DuckDB that
reads only the columns a query names, streams row groups, and spills sorts, joins and
aggregations to disk past its memory limit. Their memory therefore stays at the engine's limit
whatever the dataset's size (bench/bench_scale.py measures it up to 1e8 rows).

Settings come from the rule: ``memory_limit`` is a share of the job's ``mem_mb`` (the rest is
left to Python and the small results it receives), ``threads`` the job's threads, and the spill
directory lies under the job's ``tmpdir`` (node-local scratch on a cluster).

Only small results (a table's rows, a subset's keys, a histogram) come back as DataFrames;
anything dataset-sized is written by DuckDB itself (:func:`copy_to_parquet`).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from .io import atomic_path

log = logging.getLogger(__name__)

# DuckDB's limit covers its buffer manager only; Python, pyarrow and the engine's own overhead
# need the rest of the job's memory.
ENGINE_SHARE = 0.6
MIN_ENGINE_MB = 256


class QueryError(ValueError):
    """A dataset-wide query cannot run on these inputs; the message names the files or columns."""


@dataclass(frozen=True)
class Engine:
    """How much of the job DuckDB may use: memory (MB of the job), threads, and spill location."""

    mem_mb: int = 2000
    threads: int = 1
    tmpdir: str | None = None

    @property
    def memory_limit_mb(self) -> int:
        return max(MIN_ENGINE_MB, int(self.mem_mb * ENGINE_SHARE))


def engine_of(resources, threads: int) -> Engine:
    """The engine settings of a Snakemake job (``snakemake.resources``, ``snakemake.threads``)."""
    mem = getattr(resources, "mem_mb", None) or Engine.mem_mb
    tmp = getattr(resources, "tmpdir", None) or None
    return Engine(mem_mb=int(mem), threads=max(1, int(threads or 1)), tmpdir=tmp)


_CONNECTIONS = itertools.count()


def connect(engine: Engine = Engine()):
    """A fresh in-memory DuckDB with the job's memory limit, threads and spill directory.

    Insertion order is not preserved (queries that need an order say ORDER BY), which lets the
    engine stream and spill without keeping row order.
    """
    import duckdb

    # DuckDB creates the spill folder only when it spills and removes it on close, so a
    # connection that never spills leaves nothing behind; the name is one per connection.
    scratch = Path(engine.tmpdir or tempfile.gettempdir())
    scratch.mkdir(parents=True, exist_ok=True)
    spill = scratch / f"duckdb-spill-{os.getpid()}-{next(_CONNECTIONS)}"
    con = duckdb.connect(":memory:", config={
        "memory_limit": f"{engine.memory_limit_mb}MB",
        "threads": engine.threads,
        "temp_directory": str(spill),
        "preserve_insertion_order": False,
    })
    # What a query may plan for (hash_partitions): the limit as bytes, and where scratch tables go.
    con.execute(f"SET VARIABLE engine_memory_bytes = {engine.memory_limit_mb * 2 ** 20}")
    con.execute(f"SET VARIABLE engine_scratch = {sql_string(str(scratch))}")
    log.info("duckdb %s: memory_limit %d MB, %d thread(s), spill to %s", duckdb.__version__,
             engine.memory_limit_mb, engine.threads, spill)
    return con


def sql_string(value: str) -> str:
    """A SQL string literal (single quotes doubled), for paths and names inside queries."""
    return "'" + str(value).replace("'", "''") + "'"


def sql_name(column: str) -> str:
    """A quoted SQL identifier: index columns hold dots (``ref.s_raw``) and leading underscores."""
    return '"' + column.replace('"', '""') + '"'


def parquet_source(paths: Sequence[str | os.PathLike]) -> str:
    """A table expression over per-part parquet files. ``union_by_name`` lets parts whose
    optional columns differ (a part without ground truth) line up; missing ones read as NULL."""
    if not paths:
        raise QueryError("no parquet files to read: the dataset has no parts")
    listed = ", ".join(sql_string(str(p)) for p in paths)
    return f"read_parquet([{listed}], union_by_name = true)"


def total_rows(con, paths: Sequence[str | os.PathLike]) -> int:
    """Rows in the files, from their parquet footers (nothing else is read)."""
    if not paths:
        return 0
    listed = ", ".join(sql_string(str(p)) for p in paths)
    return int(one_row(con, f"SELECT coalesce(sum(num_rows), 0) FROM parquet_file_metadata([{listed}])")[0])


# The share of the engine's limit one partition's hash tables may take: DuckDB needs the rest for
# the scans, the other operators' buffers and its own accounting.
PARTITION_SHARE = 0.25


def hash_partitions(con, paths: Sequence[str | os.PathLike], bytes_per_row: int) -> int:
    """How many hash partitions a join or GROUP BY over these files' rows needs, so that one
    partition's hash table (``bytes_per_row`` each: key, payload, the table's own overhead) fits
    in the engine: 1 for anything that fits at once, as every dataset of a laptop does.

    DuckDB spills a single large join or aggregation, but at 1e8 rows in a 1.2 GB engine some of
    ours ran out of memory all the same (docs/BENCHMARKS.md); run through :class:`KeyPartitions`
    instead, each partition holds 1/k of the table and the answers combine exactly."""
    budget = int(one_row(con, "SELECT getvariable('engine_memory_bytes')")[0] or 0) * PARTITION_SHARE
    rows = total_rows(con, paths)
    return max(1, math.ceil(rows * bytes_per_row / budget)) if budget else 1


PART_COLUMN = "_key_part"


class KeyPartitions:
    """Tables split by ``hash(key) % k`` into scratch parquet files, each source read and written
    once (a Grace hash join): partition ``i`` of every source holds the same keys, so a join or a
    GROUP BY on the key runs partition by partition, in 1/k of the memory, and its answers add up.
    Reading the inputs once keeps the work linear in the rows, where filtering every source k
    times would read them k times. With ``k`` 1 the sources are used as they are, nothing written.

    Use as a context manager (the scratch files go with it); :meth:`add` a source (a SQL table
    expression with a ``key`` column), then :meth:`source` is partition ``i`` of it."""

    def __init__(self, con, key: str, k: int):
        self.con, self.key, self.k = con, key, int(k)
        self.sources: dict[str, str] = {}
        self.folder: Path | None = None

    def __enter__(self) -> "KeyPartitions":
        if self.k > 1:
            scratch = one_row(self.con, "SELECT getvariable('engine_scratch')")[0] or tempfile.gettempdir()
            Path(scratch).mkdir(parents=True, exist_ok=True)
            self.folder = Path(tempfile.mkdtemp(prefix="key-partitions-", dir=scratch))
            # Rows wait per open partition file until this many: k of them must fit the engine.
            self.con.execute("SET partitioned_write_flush_threshold = 16384")
        return self

    def __exit__(self, *exc) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def add(self, name: str, sql: str) -> None:
        """Split the table expression ``sql`` (one read of it) into the k partitions."""
        self.sources[name] = sql
        if self.k > 1:
            self.con.execute(f"""COPY (SELECT *, hash({self.key}) % {self.k} AS {PART_COLUMN} FROM {sql})
                                 TO {sql_string(str(self.folder / name))}
                                 (FORMAT parquet, PARTITION_BY ({PART_COLUMN}))""")

    def source(self, name: str, i: int) -> str:
        """Partition ``i`` of source ``name`` as a table expression (its columns, that key range)."""
        if self.k == 1:
            return self.sources[name]
        files = sorted((self.folder / name / f"{PART_COLUMN}={i}").glob("*.parquet"))
        if not files:  # no key of the source fell into this partition
            return f"(SELECT * FROM {self.sources[name]} WHERE false)"
        listed = ", ".join(sql_string(str(f)) for f in files)
        return f"read_parquet([{listed}], hive_partitioning = false)"  # not the partition column


def columns_of(con, paths: Sequence[str | os.PathLike]) -> dict[str, str]:
    """Column name -> DuckDB type of the union of the files' schemas (metadata only)."""
    return source_types(con, parquet_source(paths))


def source_types(con, source: str) -> dict[str, str]:
    """Column name -> DuckDB type of a SQL table expression or view (planned, not run)."""
    return {name: str(kind) for name, kind, *_ in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}


def one_row(con, sql: str, params: Iterable | None = None) -> tuple:
    """The single row of an aggregate query (fetched whole: DuckDB refuses new work on a
    connection while a result is unfinished)."""
    rows = con.execute(sql, list(params) if params is not None else None).fetchall()
    if len(rows) != 1:
        raise QueryError(f"expected one row, got {len(rows)}: {sql[:200]}")
    return rows[0]


def query_df(con, sql: str, params: Iterable | None = None) -> pd.DataFrame:
    """Run a query whose result is small (a table's rows, a subset's keys) into a DataFrame."""
    return con.execute(sql, list(params) if params is not None else None).df()


def copy_to_parquet(con, sql: str, path: str | os.PathLike) -> None:
    """Write a query's result to one parquet file atomically, streamed by DuckDB (never a
    DataFrame), so a result of any size costs the engine's memory limit at most."""
    with atomic_path(path, suffix=".parquet") as tmp:
        con.execute(f"COPY ({sql}) TO {sql_string(str(tmp))} (FORMAT parquet, COMPRESSION zstd)")


# --- order statistics in linear time ---------------------------------------------------------
#
# ``ORDER BY v LIMIT n OFFSET k`` with n or k a share of the dataset (the median, a top 30%, a
# uniform half drawn by keyed rank) makes the engine keep or sort that share: N log N, and past the
# memory limit a spilled sort. A rank is found instead by scans: v's range, a count per bucket of v
# (the buckets follow v's order) that locates the rank's bucket, then a sort of that bucket only.

ORDER_BUCKETS = 1 << 16


def _bucket_sql(value: str, lo: float, hi: float) -> str:
    """A bucket number in [0, ORDER_BUCKETS) that never decreases as ``value`` (a DOUBLE) grows:
    each step (subtract, scale, floor) is monotone in floating point, so ties share a bucket and
    every row of a lower bucket comes before every row of a higher one."""
    if lo is None or not hi > lo:
        return "0"
    scale = (ORDER_BUCKETS - 1) / (hi - lo)
    return f"least(floor(({value} - {lo!r}::DOUBLE) * {scale!r}::DOUBLE), {ORDER_BUCKETS - 1})::BIGINT"


def _bucket_counts(con, relation: str, value: str) -> tuple[str, list[tuple[int, int]]]:
    """The bucket expression of ``value`` over ``relation`` and its (bucket, rows) counts in bucket
    order: two scans (the value's range, then the counts)."""
    lo, hi = one_row(con, f"SELECT min({value})::DOUBLE, max({value})::DOUBLE FROM {relation}")
    expr = _bucket_sql(f"({value})::DOUBLE", lo, hi)
    return expr, con.execute(f"SELECT {expr} AS b, count(*) FROM {relation} GROUP BY b ORDER BY b").fetchall()


def _bucket_of(counts: list[tuple[int, int]], position: int) -> tuple[int, int]:
    """(bucket, rows before it) of the bucket that holds row ``position`` (0-based) in value order."""
    before = 0
    for bucket, n in counts:
        if before + n > position:
            return int(bucket), before
        before += n
    raise QueryError(f"row {position} is past the {before} rows")


def rows_in_order(con, relation: str, value: str, tiebreak: str, offset: int, n: int = 1,
                  columns: str = "*") -> list[tuple]:
    """Rows ``offset .. offset+n-1`` of ``relation`` in (``value``, ``tiebreak``) order, as
    ``ORDER BY value, tiebreak LIMIT n OFFSET offset`` gives them, in linear time (three scans and
    a sort of the buckets that hold them). ``relation``'s ``value`` is never NULL."""
    if n < 1:
        return []
    expr, counts = _bucket_counts(con, relation, value)
    first, before = _bucket_of(counts, offset)
    last, _ = _bucket_of(counts, offset + n - 1)
    return con.execute(f"SELECT {columns} FROM {relation} WHERE {expr} BETWEEN {first} AND {last} "
                       f"ORDER BY {value}, {tiebreak} LIMIT {int(n)} OFFSET {int(offset - before)}").fetchall()


def copy_first_in_order(con, relation: str, value: str, tiebreak: str, n: int, path: str | os.PathLike,
                        columns: str = "*") -> None:
    """Write the first ``n`` rows of ``relation`` in (``value``, ``tiebreak``) order to parquet,
    the rows ``ORDER BY value, tiebreak LIMIT n`` picks (in no particular order), in linear time:
    every row of the buckets before the n-th row's bucket and the first rows of that bucket."""
    expr, counts = _bucket_counts(con, relation, value)
    if n >= sum(rows for _, rows in counts):
        copy_to_parquet(con, f"SELECT {columns} FROM {relation}", path)
        return
    bucket, before = _bucket_of(counts, n - 1)
    copy_to_parquet(con, f"SELECT {columns} FROM {relation} WHERE {expr} < {bucket} UNION ALL "
                         f"(SELECT {columns} FROM {relation} WHERE {expr} = {bucket} "
                         f"ORDER BY {value}, {tiebreak} LIMIT {int(n - before)})", path)


def number(column: str) -> str:
    """A column as a DOUBLE, NULL where it is undefined, not a number or NaN: what pandas'
    ``to_numeric(errors="coerce").dropna()`` keeps (infinities stay). Every dataset-wide mean,
    spread and threshold reads scores through it, so NaN never counts as a value."""
    value = f"TRY_CAST({sql_name(column)} AS DOUBLE)"
    return f"(CASE WHEN NOT isnan({value}) THEN {value} END)"


def register_keyed_rank(con, seed: int, name: str = "keyed_rank") -> str:
    """Register ``name(key) -> UBIGINT``: the seeded keyed hash (SipHash-2-4 via pandas'
    ``hash_array``) that ranks samples for every seeded draw (:func:`parrotscope.curate.sample_keys`).

    The same function as the in-memory draw, so ``ORDER BY name(key), key LIMIT n`` picks the
    very keys :func:`~parrotscope.curate.sample_keys` picks, whatever the files' row order.
    Vectorised (one call per batch of rows).
    """
    import duckdb
    import pyarrow as pa

    from .keyhash import hash_key, keyed_hashes

    hash_key(seed)  # a bad seed fails here, not in the first batch

    def rank(keys):  # no annotations: DuckDB evaluates them, and pyarrow is a local name
        return pa.array(keyed_hashes(keys.to_pandas(), seed), type=pa.uint64())

    con.create_function(name, rank, [duckdb.sqltype("VARCHAR")], duckdb.sqltype("UBIGINT"),
                        type="arrow", null_handling="special", side_effects=False)
    return name
