"""How far the CLIP score moves between fp32 and bf16 autocast (issue 19's `score.precision`), on the
same pairs, and whether that moves images across Tables 5-6's RSA/RSC thresholds.

Run on demand, on a finished run's results (the parts' samples, shards and inpainted tars, and the
reference CLIP's checkpoint):

    .venv/bin/python bench/score_precision.py --results /path/to/run --parts p00000 p00001

Both precisions score the raw pairs and every removal setup of the parts with the same weights
(`score_part`, the score stage's own code). bf16 autocast runs on CPU too (slower than fp32 there:
the default on CPU stays fp32), and it rounds the same operations as on a GPU, so the differences
measured here are the ones a GPU run's bf16 default brings, up to the kernels' own orders of
summation. Written under `## score precision` in docs/BENCHMARKS.md unless --no-write.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import datetime
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from parrotscope.io import read_parquet
from parrotscope.score import load_scorer, score_part

from benchdoc import add_common_arguments, publish

ROOT = Path(__file__).resolve().parents[1]
SECTION = "score precision"
SETUPS = ("all", "co", "rand_all", "rand_co")


def band(values: pd.Series, thresholds: list[float]) -> np.ndarray:
    """The threshold band of each value (NaN stays NaN's own band, -1)."""
    out = np.searchsorted(np.asarray(thresholds), values.to_numpy(), side="right")
    return np.where(values.isna(), -1, out)


def compare(results: Path, dataset: str, parts: list[str], spec: dict, method: str, thresholds: list[float],
            batch_size: int) -> dict:
    """fp32 and bf16 score tables of the parts, joined by key; the spread of their differences."""
    shards = json.loads((results / "results" / dataset / "parts.json").read_text())["parts"]
    tables = {}
    for precision in ("fp32", "bf16"):
        scorer = load_scorer(spec, "cpu", precision)
        per_part = []
        for part in parts:
            inpainted = {m: str(results / "results" / dataset / "inpaint" / method / m / f"{part}.tar") for m in SETUPS}
            samples = read_parquet(str(results / "results" / dataset / "samples" / f"{part}.parquet"))
            per_part.append(score_part(scorer, samples, [str(results / s) for s in shards[part]["shards"]],
                                       inpainted, batch_size, 10**9))
        tables[precision] = pd.concat(per_part, ignore_index=True).set_index("__key__")
    a, b = tables["fp32"], tables["bf16"].loc[tables["fp32"].index]
    row = {"pairs": int(a["s_raw"].notna().sum()), "images with text": int(a["s_all"].notna().sum())}
    diff = (a["s_raw"] - b["s_raw"]).abs()
    row["S max abs diff"] = float(diff.max())
    row["S mean abs diff"] = float(diff.mean())
    row["std of S"] = float(a["s_raw"].std())
    row["S rank correlation"] = float(a["s_raw"].rank().corr(b["s_raw"].rank()))
    for column in ("rsa", "rsc"):
        d = (a[column] - b[column]).abs()
        row[f"{column.upper()} max abs diff"] = float(d.max())
        row[f"{column.upper()} band changed"] = float((band(a[column], thresholds) != band(b[column], thresholds))[
            a[column].notna().to_numpy()].mean())
    return row


def markdown(row: dict, args, spec: dict) -> str:
    lines = [f"## {SECTION}", "",
             f"Measured {datetime.date.today().isoformat()} by `bench/score_precision.py`: the reference CLIP "
             f"(`{spec['arch']}`, {spec['checkpoint']}) scores dataset `{args.dataset}`, parts "
             f"{', '.join(args.parts)} of the run in `{args.results.name}`, raw and after each text removal "
             f"({args.method}), once in fp32 and once under bf16 autocast, torch {torch.__version__} on CPU. "
             f"*band changed*: the share of text images whose RSA (RSC) falls in another band of Tables 5-6's "
             f"thresholds {args.thresholds}.", "",
             "| " + " | ".join(row) + " |", "|" + "---:|" * len(row),
             "| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()) + " |"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, required=True, help="the run's working directory")
    parser.add_argument("--dataset", default="demo")
    parser.add_argument("--parts", nargs="+", default=["p00000"])
    parser.add_argument("--checkpoint", default="results/models/demo/pool/tiny-rn/seed0/checkpoint.pt")
    parser.add_argument("--arch", default="tiny-rn")
    parser.add_argument("--method", default="telea")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.0, 0.3, 0.6, 0.9])
    parser.add_argument("--batch-size", type=int, default=128)
    add_common_arguments(parser, ROOT, shards=False)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    spec = {"name": "ref", "arch": args.arch, "checkpoint": str(args.results / args.checkpoint)}
    row = compare(args.results, args.dataset, args.parts, spec, args.method, args.thresholds, args.batch_size)
    spec["checkpoint"] = args.checkpoint
    publish(f"## {SECTION}", markdown(row, args, spec), args)


if __name__ == "__main__":
    main()
