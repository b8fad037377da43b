"""Stage ``curate``: equal-size training subsets picked by criteria on the parrot index (paper Sec. 6).

A subset is a named list of conditions ``[column, op, value]`` on columns of
the index parts (``results/{dataset}/index/{part}.parquet``), all of which a sample must meet; ``op`` is one of
``== != < <= > >=``. A column may contain ``{scorer}``, replaced by the configured scorer's name,
so the RSA/RSC criteria read ``ref.rsa``, ``openai.rsc``, ... :data:`PAPER_SUBSETS` holds the
paper's three curations and :data:`PAPER_TABLES` the table each subset belongs to, both as plain
data for the ``curate`` section of the config.

Eligibility
    Only samples whose ``status`` is ``ok`` are eligible (ingested, decoded and spotted). A
    condition on a column that is undefined for a sample (NaN: e.g. RSA of an image with nothing
    spotted, RSC of an image with no co-embedded word) is false for that sample, ``!=`` included,
    so an undefined measure never qualifies a sample. A value must be of the column's kind (a
    boolean for ``has_text``, a number for ``cotr``): a mismatch such as ``"false"`` for a boolean
    column is an error rather than a criterion that silently matches nothing.

Exact float equality
    CoTR = |co-embedded words| / |caption words| (Algorithm 1). It is 0.0 exactly when no word is
    co-embedded and 1.0 exactly when every word is (IEEE division of n by n is exactly 1), and
    parquet stores float64 losslessly, so ``cotr == 1.0`` and ``cotr == 0.0`` are exact tests, as
    the paper's "CoTR = 1.0" and "= 0.0" mean. Equality on computed scores (RSA) would not be.

Sampling
    A uniform sample without replacement of ``size`` eligible samples: every eligible key is ranked
    by a keyed hash (SipHash-2-4 via ``pandas.util.hash_array``, key derived from ``seed``) and the
    ``size`` lowest are taken (ties, practically impossible, broken by key). The choice therefore
    depends only on the set of eligible keys and the seed, not on the index's row order or on
    numpy's random streams; a smaller subset with the same criterion and seed is contained in a larger one
    (3M in 12M, as one would sample by hand); and subsets of different criteria share their common
    keys' ranks (common random numbers), which is harmless for each subset's own distribution.
    Fewer eligible samples than ``size`` raise :class:`SubsetTooSmall`: every subset of a table
    must have the same size (the paper compares 3M to 3M), so a smaller one is never substituted.

Materialising
    Selection (keys only) and materialising (copying samples) are separate steps, as in DataComp.
    :func:`materialise_subset` copies each chosen sample's members (image, ``txt``, ``json``;
    bytes unchanged) into ``n_shards`` webdataset tars ``00000.tar``... whose sizes differ by at
    most one, plus OpenCLIP's ``sizes.json``, which gives OpenCLIP's trainer the true sample count.
    Completion protocol: every tar is written into a temporary directory beside the output
    directory; only when all are complete are they renamed into it, ``sizes.json`` last. An
    exception therefore leaves no new file in the output directory, and ``sizes.json`` present
    means the shards beside it are complete.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import operator
import os
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from pandas.util import hash_array

from .db import Engine, columns_of, connect, one_row, parquet_source, query_df, register_keyed_rank, sql_name, sql_string
from .io import KEY, read_parquet, write_json, write_parquet
from .shards import IMAGE_EXTS, OK, iter_shard

log = logging.getLogger(__name__)

OPS = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
SCORER_PLACEHOLDER = "{scorer}"

# Curation I, II and III of the paper (Sec. 6.1). Curation II: "We first select all the images with
# embedded text and then sample images based on the CoTR", hence has_text in every CoTR subset.
# Curation III applies RSA / RSC thresholds; the relative scores measure what removing the
# spotted text changes, so they are read among images with text (RSA is NaN without text anyway;
# the explicit condition also keeps a scorer that scores removal of nothing as RSA = 0 out).


def _with_text() -> list:
    """A fresh condition list each time, so no two subsets share (and dump as YAML aliases) one."""
    return ["has_text", "==", True]


PAPER_SUBSETS: dict[str, list[list[Any]]] = {
    # Curation I (Table 3)
    "random": [],
    "no_text": [["has_text", "==", False]],
    "text_only": [_with_text()],
    # Curation II (Table 4)
    "cotr_eq_0.0": [_with_text(), ["cotr", "==", 0.0]],
    "cotr_ge_0.3": [_with_text(), ["cotr", ">=", 0.3]],
    "cotr_ge_0.5": [_with_text(), ["cotr", ">=", 0.5]],
    "cotr_ge_0.8": [_with_text(), ["cotr", ">=", 0.8]],
    "cotr_eq_1.0": [_with_text(), ["cotr", "==", 1.0]],
    # Curation III (Tables 5 and 6)
    "rsa_lt_0.0": [_with_text(), ["{scorer}.rsa", "<", 0.0]],
    **{f"rsa_ge_{t}": [_with_text(), ["{scorer}.rsa", ">=", t]] for t in (0.0, 0.1, 0.2, 0.3)},
    "rsc_lt_0.0": [_with_text(), ["{scorer}.rsc", "<", 0.0]],
    **{f"rsc_ge_{t}": [_with_text(), ["{scorer}.rsc", ">=", t]] for t in (0.0, 0.1, 0.2, 0.3)},
}
PAPER_TABLES: dict[str, list[str]] = {
    "table3": ["random", "no_text", "text_only"],
    "table4": ["cotr_eq_0.0", "cotr_ge_0.3", "cotr_ge_0.5", "cotr_ge_0.8", "cotr_eq_1.0"],
    "table5": ["rsa_lt_0.0", "rsa_ge_0.0", "rsa_ge_0.1", "rsa_ge_0.2", "rsa_ge_0.3"],
    "table6": ["rsc_lt_0.0", "rsc_ge_0.0", "rsc_ge_0.1", "rsc_ge_0.2", "rsc_ge_0.3"],
}
SUBSET_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
# `pool` is the training stage's name for the whole dataset, so no subset may take it.
RESERVED_SUBSETS = ("pool",)

# Members a trainer or a later stage can use; anything else in a source sample is left out.
KEEP_EXTS = (*IMAGE_EXTS, "txt", "json")
SIZES_FILE = "sizes.json"
SHARD_NAME = "{:05d}.tar"
SHARD_NAME_RE = re.compile(r"^\d{5}\.tar$")

# Columns summarised in stats.json when the index has them ({scorer} replaced).
STAT_MEANS = {
    "mean_s_raw": "{scorer}.s_raw",   # Tables 5/6 column "Avg. S(•)"
    "share_has_text": "has_text",
    "share_parrot": "is_parrot",
    "mean_cotr": "cotr",
    "mean_cotr_fuzzy": "cotr_fuzzy",
    "mean_rsa": "{scorer}.rsa",
    "mean_rsc": "{scorer}.rsc",
}


class CurateError(ValueError):
    """A curation input or setting is wrong; the message names it and what to change."""


class CriterionError(CurateError):
    """A subset's condition is malformed or does not fit the index."""


