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
    Selection (keys only) and materialising (copying samples) are separate steps, as in DataComp:
    :mod:`parrotscope.materialise` copies the chosen samples, one pass over the source shards for
    many subsets.
"""

from __future__ import annotations

import logging
import operator
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .db import Engine, columns_of, connect, one_row, parquet_source, query_df, register_keyed_rank, sql_name, sql_string
from .io import KEY, write_json, write_parquet
from .keyhash import keyed_hashes

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


def sample_keys(keys: pd.Series, size: int, seed: int) -> np.ndarray:
    """Positions of ``size`` keys drawn uniformly without replacement: the lowest keyed hashes."""
    values = np.asarray(keys, dtype=object)
    try:
        ranks = keyed_hashes(values, seed)
    except ValueError as exc:  # a seed out of range: a config mistake
        raise CurateError(str(exc)) from exc
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
    # The held-out split (index column `heldout`, Fig. 9) is in no subset.
    held = "coalesce(heldout, false)" if "heldout" in types else "false"
    where = f"{eligible_sql(con, source, types, parsed, name)} AND NOT {held}"
    n_index, n_ok, n_heldout, n_eligible = one_row(con,
        f"SELECT count(*), count(*) FILTER (WHERE status = 'ok'), count(*) FILTER (WHERE status = 'ok' AND {held}), "
        f"count(*) FILTER (WHERE {where}) FROM {source}")
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
        "n_heldout": int(n_heldout),
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


def subset_size(config: Mapping, subset: str, dataset: str | None = None) -> int:
    """The size of a subset of ``dataset``: ``curate.dataset_sizes.<dataset>`` (a number, or that
    of the first curation table listing the subset), else that table's ``curate.table_sizes``,
    else ``curate.size``. Subsets of one table always share a size, as the paper's do."""
    cur = config["curate"]
    per_dataset = (cur.get("dataset_sizes") or {}).get(dataset)
    if isinstance(per_dataset, int):
        return per_dataset
    for table, names in (cur.get("tables") or {}).items():
        if subset not in names:
            continue
        for sizes in (per_dataset or {}, cur.get("table_sizes") or {}):
            if table in sizes:
                return int(sizes[table])
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
    datasets = config.get("datasets") or {}
    for dataset, sizes in (cur.get("dataset_sizes") or {}).items():
        if dataset not in datasets:
            raise CurateError(f"config curate.dataset_sizes.{dataset}: not one of datasets {sorted(datasets)}")
        unknown = [t for t in (sizes if isinstance(sizes, dict) else {}) if t not in (cur.get("tables") or {})]
        if unknown:
            raise CurateError(f"config curate.dataset_sizes.{dataset}: {unknown} are not tables of curate.tables")
    for table, dataset in (cur.get("table_datasets") or {}).items():
        if table not in (cur.get("tables") or {}):
            raise CurateError(f"config curate.table_datasets.{table}: not a table of curate.tables")
        if dataset not in datasets:
            raise CurateError(f"config curate.table_datasets.{table}: {dataset!r} is not one of datasets "
                              f"{sorted(datasets)}")
    n_shards = cur.get("n_shards")
    per_dataset = [v for sizes in (cur.get("dataset_sizes") or {}).values()
                   for v in (sizes.values() if isinstance(sizes, dict) else [sizes])]
    sizes = [cur.get("size"), *(cur.get("table_sizes") or {}).values(), *per_dataset]
    size = min((s for s in sizes if s is not None), default=None)
    if size is not None and n_shards is not None and n_shards > size:
        raise CurateError(f"config curate.n_shards ({n_shards}) exceeds curate.size ({size}): "
                          f"a shard would be empty")


# Materialising moved to parrotscope.materialise; these names still resolve from here. Imported on
# first use, not at module level: the rules' code hashes follow module-level imports, and editing
# how samples are copied must not rerun selection.
_MOVED = ("KEEP_EXTS", "SIZES_FILE", "SHARD_NAME", "SHARD_NAME_RE", "SampleNotFound", "assign_shards",
          "materialise_subset", "shard_names", "training_members")


def __getattr__(name: str):
    if name in _MOVED:
        from . import materialise

        return getattr(materialise, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
