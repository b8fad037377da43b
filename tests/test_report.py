"""HTML renderings of the tables for the Snakemake report."""

import pandas as pd

from parrotscope.report import run_table_html, table_html


def test_table_html_shows_every_cell_and_escapes_text(tmp_path):
    table = pd.DataFrame({"demo (spotted)": [24, 0.3751], "note": ["<b>x</b>", "a & b"]},
                         index=pd.Index(["Num. of Total Img.", "Rate"], name="statistic"))
    page = table_html(table, "Table 1 <test>", "data: results/table1.csv")
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert "Table 1 &lt;test&gt;" in page and "&lt;b&gt;x&lt;/b&gt;" in page and "a &amp; b" in page
    for cell in ("Num. of Total Img.", "demo (spotted)", "24", "0.3751", "statistic"):
        assert cell in page


def test_run_table_html_reads_the_csv(tmp_path):
    csv = tmp_path / "table2.csv"
    pd.DataFrame({"setup": ["Raw w/ Emb. Text"], "ref mean": [0.6492]}).to_csv(csv, index=False)
    run_table_html(str(csv), "Table 2", str(tmp_path / "out" / "table2.html"))
    page = (tmp_path / "out" / "table2.html").read_text()
    assert "Raw w/ Emb. Text" in page and "0.6492" in page and f"data: {csv}" in page