class SubsetTooSmall(CurateError):
    """Fewer eligible samples than the configured subset size."""


class SampleNotFound(CurateError, LookupError):
    """A selected key is not in the shard the index records for it."""


@dataclass(frozen=True)
class Condition:
    column: str
    op: str
    value: bool | int | float | str

    def __str__(self) -> str:
        return f"{self.column} {self.op} {self.value!r}"


@dataclass
class Selection:
    """The chosen samples (``__key__, part, shard``, sorted by key) and their statistics."""

    keys: pd.DataFrame
    stats: dict


# --- criteria ----------------------------------------------------------------------------------


def parse_conditions(conditions: Iterable[Sequence[Any]], scorer: str | None,
                     subset: str = "subset") -> list[Condition]:
    """Check the ``[column, op, value]`` triples of one subset and fill in the scorer's name."""
    parsed = []
    for i, cond in enumerate(conditions or []):
        where = f"curate.subsets.{subset}[{i}]"
        if not isinstance(cond, (list, tuple)) or len(cond) != 3:
            raise CriterionError(f"{where}: expected [column, op, value], got {cond!r}")
        column, op, value = cond
        if not isinstance(column, str) or not column:
            raise CriterionError(f"{where}: the column must be a non-empty string, got {column!r}")
        if op not in OPS:
            raise CriterionError(f"{where}: unknown operator {op!r}; use one of {list(OPS)}")
        if not isinstance(value, (bool, int, float, str)):
            raise CriterionError(f"{where}: the value must be a boolean, number or string, got {value!r}")
        if op not in ("==", "!=") and (isinstance(value, (bool, str))):
            raise CriterionError(f"{where}: {op} needs a number, got {value!r}")
        if SCORER_PLACEHOLDER in column:
            if not scorer:
                raise CriterionError(f"{where}: column {column!r} names {{scorer}} but no scorer is set "
                                     f"(config curate.scorer)")
            column = column.replace(SCORER_PLACEHOLDER, scorer)
        parsed.append(Condition(column, op, value))
    return parsed


