"""Stage ``tables``: the paper's tables, computed from the per-sample tables.

Table 1 (paper Sec. 3): how much text the images carry and how much of it the captions parrot.
Rates are means of per-sample CoTR: "in total" over every processed sample (text-free images
count as 0), "in images with embedded text" over those with at least one spotted word.

Tables 1 and 2 are dataset-wide: they are aggregate queries over the per-part tables through
:mod:`parrotscope.db`, so their memory does not grow with the dataset. Tables 3-6 (curated
subsets), Table 10 and the filters table (the subsets of :mod:`parrotscope.filters`) are built
from the trained models' evaluations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .db import Engine, columns_of, connect, number, one_row, parquet_source, sql_name
from .filter_names import method_of
from .io import read_json, write_csv
from .shards import count_training_samples

TABLE1_ROWS = [
    "Num. of Total Img.",
    "Num. of Img. w/ Emb. Text",
    "Img. w/ Emb. Text Rate",
    "Num. of Img. w/ Co-Emb. Text",
    "Co-Emb. Text Rate (in Total)",
    "Co-Emb. Text Rate (in Img. w/ Emb. Text)",
    "Fuzzy Co-Emb. Text Rate (in Total)",
    "Fuzzy Co-Emb. Text Rate (in Img. w/ Emb. Text)",
]


def _rate(expr: str, where: str) -> str:
    """Mean of a per-sample measure over the rows meeting ``where`` (NULL measures left out, as
    pandas' mean leaves out NaN)."""
    return f"avg({expr}) FILTER (WHERE {where})"


def table1_stats(con, match_paths: list[str], prefix: str = "") -> dict[str, float]:
    """Table 1's statistics over the processed samples of one dataset, from its per-part match
    tables (one aggregate query; only these columns are read).

    ``prefix`` selects the measures: ``""`` for spotted text, ``"gt_"`` for ground truth.
    """
    has_text, parrot = sql_name(f"{prefix}has_text"), sql_name(f"{prefix}is_parrot")
    cotr, fuzzy = sql_name(f"{prefix}cotr"), sql_name(f"{prefix}cotr_fuzzy")
    ok, text = "status = 'ok'", f"status = 'ok' AND {has_text}"
    n, n_text, n_parrot, *rates = one_row(con, f"""
        SELECT count(*) FILTER (WHERE {ok}),
               count(*) FILTER (WHERE {text}),
               count(*) FILTER (WHERE {ok} AND {parrot}),
               {_rate(cotr, ok)}, {_rate(cotr, text)}, {_rate(fuzzy, ok)}, {_rate(fuzzy, text)}
        FROM {parquet_source(match_paths)}""")
    rates = [float("nan") if r is None else float(r) for r in rates]
    return {
        "Num. of Total Img.": n,
        "Num. of Img. w/ Emb. Text": n_text,
        "Img. w/ Emb. Text Rate": n_text / n if n else float("nan"),
        "Num. of Img. w/ Co-Emb. Text": n_parrot,
        "Co-Emb. Text Rate (in Total)": rates[0],
        "Co-Emb. Text Rate (in Img. w/ Emb. Text)": rates[1],
        "Fuzzy Co-Emb. Text Rate (in Total)": rates[2],
        "Fuzzy Co-Emb. Text Rate (in Img. w/ Emb. Text)": rates[3],
    }


def status_counts(con, match_paths: list[str]) -> dict[str, int]:
    """Rows per match status (``ok``, ``skipped`` at ingest, ``error`` in spotting)."""
    rows = con.execute(f"SELECT status, count(*) FROM {parquet_source(match_paths)} GROUP BY status").fetchall()
    return {status: int(n) for status, n in rows}


def has_complete_truth(con, match_paths: list[str]) -> bool:
    """Whether every processed sample has a ground-truth CoTR (generated data does)."""
    if "gt_cotr" not in columns_of(con, match_paths):
        return False
    (missing,) = one_row(con, f"SELECT count(*) FROM {parquet_source(match_paths)} "
                              "WHERE status = 'ok' AND gt_cotr IS NULL")
    return missing == 0


def accounting_rows(counts: dict, statuses: dict[str, int]) -> dict[str, int]:
    """Sample accounting: in = processed + skipped, with every skip reason.

    Ingest skips (duplicates included) come from ``parts.json``; spotting errors from the match
    tables' statuses, whose ``skipped`` rows are the ingest skips carried through. Shards that
    ingest recorded as truncated or missing are rows only where there are some, so a clean
    dataset's rows stay as they were.
    """
    n_spot_errors = int(statuses.get("error", 0))
    rows = {
        "Samples in": counts["samples_in"],
        "Samples processed": int(statuses.get("ok", 0)),
        "Samples skipped": counts["skipped"] + n_spot_errors,
    }
    reasons = dict(counts["skipped_by_reason"])
    if n_spot_errors:
        reasons["spot_error"] = n_spot_errors
    for reason, k in sorted(reasons.items()):
        rows[f"Skipped: {reason}"] = k
    for row, key in (("Shards truncated", "shards_truncated"), ("Shards missing", "shards_missing")):
        if counts.get(key):  # parts.json written before shards were recorded has no such key
            rows[row] = len(counts[key])
    if rows["Samples in"] != rows["Samples processed"] + rows["Samples skipped"]:
        raise ValueError(f"sample accounting does not reconcile: {rows}")
    return rows


def dataset_columns(con, name: str, match_paths: list[str], counts: dict) -> dict[str, dict]:
    """Table 1's column(s) of one dataset: spotted, plus ground truth where the data has it."""
    acc = accounting_rows(counts, status_counts(con, match_paths))
    columns = {f"{name} (spotted)": {**table1_stats(con, match_paths), **acc}}
    if has_complete_truth(con, match_paths):
        columns[f"{name} (ground truth)"] = {**table1_stats(con, match_paths, "gt_"), **acc}
    return columns


def build_table1(columns: dict[str, dict]) -> pd.DataFrame:
    """One column per dataset (spotted), plus a ground-truth column where the data has it."""
    table = pd.DataFrame(columns)
    # A skip reason (or damaged shards) seen in one dataset only is a count of 0 in the others.
    skip_rows = [r for r in table.index if r.startswith(("Skipped: ", "Shards "))]
    table.loc[skip_rows] = table.loc[skip_rows].fillna(0)
    table.index.name = "statistic"
    return table


def format_table1(table: pd.DataFrame, decimals: int) -> pd.DataFrame:
    """Counts as integers, rates as fractions rounded to ``decimals`` places."""
    out = table.astype(object)
    for row in out.index:
        is_rate = "Rate" in row
        out.loc[row] = [round(float(v), decimals) if is_rate else int(v) for v in table.loc[row]]
    return out


def run_table1(match_paths: dict[str, list[str]], counts_paths: dict[str, str], out_csv: str,
               decimals: int, engine: Engine = Engine()) -> None:
    """Table 1 over every configured dataset, each read from its per-part match tables."""
    con = connect(engine)
    columns = {}
    for name, paths in match_paths.items():
        columns.update(dataset_columns(con, name, paths, read_json(counts_paths[name])))
    write_csv(format_table1(build_table1(columns), decimals), out_csv)


# Table 2 (paper Sec. 4): mean CLIP score under each text-removal setup. Each row is
# (label, score column, which samples). Removal rows cover the images where that removal exists:
# all-text and random-all over images with text; co-embedded and random-co over images with
# co-embedded words (the random controls need a donor with such regions).
TABLE2_ROWS = [
    ("Raw w/o Emb. Text", "s_raw", "no_text"),
    ("Raw w/ Emb. Text", "s_raw", "text"),
    ("Random All-Emb. Text Removal", "s_rand_all", "text"),
    ("All-Emb. Text Removal", "s_all", "text"),
    ("Raw w/ Co-Emb. Text", "s_raw", "parrot"),
    ("Random Co-Emb. Text Removal", "s_rand_co", "parrot"),
    ("Co-Emb. Text Removal", "s_co", "parrot"),
]
# The row selections of processed samples: without text, with text, parroted (an undefined flag
# counts as false).
TABLE2_GROUPS = {
    "no_text": "status = 'ok' AND NOT coalesce(has_text, false)",
    "text": "status = 'ok' AND coalesce(has_text, false)",
    "parrot": "status = 'ok' AND coalesce(is_parrot, false)",
}


STD_IMAGES, STD_CLUSTERS = "std (per image)", "std (cluster means)"


def build_table2(con, index_paths: list[str], scorers: list[str], assign_paths: list[str] | None = None
                 ) -> pd.DataFrame:
    """Mean, count and spread of S per setup (rows) and scorer (column groups): one aggregate
    query over the index parts.

    Two spreads, because the paper's "±" (0.005-0.02) is far below the per-image spread of CLIP
    scores and is more likely a spread across clusters: ``std (per image)`` (population) and, when
    the cluster assignment parts are given, ``std (cluster means)``: the population std of the
    per-cluster mean S over the clusters that hold images of the row.
    """
    selects, names = [], []
    for label, column, group in TABLE2_ROWS:
        for scorer in scorers:
            value, where = number(f"{scorer}.{column}"), TABLE2_GROUPS[group]
            selects += [f"avg({value}) FILTER (WHERE {where})", f"stddev_pop({value}) FILTER (WHERE {where})",
                        f"count({value}) FILTER (WHERE {where})"]
            names += [(label, f"{scorer} mean"), (label, f"{scorer} {STD_IMAGES}"), (label, f"{scorer} n")]
    values = one_row(con, f"SELECT {', '.join(selects)} FROM {parquet_source(index_paths)}")
    rows: dict[str, dict] = {label: {} for label, _, _ in TABLE2_ROWS}
    for (label, name), value in zip(names, values):
        rows[label][name] = int(value) if name.endswith(" n") else float("nan") if value is None else float(value)
    if assign_paths:
        for label, spreads in cluster_spreads(con, index_paths, assign_paths, scorers).items():
            rows[label].update(spreads)
    table = pd.DataFrame.from_dict(rows, orient="index")
    order = [f"{s} {c}" for s in scorers for c in ("mean", STD_IMAGES, STD_CLUSTERS, "n")]
    table = table[[c for c in order if c in table.columns]]
    table.index.name = "setup"
    return table


def cluster_spreads(con, index_paths: list[str], assign_paths: list[str], scorers: list[str]
                    ) -> dict[str, dict[str, float]]:
    """Per Table 2 row and scorer, the population std of the per-cluster means of S (images joined
    to their cluster by key; clusters without a defined S in the row are left out)."""
    means, outer, names = [], [], []
    for label, column, group in TABLE2_ROWS:
        for scorer in scorers:
            alias = f"m{len(names)}"
            means.append(f"avg({number(f'{scorer}.{column}')}) FILTER (WHERE {TABLE2_GROUPS[group]}) AS {alias}")
            outer.append(f"stddev_pop({alias})")
            names.append((label, f"{scorer} {STD_CLUSTERS}"))
    values = one_row(con, f"""
        SELECT {', '.join(outer)} FROM (
            SELECT a.cluster, {', '.join(means)}
            FROM {parquet_source(index_paths)} i JOIN {parquet_source(assign_paths)} a USING ({sql_name('__key__')})
            GROUP BY a.cluster)""")
    spreads: dict[str, dict[str, float]] = {}
    for (label, name), value in zip(names, values):
        spreads.setdefault(label, {})[name] = float("nan") if value is None else float(value)
    return spreads


RELATIVE_SCORES = {
    "RSA = S(raw) − S(all removed)": ("s_raw", "s_all"),
    "RSC = S(raw) − S(co removed)": ("s_raw", "s_co"),
    "S(co removed) − S(all removed)": ("s_co", "s_all"),
}


def histogram(con, index_paths: list[str], expr: str, n_bins: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """(edges, counts) of ``expr`` over its defined values, ``n_bins`` equal bins from its
    minimum to its maximum (numpy's rule, the last bin closed), computed by the engine."""
    source = parquet_source(index_paths)
    lo, hi, n = one_row(con, f"SELECT min(v), max(v), count(v) FROM (SELECT {expr} AS v FROM {source})")
    if not n:
        return np.array([]), np.array([])
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5  # numpy's widening of a zero range
    width = (hi - lo) / n_bins
    rows = con.execute(f"""
        SELECT least(CAST(floor((v - ?) / ?) AS BIGINT), ?) AS bin, count(*)
        FROM (SELECT {expr} AS v FROM {source}) WHERE v IS NOT NULL GROUP BY bin""",
                       [lo, width, n_bins - 1]).fetchall()
    counts = np.zeros(n_bins, dtype=np.int64)
    for b, k in rows:
        counts[int(b)] += k
    return np.linspace(lo, hi, n_bins + 1), counts


def plot_relative_scores(con, index_paths: list[str], scorers: list[str], out_png: str) -> None:
    """Fig. 5 (right): distributions of S(raw)-S(all), S(raw)-S(co) and S(co)-S(all) per scorer,
    binned by the engine (the values never leave it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import atomic_path

    fig, axes = plt.subplots(1, len(scorers), figsize=(5.5 * len(scorers), 4), squeeze=False)
    for ax, scorer in zip(axes[0], scorers):
        for label, (a, b) in RELATIVE_SCORES.items():
            edges, counts = histogram(con, index_paths, f"{number(f'{scorer}.{a}')} - {number(f'{scorer}.{b}')}")
            if counts.sum():
                ax.stairs(counts, edges, fill=True, alpha=0.5, label=f"{label} (n={int(counts.sum())})")
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel("relative CLIP score")
        ax.set_ylabel("images")
        ax.set_title(f"scorer {scorer}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def run_table2(index_paths: list[str], scorers: list[str], out_csv: str, out_png: str, decimals: int,
               engine: Engine = Engine(), assign_paths: list[str] | None = None) -> None:
    con = connect(engine)
    write_csv(build_table2(con, index_paths, scorers, assign_paths).round(decimals), out_csv)
    plot_relative_scores(con, index_paths, scorers, out_png)


# Tables 3-6 (paper Sec. 6): per curated subset and architecture, the DataComp-style columns
# (IN = the ImageNet group, Ret. = Retrieval, Avg. = mean over every task) from clip-benchmark and
# the synthetic-text measures; on the embedded default IN is the demo's concept zero-shot set.
CURATION_GROUPS = {"IN": "ImageNet", "Ret.": "Retrieval", "Avg.": "Average"}
SYNC_COLUMNS = {"Sync. Score": "sync_score_mean", "Sync. std": "sync_score_std",
                "sync gap": "sync_gap_mean", "word acc.": "word_accuracy"}


def _number(value) -> float:
    """A JSON measure as a float; null (undefined) becomes NaN."""
    return float("nan") if value is None else float(value)


def curation_row(evals: dict[str, dict], syncs: dict[str, dict], stats: dict) -> dict[str, float]:
    """One subset's row: per architecture (keys of ``evals``) the group values and sync measures."""
    row: dict[str, float] = {"Avg. S(raw)": _number(stats.get("mean_s_raw")),
                             "samples": int(stats["n_selected"]), "eligible": int(stats["n_eligible"])}
    for arch, result in evals.items():
        for column, group in CURATION_GROUPS.items():
            row[f"{arch} {column}"] = _number(result["groups"].get(group, {}).get("value"))
        for column, key in SYNC_COLUMNS.items():
            row[f"{arch} {column}"] = _number(syncs[arch].get(key))
    return row


def per_seed(values: Sequence, n_seeds: int, seed: int) -> list:
    """The entries of one seed from a list ordered model-major then seed (``trained_models``)."""
    return list(values[seed::n_seeds])


def over_seeds(tables: Sequence[pd.DataFrame], measured: Sequence[str]) -> pd.DataFrame:
    """One table from the same table built once per training seed: each ``measured`` column is
    the mean over seeds with its sample standard deviation in a ``<column> seed std`` column beside
    it; the other columns (the selection's, the same for every seed) are taken as they are.

    One seed gives that table unchanged: no spread to show. NaN (an undefined measure) in any
    seed makes the mean NaN rather than a mean over the seeds that happened to define it."""
    if len(tables) == 1:
        return tables[0]
    stacked = pd.concat(tables, keys=range(len(tables)))
    grouped = stacked.groupby(level=1, sort=False)
    out = tables[0].copy()
    columns = []
    for column in tables[0].columns:
        columns.append(column)
        if column in measured:
            out[column] = grouped[column].apply(lambda v: v.mean(skipna=False))
            out[f"{column} seed std"] = grouped[column].apply(lambda v: v.std(ddof=1, skipna=False))
            columns.append(f"{column} seed std")
    out = out[columns]
    out.insert(len(columns), "seeds", len(tables))
    return out


def measured_columns(table: pd.DataFrame, archs: Sequence[str]) -> list[str]:
    """The columns a trained CLIP measured (``<arch> ...``), as opposed to the subset's own."""
    return [c for c in table.columns if any(c.startswith(f"{arch} ") for arch in archs)]


def curation_tables_by_seed(subsets: list[str], archs: list[str], evals: list[dict], syncs: list[dict],
                            stats: list[dict], n_seeds: int = 1) -> list[pd.DataFrame]:
    """The curation table once per training seed, rows in ``subsets`` order; ``evals``/``syncs``
    are subset-major over ``archs``, then over the ``n_seeds`` training seeds."""
    tables = []
    for seed in range(n_seeds):
        own_evals, own_syncs = per_seed(evals, n_seeds, seed), per_seed(syncs, n_seeds, seed)
        rows = {}
        for i, subset in enumerate(subsets):
            own = slice(i * len(archs), (i + 1) * len(archs))
            rows[subset] = curation_row(dict(zip(archs, own_evals[own])), dict(zip(archs, own_syncs[own])), stats[i])
        table = pd.DataFrame.from_dict(rows, orient="index")
        table.index.name = "subset"
        if table["Avg. S(raw)"].isna().all():  # criteria on text only (Tables 3-4): no scores read
            table = table.drop(columns="Avg. S(raw)")
        tables.append(table)
    return tables


def build_curation_table(subsets: list[str], archs: list[str], evals: list[dict], syncs: list[dict],
                         stats: list[dict], n_seeds: int = 1) -> pd.DataFrame:
    """Rows in ``subsets`` order (:func:`curation_tables_by_seed`); more than one seed: mean and
    std over seeds (:func:`over_seeds`)."""
    return seed_means(curation_tables_by_seed(subsets, archs, evals, syncs, stats, n_seeds), archs)


def seed_means(tables: Sequence[pd.DataFrame], archs: Sequence[str]) -> pd.DataFrame:
    """The per-seed curation tables as one: each CLIP's measure its mean over seeds (:func:`over_seeds`)."""
    return over_seeds(tables, measured_columns(tables[0], archs))


def seed_rows(tables: Sequence[pd.DataFrame], seeds: Sequence[int]) -> pd.DataFrame:
    """One row per (subset, training seed), subsets in table order: each seed's own numbers, so
    that a claim can be checked seed by seed rather than on the means alone."""
    stacked = pd.concat(tables, keys=list(seeds), names=["seed"]).reset_index()
    order = {subset: i for i, subset in enumerate(tables[0].index)}
    stacked = stacked.sort_values("subset", key=lambda s: s.map(order), kind="stable")
    return stacked.set_index(["subset", "seed"])


#: Share of a row's subset also chosen for the next row. The paper's thresholds are nested
#: (CoTR >= 0.3 holds CoTR >= 0.5), so two rows compare different data only where this is small.
SHARED_COLUMN = "shared with next"


def neighbour_shares(key_paths: Sequence[str]) -> list[float]:
    """Per row, the share of its subset's keys (``keys.parquet``) that the next row's subset also
    holds; NaN for the last row (no next row) and for an empty subset."""
    con = connect()
    shares = []
    for this, after in zip(key_paths, key_paths[1:]):
        shared, n = one_row(con, f"""
            SELECT count(*) FILTER (WHERE b.__key__ IS NOT NULL), count(*)
            FROM {parquet_source([this])} a LEFT JOIN (SELECT DISTINCT __key__ FROM {parquet_source([after])}) b
            USING (__key__)""")
        shares.append(shared / n if n else math.nan)
    return [*shares, math.nan] if key_paths else []


def run_curation_table(subsets: list[str], archs: list[str], eval_paths: list[str], sync_paths: list[str],
                       stats_paths: list[str], key_paths: list[str], out_csv: str, decimals: int,
                       seeds: Sequence[int] = (0,), out_seeds_csv: str | None = None) -> None:
    """Tables 3-6 (:func:`build_curation_table` over the training ``seeds``) with the share of each
    row's samples that the next row's subset also holds, after the selection's own columns; and,
    to ``out_seeds_csv``, each seed's own rows (:func:`seed_rows`)."""
    tables = _subset_table(curation_tables_by_seed, subsets, archs, eval_paths, sync_paths, stats_paths, len(seeds))
    shared = neighbour_shares(key_paths)
    for table in tables:
        table.insert(table.columns.get_loc("eligible") + 1, SHARED_COLUMN, shared)
    write_csv(seed_means(tables, archs).round(decimals), out_csv)
    if out_seeds_csv:
        write_csv(seed_rows(tables, seeds).round(decimals), out_seeds_csv)


def _subset_table(build, subsets: list[str], archs: list[str], eval_paths: list[str], sync_paths: list[str],
                  stats_paths: list[str], n_seeds: int) -> pd.DataFrame:
    """A table of one row per subset, ``build(subsets, archs, evals, syncs, stats, n_seeds)`` from
    the files (evaluations subset-major over ``archs``, then seeds)."""
    return build(subsets, archs, [read_json(p) for p in eval_paths], [read_json(p) for p in sync_paths],
                 [read_json(p) for p in stats_paths], n_seeds)


# Table 10 (paper Sec. 8): the simple fix (parrotscope.filters) against reference models; and the
# filters table: every filter trained and evaluated alike, with the parrot captions it leaves.
TABLE10_GROUPS = {"ImageNet": "IN", "ImageNet dist. shifts": "IN dist. shifts", "VTAB": "VTAB",
                  "Retrieval": "Retrieval", "Average": "Avg."}


def model_label(subset: str, arch: str, archs: Sequence[str]) -> str:
    """A Table 10 column: the subset, and the architecture when several are trained."""
    return subset if len(archs) == 1 else f"{subset} {arch}"


def table10_measures(result: dict, sync: dict) -> dict[str, float]:
    """One model's Table 10 numbers (NaN where undefined), by row label; ``Sync. std`` is the
    spread of its Sync. Score over words, printed inside the Sync. Score cell."""
    values = {"Sync. Score ↓": sync.get("sync_score_mean"), "Sync. std": sync.get("sync_score_std")}
    values.update({label: result["groups"].get(group, {}).get("value") for group, label in TABLE10_GROUPS.items()})
    values["sync gap ↓ (added)"] = sync.get("sync_gap_mean")
    values["word acc. ↓ (added)"] = sync.get("word_accuracy")
    return {label: _number(v) for label, v in values.items()}


def build_table10(models: Sequence[tuple[str, str]], archs: Sequence[str], evals: Sequence[dict],
                  syncs: Sequence[dict], samples: Sequence[int], dataset: str, decimals: int,
                  n_seeds: int = 1) -> pd.DataFrame:
    """The paper's Table 10: one column per (subset, arch) model, rows Data, Sync. Score (mean ±
    std over words, lower = reads less), the DataComp groups that any model has, and two rows the
    paper does not print: the sync gap and word accuracy (the raw Sync. Score of tiny from-scratch
    models is not comparable between them; the gap is, see NOTES.md).

    ``evals``/``syncs``: model-major, then ``n_seeds`` training seeds. With several seeds each
    number is the mean over seeds and a ``<row> seed std`` row under it gives their spread."""
    def fmt(x) -> str:
        return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{float(x):.{decimals}f}"

    columns: dict[str, dict[str, str]] = {}
    for i, ((subset, arch), n) in enumerate(zip(models, samples)):
        own = slice(i * n_seeds, (i + 1) * n_seeds)
        per_seed = pd.DataFrame([table10_measures(r, s) for r, s in zip(evals[own], syncs[own])])
        mean, std = per_seed.mean(skipna=False), per_seed.std(ddof=1, skipna=False)
        col = {"Data": f"{n} ({dataset})"}
        for label in per_seed.columns.drop("Sync. std"):
            col[label] = (f"{fmt(mean[label])} ± {fmt(mean['Sync. std'])}" if label == "Sync. Score ↓"
                          else fmt(mean[label]))
            if n_seeds > 1:
                col[f"{label} seed std"] = fmt(std[label])
        columns[model_label(subset, arch, archs)] = col
    table = pd.DataFrame(columns)
    empty = [r for r in TABLE10_GROUPS.values() if (table.loc[r] == "").all()]
    table = table.drop(index=empty + [f"{r} seed std" for r in empty if n_seeds > 1])
    table.index.name = "metric"
    return table


def run_table10(subsets: list[str], archs: list[str], eval_paths: list[str], sync_paths: list[str],
                size_paths: list[str], dataset: str, out_csv: str, decimals: int, n_seeds: int = 1) -> None:
    """Evaluations subset-major over ``archs``, then seeds; ``size_paths`` one per subset: its
    stats.json, or parts.json for the model trained on the whole pool."""
    sizes = [int(read_json(p)["n_selected"]) if p.endswith("stats.json") else count_training_samples(p)
             for p in size_paths]
    models = [(s, a) for s in subsets for a in archs]
    samples = [n for n in sizes for _ in archs]
    table = build_table10(models, archs, [read_json(p) for p in eval_paths], [read_json(p) for p in sync_paths],
                          samples, dataset, decimals, n_seeds)
    write_csv(table, out_csv)


def with_filter_columns(table: pd.DataFrame, subsets: list[str], stats: list[dict]) -> pd.DataFrame:
    """A curation table (per subset, or per subset and seed) with each subset's filter first and
    the shares of text and parrot captions the filter left in it last."""
    shares = pd.DataFrame.from_dict({s: st.get("shares", {}) for s, st in zip(subsets, stats)}, orient="index")
    shares = shares.dropna(axis=1, how="all").astype(float)
    shares.index.name = "subset"
    table = table.join(shares, on="subset")
    table.insert(0, "filter", [method_of(s) for s in table.index.get_level_values("subset")])
    return table


def build_filters_table(subsets: list[str], archs: list[str], evals: list[dict], syncs: list[dict],
                        stats: list[dict], n_seeds: int = 1) -> pd.DataFrame:
    """Tables 3-6's columns per filter subset (:func:`build_curation_table`, over seeds), plus the
    shares of text and parrot captions each filter left in its subset."""
    return with_filter_columns(build_curation_table(subsets, archs, evals, syncs, stats, n_seeds), subsets, stats)


def run_filters_table(subsets: list[str], archs: list[str], eval_paths: list[str], sync_paths: list[str],
                      stats_paths: list[str], out_csv: str, decimals: int, seeds: Sequence[int] = (0,),
                      out_seeds_csv: str | None = None) -> None:
    """The filters table over the training ``seeds``; to ``out_seeds_csv`` each seed's own rows."""
    # The stats are read once: the rows and the filter columns both need them.
    stats = [read_json(p) for p in stats_paths]
    tables = curation_tables_by_seed(subsets, archs, [read_json(p) for p in eval_paths],
                                     [read_json(p) for p in sync_paths], stats, len(seeds))
    write_csv(with_filter_columns(seed_means(tables, archs), subsets, stats).round(decimals), out_csv)
    if out_seeds_csv:
        write_csv(with_filter_columns(seed_rows(tables, seeds), subsets, stats).round(decimals), out_seeds_csv)


# --- the CLIP4STR transfer table (stage `str`) ---


STR_MEASURES = ("visual", "refined", "zero-shot")


def build_str_table(entries: list[dict]) -> pd.DataFrame:
    """One row per source CLIP (source, arch); per benchmark the word accuracy of the visual branch
    alone, after predict-and-refine, and of the zero-shot probe. ``entries``: dicts with
    ``source``, ``arch``, ``benchmark``, ``eval`` (metrics dict), ``probe`` (metrics dict) and
    ``seed`` (the source CLIP's training seed; optional). With several seeds each accuracy is the
    mean over seeds with a ``seed std`` column beside it, as in the curation tables."""
    seeds = list(dict.fromkeys(e.get("seed", 0) for e in entries))
    tables = [_str_table_of_seed([e for e in entries if e.get("seed", 0) == seed]) for seed in seeds]
    measured = [c for c in tables[0].columns if c.rsplit(" ", 1)[-1] in STR_MEASURES]
    return over_seeds(tables, measured)


def _str_table_of_seed(entries: list[dict]) -> pd.DataFrame:
    rows: dict[tuple[str, str], dict] = {}
    for e in entries:
        row = rows.setdefault((e["source"], e["arch"]), {"source": e["source"], "arch": e["arch"]})
        b = e["benchmark"]
        row[f"{b} visual"] = e["eval"]["acc_visual"]
        row[f"{b} refined"] = e["eval"]["acc_refined"]
        row[f"{b} zero-shot"] = e["probe"]["acc_probe"]
        row[f"{b} n"] = e["eval"]["processed"]
    return pd.DataFrame(list(rows.values()))


def run_str_table(entries: list[dict], out_csv: str, decimals: int = 4) -> pd.DataFrame:
    """:func:`build_str_table` from metric files: entries carry ``eval`` and ``probe`` as paths."""
    loaded = [{**e, "eval": read_json(e["eval"]), "probe": read_json(e["probe"])} for e in entries]
    table = build_str_table(loaded).round(decimals)
    write_csv(table, out_csv, index=False)
    return table


# --- Table 7: BLIP -----------------------------------------------------------------------------

READING_MARK = " (reading)"  # the paper greys the columns of tasks that need reading


def table7_column(column: str, dataset: str) -> str:
    """A Table 7 column's name, marked when its set needs reading."""
    from .blip_data import READING_SETS

    return column + (READING_MARK if dataset in READING_SETS else "")


def build_table7(entries: list[dict], subsets: Sequence[str]) -> pd.DataFrame:
    """One row per pre-training subset, the paper's columns (VQA accuracy, CIDEr, R@1 both ways;
    x100 as the paper prints them). ``entries``: dicts with ``subset``, ``seed``, ``task``,
    ``set``, ``eval`` (metrics dict) and ``train`` (the pre-training's JSON). With several seeds
    each column is the mean over seeds with a ``seed std`` column beside it."""
    from .blip_data import TABLE7_COLUMNS

    seeds = list(dict.fromkeys(e["seed"] for e in entries))
    scores = {(e["subset"], e["seed"], e["task"], e["set"]): e["eval"] for e in entries}
    samples = {(e["subset"], e["seed"]): e["train"]["n_samples"] for e in entries}
    measured = [table7_column(c, name) for c, _, name, _ in TABLE7_COLUMNS]
    tables = []
    for seed in seeds:
        rows = []
        for subset in subsets:
            row = {"subset": subset, "pre-training samples": samples[(subset, seed)]}
            for (column, task, name, metric), label in zip(TABLE7_COLUMNS, measured):
                row[label] = scores[(subset, seed, task, name)][metric]
            rows.append(row)
        tables.append(pd.DataFrame(rows))
    return over_seeds(tables, measured)


def run_table7(entries: list[dict], out_csv: str, decimals: int = 4) -> pd.DataFrame:
    """:func:`build_table7` from the metric files named by ``entries``."""
    loaded = [{**e, "eval": read_json(e["eval"]), "train": read_json(e["train"])} for e in entries]
    subsets = list(dict.fromkeys(e["subset"] for e in entries))
    table = build_table7(loaded, subsets).round(decimals)
    write_csv(table, out_csv, index=False)
    return table


# --- several study datasets ----------------------------------------------------------------------


def side_by_side(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One study table of several datasets: each dataset's rows in its order, a ``dataset`` column
    first (the paper's supplement repeats Tables 2-3 on CC12M as Tables 11-12). Columns missing for
    a dataset stay empty."""
    if not tables:
        raise ValueError("side_by_side needs at least one dataset's table")
    parts = []
    for dataset, table in tables.items():
        part = table.reset_index()
        part.insert(0, "dataset", dataset)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def run_side_by_side(paths: Sequence[str], datasets: Sequence[str], out_csv: str) -> None:
    """Read each dataset's table (first column = row names) and write them side by side."""
    if len(paths) != len(datasets):
        raise ValueError(f"{len(paths)} tables for {len(datasets)} datasets")
    write_csv(side_by_side({d: pd.read_csv(p, index_col=0) for d, p in zip(datasets, paths)}), out_csv, index=False)
