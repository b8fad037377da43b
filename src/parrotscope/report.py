"""HTML renderings of the workflow's CSV tables for the Snakemake report.

Snakemake's report shows images and HTML inline but offers CSV files only as downloads; a curator
should read Tables 1-6 and the cluster profile in the report itself. Each table is rendered once,
as a small self-contained HTML page (no scripts, no external files) with the caption text above it.
"""

from __future__ import annotations

import html

import pandas as pd

from .io import write_text

STYLE = """
body { font-family: "DejaVu Sans", Arial, sans-serif; font-size: 13px; margin: 12px; color: #222; }
h1 { font-size: 16px; } p.source { color: #666; }
table { border-collapse: collapse; } th, td { padding: 3px 8px; border-bottom: 1px solid #ddd; }
th { background: #f3f3f3; text-align: left; position: sticky; top: 0; }
td { text-align: right; font-variant-numeric: tabular-nums; } td:first-child { text-align: left; }
tr:hover td { background: #fafae6; }
"""


def table_html(table: pd.DataFrame, title: str, source: str) -> str:
    """A self-contained HTML page showing ``table`` (its index as the first column)."""
    body = table.to_html(border=0, na_rep="", float_format=lambda v: f"{v:.4g}", escape=True)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
            f"<p class=\"source\">{html.escape(source)}</p>\n{body}\n</body></html>\n")


def run_table_html(csv_path: str, title: str, out_html: str) -> None:
    """Render one CSV table (first column = row labels) for the report."""
    table = pd.read_csv(csv_path, index_col=0)
    write_text(table_html(table, title, f"data: {csv_path}"), out_html)