def describe(conditions: Sequence[Condition]) -> str:
    return " and ".join(map(str, conditions)) if conditions else "every sample"


def _value_kind(value) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "string"


NUMBER_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
                "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL")


def _column_kind(sql_type: str) -> str:
    """The kind of values a column of this DuckDB type holds (``boolean``, ``number``, ``string``)."""
    if sql_type == "BOOLEAN":
        return "boolean"
    if sql_type.split("(")[0] in NUMBER_TYPES:
        return "number"
    if sql_type == "VARCHAR":
        return "string"
    return sql_type.lower()


def _no_column(subset: str, column: str, available: Iterable[str]) -> CriterionError:
    near = [c for c in available if c.split(".")[-1] == column.split(".")[-1]]
    hint = f"; columns with that measure: {near}" if near else ""
    return CriterionError(f"subset {subset!r}: the index has no column {column!r}{hint}")


def _literal(value) -> str:
    """A condition's value as a SQL literal (booleans before numbers: True is an int too)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(float(value)) if isinstance(value, float) else str(int(value))
    return sql_string(value)


def condition_sql(con, source: str, types: Mapping[str, str], cond: Condition, subset: str = "subset") -> str:
    """One condition as a SQL predicate. An undefined (NULL or NaN) value never meets it, not even
    ``!=``, so an undefined measure never qualifies a sample. A column whose defined values are of
    another kind than the value is an error; one with no defined value matches nothing."""
    if cond.column not in types:
        raise _no_column(subset, cond.column, types)
    column, kind = sql_name(cond.column), _column_kind(types[cond.column])
    if kind != _value_kind(cond.value):
        (n_defined,) = one_row(con, f"SELECT count({column}) FROM {source}")
        if n_defined == 0:
            return "false"
        raise CriterionError(f"subset {subset!r}: condition {cond} compares a {_value_kind(cond.value)} "
                             f"with column {cond.column!r}, which holds {kind} values")
    predicate = f"{column} {'<>' if cond.op == '!=' else cond.op} {_literal(cond.value)}"
    if kind == "number":  # NaN compares greater than every number in SQL; pandas' NaN never matches
        predicate = f"({predicate} AND NOT isnan({column}))"
    return f"coalesce({predicate}, false)"


def eligible_sql(con, source: str, types: Mapping[str, str], conditions: Sequence[Condition],
                 subset: str = "subset") -> str:
    """Status-ok rows meeting every condition, as a WHERE clause."""
    return " AND ".join(["status = 'ok'", *(condition_sql(con, source, types, c, subset) for c in conditions)])


# --- selection ---------------------------------------------------------------------------------


def _hash_key(seed: int) -> str:
    """pandas' SipHash takes a 16-character key: the seed written with 16 digits."""
    if not 0 <= int(seed) < 10 ** 16:
        raise CurateError(f"curate.seed must be in [0, 10^16), got {seed}")
    return f"{int(seed):016d}"


