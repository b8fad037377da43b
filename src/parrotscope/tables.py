"""Stage ``tables``: the paper's tables, computed from the per-sample tables.

Table 1 (paper Sec. 3): how much text the images carry and how much of it the captions parrot.
Rates are means of per-sample CoTR: "in total" over every processed sample (text-free images
count as 0), "in images with embedded text" over those with at least one spotted word.
"""

from __future__ import annotations

import pandas as pd

from .io import read_json, read_parquet, write_csv

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


def table1_stats(match: pd.DataFrame, prefix: str = "") -> dict[str, float]:
    """Table 1's statistics over the processed samples of one dataset.

    ``prefix`` selects the measures: ``""`` for spotted text, ``"gt_"`` for ground truth.
    """
    ok = match[match["status"] == "ok"]
    has_text = ok[f"{prefix}has_text"].astype(bool)
    with_text = ok[has_text]
    n, n_text = len(ok), int(has_text.sum())

    def mean(s: pd.Series) -> float:
        return float(s.mean()) if len(s) else float("nan")

    return {
        "Num. of Total Img.": n,
        "Num. of Img. w/ Emb. Text": n_text,
        "Img. w/ Emb. Text Rate": n_text / n if n else float("nan"),
        "Num. of Img. w/ Co-Emb. Text": int(ok[f"{prefix}is_parrot"].astype(bool).sum()),
        "Co-Emb. Text Rate (in Total)": mean(ok[f"{prefix}cotr"]),
        "Co-Emb. Text Rate (in Img. w/ Emb. Text)": mean(with_text[f"{prefix}cotr"]),
        "Fuzzy Co-Emb. Text Rate (in Total)": mean(ok[f"{prefix}cotr_fuzzy"]),
        "Fuzzy Co-Emb. Text Rate (in Img. w/ Emb. Text)": mean(with_text[f"{prefix}cotr_fuzzy"]),
    }


def accounting_rows(counts: dict, match: pd.DataFrame) -> dict[str, int]:
    """Sample accounting: in = processed + skipped, with every skip reason.

    Ingest skips (duplicates included) come from ``parts.json``; spotting errors from the match
    table, whose ``skipped`` rows are the ingest skips carried through. Shards that ingest recorded
    as truncated or missing are rows only where there are some, so a clean dataset's rows stay
    as they were.
    """
    status = match["status"]
    n_spot_errors = int((status == "error").sum())
    rows = {
        "Samples in": counts["samples_in"],
        "Samples processed": int((status == "ok").sum()),
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


def build_table1(datasets: dict[str, dict]) -> pd.DataFrame:
    """One column per dataset (spotted), plus a ground-truth column where the data has it.

    ``datasets`` maps name -> {"match": DataFrame, "counts": parts.json dict}.
    """
    columns = {}
    for name, d in datasets.items():
        match, counts = d["match"], d["counts"]
        acc = accounting_rows(counts, match)
        columns[f"{name} (spotted)"] = {**table1_stats(match), **acc}
        if "gt_cotr" in match.columns and match.loc[match["status"] == "ok", "gt_cotr"].notna().all():
            columns[f"{name} (ground truth)"] = {**table1_stats(match, "gt_"), **acc}
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
               decimals: int) -> None:
    datasets = {
        name: {"match": pd.concat([read_parquet(p) for p in paths], ignore_index=True),
               "counts": read_json(counts_paths[name])}
        for name, paths in match_paths.items()
    }
    write_csv(format_table1(build_table1(datasets), decimals), out_csv)


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


def table2_groups(index: pd.DataFrame) -> dict[str, pd.Series]:
    """Boolean row selections of the processed samples: without text, with text, parroted."""
    ok = index["status"] == "ok"
    has_text = index["has_text"].fillna(False).astype(bool)
    parrot = index["is_parrot"].fillna(False).astype(bool)
    return {"no_text": ok & ~has_text, "text": ok & has_text, "parrot": ok & parrot}


def build_table2(index: pd.DataFrame, scorers: list[str]) -> pd.DataFrame:
    """Mean, std and count of S per setup (rows) and scorer (column groups)."""
    groups = table2_groups(index)
    rows = {}
    for label, column, group in TABLE2_ROWS:
        row = {}
        for scorer in scorers:
            values = pd.to_numeric(index.loc[groups[group], f"{scorer}.{column}"], errors="coerce").dropna()
            row[f"{scorer} mean"] = float(values.mean()) if len(values) else float("nan")
            row[f"{scorer} std"] = float(values.std(ddof=0)) if len(values) else float("nan")
            row[f"{scorer} n"] = int(len(values))
        rows[label] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "setup"
    return table


def plot_relative_scores(index: pd.DataFrame, scorers: list[str], out_png: str) -> None:
    """Fig. 5 (right): distributions of S(raw)-S(all), S(raw)-S(co) and S(co)-S(all) per scorer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import atomic_path

    fig, axes = plt.subplots(1, len(scorers), figsize=(5.5 * len(scorers), 4), squeeze=False)
    for ax, scorer in zip(axes[0], scorers):
        col = lambda c: pd.to_numeric(index[f"{scorer}.{c}"], errors="coerce")  # noqa: E731
        series = {
            "RSA = S(raw) − S(all removed)": col("s_raw") - col("s_all"),
            "RSC = S(raw) − S(co removed)": col("s_raw") - col("s_co"),
            "S(co removed) − S(all removed)": col("s_co") - col("s_all"),
        }
        for label, values in series.items():
            values = values.dropna()
            if len(values):
                ax.hist(values, bins=40, alpha=0.5, label=f"{label} (n={len(values)})")
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel("relative CLIP score")
        ax.set_ylabel("images")
        ax.set_title(f"scorer {scorer}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def run_table2(index_path: str, scorers: list[str], out_csv: str, out_png: str, decimals: int) -> None:
    index = read_parquet(index_path)
    write_csv(build_table2(index, scorers).round(decimals), out_csv)
    plot_relative_scores(index, scorers, out_png)


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


def build_curation_table(subsets: list[str], archs: list[str], evals: list[dict], syncs: list[dict],
                         stats: list[dict]) -> pd.DataFrame:
    """Rows in ``subsets`` order; ``evals``/``syncs`` are subset-major over ``archs``."""
    rows = {}
    for i, subset in enumerate(subsets):
        own = slice(i * len(archs), (i + 1) * len(archs))
        rows[subset] = curation_row(dict(zip(archs, evals[own])), dict(zip(archs, syncs[own])), stats[i])
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "subset"
    if table["Avg. S(raw)"].isna().all():  # criteria on text only (Tables 3-4): no scores read
        table = table.drop(columns="Avg. S(raw)")
    return table


def run_curation_table(subsets: list[str], archs: list[str], eval_paths: list[str], sync_paths: list[str],
                       stats_paths: list[str], out_csv: str, decimals: int) -> None:
    table = build_curation_table(subsets, archs, [read_json(p) for p in eval_paths],
                                 [read_json(p) for p in sync_paths], [read_json(p) for p in stats_paths])
    write_csv(table.round(decimals), out_csv)
