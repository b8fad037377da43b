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
    table, whose ``skipped`` rows are the ingest skips carried through.
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
    # A skip reason seen in one dataset only is a count of 0 in the others.
    skip_rows = [r for r in table.index if r.startswith("Skipped: ")]
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