def sample_keys(keys: pd.Series, size: int, seed: int) -> np.ndarray:
    """Positions of ``size`` keys drawn uniformly without replacement: the lowest keyed hashes."""
    values = np.asarray(keys, dtype=object)
    ranks = hash_array(values, hash_key=_hash_key(seed), categorize=False)
    order = np.lexsort((values, ranks))  # last key sorts first: by hash, ties by key
    return order[:size]


def _mean(series: pd.Series | None) -> float | None:
    if series is None:
        return None
    value = pd.to_numeric(series, errors="coerce").mean()
    return None if pd.isna(value) else float(value)


def _stat_columns(scorer: str | None) -> dict[str, str | None]:
    """STAT_MEANS with the scorer filled in; a scorer column is None when no scorer is set."""
    return {name: (col.replace(SCORER_PLACEHOLDER, scorer) if scorer else None)
            if SCORER_PLACEHOLDER in col else col for name, col in STAT_MEANS.items()}


def subset_stats(chosen: pd.DataFrame, scorer: str | None) -> dict:
    """Means over the chosen samples of the columns in STAT_MEANS the index has (None otherwise)."""
    return {name: _mean(chosen[col]) if col in chosen.columns else None
            for name, col in _stat_columns(scorer).items()}


def select_subset(index_paths: Sequence[str], conditions: Iterable[Sequence[Any]], size: int, seed: int,
                  scorer: str | None, name: str = "subset", engine: Engine = Engine()) -> Selection:
    """Draw ``size`` status-ok samples meeting every condition, uniformly and reproducibly, from
    the index parts (a dataset-wide query: the engine filters, ranks by the keyed hash and keeps
    the ``size`` lowest with a bounded top-N, so only the chosen rows come back).

    Raises :class:`SubsetTooSmall` when fewer are eligible, :class:`CriterionError` when a
    condition does not fit the index.
    """
    if int(size) < 1:
        raise CurateError(f"curate.size must be at least 1, got {size}")
    parsed = parse_conditions(conditions, scorer, name)
    con = connect(engine)
    source = parquet_source(index_paths)
    types = columns_of(con, index_paths)
    for col in (KEY, "part", "shard", "status"):
        if col not in types:
            raise CurateError(f"the index has no {col!r} column; rebuild it with the index stage")
    where = eligible_sql(con, source, types, parsed, name)
    n_index, n_ok, n_eligible = one_row(con, 
        f"SELECT count(*), count(*) FILTER (WHERE status = 'ok'), count(*) FILTER (WHERE {where}) "
        f"FROM {source}")
    if n_eligible < size:
        raise SubsetTooSmall(
            f"subset {name!r} ({describe(parsed)}): {n_eligible} status-ok samples qualify, "
            f"fewer than the {size} asked for. Lower config `curate.size` to at most {n_eligible} "
            f"(every subset has the same size), or change or drop `curate.subsets.{name}`."
        )
    stat_columns = [c for c in _stat_columns(scorer).values() if c and c in types]
    wanted = ", ".join(sql_name(c) for c in dict.fromkeys([KEY, "part", "shard", *stat_columns]))
    rank = register_keyed_rank(con, seed)
    chosen = query_df(con, f"SELECT {wanted} FROM {source} WHERE {where} "
                           f"ORDER BY {rank}({sql_name(KEY)}), {sql_name(KEY)} LIMIT {int(size)}")
    chosen = chosen.sort_values(KEY, kind="stable").reset_index(drop=True)
    if chosen[KEY].duplicated().any():
        raise CurateError(f"subset {name!r}: key(s) {chosen.loc[chosen[KEY].duplicated(), KEY].head(3).tolist()} "
                          "occur in several parts; keys must be unique across the dataset's shards")
    stats = {
        "subset": name,
        "conditions": [[c.column, c.op, c.value] for c in parsed],
        "size": int(size),
        "seed": int(seed),
        "scorer": scorer,
        "n_index": int(n_index),
        "n_ok": int(n_ok),
        "n_eligible": int(n_eligible),
        "n_selected": int(len(chosen)),
        **subset_stats(chosen, scorer),
    }
    return Selection(keys=chosen[[KEY, "part", "shard"]], stats=stats)


def run_select(index_paths: Sequence[str], keys_path: str, stats_path: str, name: str,
               conditions: Sequence[Sequence[Any]], size: int, seed: int, scorer: str | None,
               engine: Engine = Engine()) -> dict:
    """Select one subset from the index parts; write its keys (parquet) and stats (JSON)."""
    selection = select_subset(index_paths, conditions, size, seed, scorer, name, engine)
    write_parquet(selection.keys, keys_path)
    write_json(selection.stats, stats_path)
    log.info("subset %s: %d of %d eligible chosen; %s", name, selection.stats["n_selected"],
             selection.stats["n_eligible"], {k: selection.stats[k] for k in STAT_MEANS})
    return selection.stats


# --- materialising -----------------------------------------------------------------------------


def shard_names(n_shards: int) -> list[str]:
    """File names of a subset's shards, for rules that name them as outputs or inputs."""
    return [SHARD_NAME.format(i) for i in range(n_shards)]


def assign_shards(keys: Sequence[str], n_shards: int) -> dict[str, int]:
    """Output shard of each key: round-robin over the sorted keys, so sizes differ by at most one
    and every output shard mixes all source shards (keys usually start with their shard's id)."""
    return {key: i % n_shards for i, key in enumerate(sorted(keys))}


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    """A member header without time or owner, so the same selection gives byte-identical tars."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def training_members(files: Mapping[str, bytes]) -> tuple[dict[str, bytes], bool]:
    """The members to copy, and whether the caption came from the ``json`` member.

    A sample whose caption is only in its ``json`` (ingest accepts that) gets a ``txt`` with that
    caption, because OpenCLIP's trainer reads captions from ``txt`` only.
    """
    members = {ext: data for ext, data in files.items() if ext in KEEP_EXTS}
    if "txt" in members:
        return members, False
    try:
        caption = json.loads(members.get("json", b"{}").decode("utf-8")).get("caption")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        caption = None
    if not isinstance(caption, str):
        return members, False
    members["txt"] = caption.encode("utf-8")
    return members, True


def _check_sources(keys: pd.DataFrame, shards: Sequence[str]) -> dict[str, set[str]]:
    """Selected keys grouped by source shard; every shard must be one of the dataset's."""
    for col in (KEY, "shard"):
        if col not in keys.columns:
            raise CurateError(f"the keys table has no {col!r} column")
    dup = keys[KEY].duplicated()
    if dup.any():
        raise CurateError(f"the keys table repeats keys, e.g. {keys.loc[dup, KEY].head(3).tolist()}")
    known = set(shards)
    unknown = sorted(set(keys["shard"]) - known)
    if unknown:
        raise CurateError(f"selected keys come from shard(s) {unknown[:3]} that are not among the dataset's "
                          f"{len(known)} shards; the index is stale: rebuild it (and the subset's keys)")
    return {shard: set(group[KEY]) for shard, group in keys.groupby("shard", sort=False)}


def _fsync(fh) -> None:
    fh.flush()
    os.fsync(fh.fileno())


def _write_shards(tmp_dir: Path, by_shard: dict[str, set[str]], shards: Sequence[str],
                  assignment: dict[str, int], n_shards: int) -> dict:
    """Stream every source shard once, writing each selected sample to its output tar."""
    counts = {"members": {}, "n_caption_from_json": 0, "n_members_dropped": 0, "n_source_shards_read": 0}
    sizes = [0] * n_shards
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(open(tmp_dir / name, "wb")) for name in shard_names(n_shards)]
        tars = [stack.enter_context(tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT))
                for fh in files]
        for shard in dict.fromkeys(shards):  # the dataset's order, each shard once
            wanted = by_shard.get(shard)
            if not wanted:
                continue
            counts["n_source_shards_read"] += 1
            found: set[str] = set()
            # A source shard cut since download is read as ingest read it (record mode): its
            # cut sample was never selectable, and a selected key past the cut is reported below.
            for sample in iter_shard(shard):
                if sample.key not in wanted or sample.key in found or sample.cut:
                    continue  # a repeated key is ingest's `duplicate_key`: the first one is the sample
                found.add(sample.key)
                members, from_json = training_members(sample.files)
                counts["n_caption_from_json"] += from_json
                counts["n_members_dropped"] += len(set(sample.files) - set(members))
                out = assignment[sample.key]
                for ext, data in members.items():
                    tars[out].addfile(_tarinfo(f"{sample.key}.{ext}", len(data)), io.BytesIO(data))
                    counts["members"][ext] = counts["members"].get(ext, 0) + 1
                sizes[out] += 1
            missing = sorted(wanted - found)
            if missing:
                raise SampleNotFound(
                    f"shard {shard}: selected key {missing[0]} not found"
                    + (f" ({len(missing)} selected keys missing, e.g. {missing[:3]})" if len(missing) > 1 else "")
                    + "; the shard changed since the index was built: rebuild the index and the subset")
        for tar, fh in zip(tars, files):
            tar.close()
            _fsync(fh)
    counts["sizes"] = {name: n for name, n in zip(shard_names(n_shards), sizes)}
    return counts


def _publish(tmp_dir: Path, out_dir: Path, names: Sequence[str]) -> None:
    """Move finished shards into ``out_dir``, ``sizes.json`` last (the completion marker).

    The old marker goes first and shards of an earlier run with more shards are removed, so the
    directory never pairs a marker with shards it does not describe.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SIZES_FILE).unlink(missing_ok=True)
    for stale in out_dir.iterdir():
        if SHARD_NAME_RE.match(stale.name) and stale.name not in names:
            stale.unlink()
    for name in names:
        os.replace(tmp_dir / name, out_dir / name)
    os.replace(tmp_dir / SIZES_FILE, out_dir / SIZES_FILE)


def materialise_subset(keys: pd.DataFrame, shards: Sequence[str], out_dir: str | os.PathLike,
                       n_shards: int) -> dict:
    """Copy the selected samples into ``n_shards`` equal-size tars in ``out_dir`` plus ``sizes.json``.

    ``keys`` has ``__key__`` and ``shard`` (the source shard URL as the index records it);
    ``shards`` is the dataset's shard list, read in that order, each shard at most once.
    Returns the sample count, the shard sizes and member counts. A key missing from its shard
    raises :class:`SampleNotFound`; an error while reading or writing leaves the output directory
    as it was (only the final renames touch it, ``sizes.json`` last).
    """
    n = len(keys)
    if n_shards < 1:
        raise CurateError(f"curate.n_shards must be at least 1, got {n_shards}")
    if n < n_shards:
        raise CurateError(f"{n} selected samples cannot fill {n_shards} non-empty shards; "
                          f"lower config `curate.n_shards` or raise `curate.size`")
    by_shard = _check_sources(keys, shards)
    assignment = assign_shards(keys[KEY].tolist(), n_shards)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        result = _write_shards(tmp_dir, by_shard, shards, assignment, n_shards)
        with open(tmp_dir / SIZES_FILE, "w") as fh:
            json.dump(result["sizes"], fh, indent=2)
            fh.write("\n")
            _fsync(fh)
        _publish(tmp_dir, out_dir, shard_names(n_shards))
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    result.update(n_samples=n, n_shards=n_shards)
    return result


def run_materialise(keys_path: str, shards: Sequence[str], out_dir: str, n_shards: int) -> dict:
    """Materialise the subset whose keys are in ``keys_path`` (see :func:`materialise_subset`)."""
    result = materialise_subset(read_parquet(keys_path), shards, out_dir, n_shards)
    log.info("materialised %d samples into %d shards in %s: %s", result["n_samples"], result["n_shards"],
             out_dir, {k: v for k, v in result.items() if k != "sizes"})
    return result


# --- configuration -----------------------------------------------------------------------------


def needs_scores(conditions: Iterable[Sequence[Any]], scorers: Iterable[str]) -> bool:
    """Whether a subset's conditions read a scorer's columns (``{scorer}.rsa``, ``ref.s_raw``).

    Subsets that do not are selected from the text-only index, so Curation I-II (Tables 3-4) do
    not wait for inpainting and scoring.
    """
    prefixes = tuple(f"{s}." for s in scorers)
    return any(SCORER_PLACEHOLDER in str(c[0]) or str(c[0]).startswith(prefixes)
               for c in conditions or [] if isinstance(c, (list, tuple)) and c)


def curate_scorer(config: Mapping) -> str | None:
    """``curate.scorer``, or by default the first configured scorer."""
    chosen = (config.get("curate") or {}).get("scorer")
    if chosen:
        return chosen
    scorers = (config.get("score") or {}).get("scorers") or {}
    return next(iter(scorers), None)


def subset_wildcard(names: Iterable[str]) -> str:
    """A wildcard constraint matching exactly the configured subset names (none: matches nothing)."""
    names = sorted(names, key=len, reverse=True)
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


def subset_size(config: Mapping, subset: str) -> int:
    """The size of a subset: that of the first curation table listing it (``curate.table_sizes``),
    else ``curate.size``. Subsets of one table always share a size, as the paper's do."""
    cur = config["curate"]
    for table, names in (cur.get("tables") or {}).items():
        if subset in names and table in (cur.get("table_sizes") or {}):
            return int(cur["table_sizes"][table])
    return int(cur["size"])


def check_curate(config: Mapping) -> None:
    """Relations the schema cannot express: names, conditions, scorer, table membership, sizes."""
    cur = config.get("curate") or {}
    subsets = cur.get("subsets") or {}
    scorer = curate_scorer(config)
    scorers = (config.get("score") or {}).get("scorers") or {}
    if cur.get("scorer") and cur["scorer"] not in scorers:
        raise CurateError(f"config curate.scorer: {cur['scorer']!r} is not one of score.scorers {sorted(scorers)}")
    for name, conditions in subsets.items():
        if not SUBSET_NAME.match(name) or name in RESERVED_SUBSETS:
            raise CurateError(f"config curate.subsets.{name}: a subset name is letters, digits, `_`, `.`, `-` "
                              f"and not one of {list(RESERVED_SUBSETS)}")
        parse_conditions(conditions, scorer, name)
    for table, names in (cur.get("tables") or {}).items():
        unknown = [n for n in names if n not in subsets]
        if unknown:
            raise CurateError(f"config curate.tables.{table}: subset(s) {unknown} are not in curate.subsets")
    for table in cur.get("table_sizes") or {}:
        if table not in (cur.get("tables") or {}):
            raise CurateError(f"config curate.table_sizes.{table}: not a table of curate.tables")
    n_shards = cur.get("n_shards")
    sizes = [cur.get("size"), *(cur.get("table_sizes") or {}).values()]
    size = min((s for s in sizes if s is not None), default=None)
    if size is not None and n_shards is not None and n_shards > size:
        raise CurateError(f"config curate.n_shards ({n_shards}) exceeds curate.size ({size}): "
                          f"a shard would be empty")
