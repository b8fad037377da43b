"""How the Tables 4-6 pool (demo_mix) spreads CoTR, RSA and RSC over the tables' thresholds.

The rows of Tables 4-6 are nested (CoTR >= 0.3 holds CoTR >= 0.5, ...). A row's subset is a
uniform draw from its eligible images, so it shares about |next row's pool| / |this row's pool|
of its images with the next row's subset: two rows train on different data only where each band
between thresholds holds more images than everything above it (a share under 0.5).

Two measurements, printed as one section of docs/EXPERIMENTS.md:

* ``VARIANT=YAML`` (any number): the ground-truth CoTR of a generator variant's text images, from
  the generator itself (no OCR, seconds): YAML overrides merged over ``--base`` (default: the
  embedded default's demo_mix generator), e.g. ``v1='{n_shards: 6, caption_exact_prob: 0.05}'``.
* ``--index NAME=DIR`` (any number): a run's per-part index of the pool (``results/demo_mix/index``):
  spotted CoTR, and RSA and RSC of ``--scorer`` at the paper's thresholds (0.1 steps) and at
  ``--steps`` (the embedded default's 0.25).

``--heading`` records a run under a section of its own, keeping the earlier sections.

    python bench/caption_mix.py --index final=RUN/results/demo_mix/index final='{}'
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from benchdoc import publish  # noqa: E402

HEADING = "## Tables 4-6 pool"
COTR_THRESHOLDS = (0.3, 0.5, 0.8, 1.0)  # Table 4's nested rows (CoTR = 0 is a row of its own)


def truth_cotrs(generator: dict) -> np.ndarray:
    """Ground-truth CoTR of every text image of the pool ``generator`` writes (the samples of
    :func:`parrotscope.demo.pool.shard_samples`, without writing the tars)."""
    from parrotscope.demo import cotr, demo_config
    from parrotscope.demo.pool import shard_samples

    cfg = demo_config(generator)
    return np.asarray([cotr(sample["txt"], sample["json"]["truth"]["words"])
                       for shard in range(int(cfg["n_shards"])) for _, sample in shard_samples(cfg, shard)
                       if sample["json"]["truth"]["has_text"]])


def nested_counts(values: np.ndarray, thresholds, below: str) -> dict:
    """Images under the first threshold (``below``), at or above each threshold, and the share of
    each row's pool that the next row's pool holds."""
    counts = [int((values >= t - 1e-9).sum()) for t in thresholds]
    return {below: int((values < thresholds[0]).sum()),
            **{f">= {t:g}": n for t, n in zip(thresholds, counts)},
            **{f"share {t:g}": round(m / n, 2) if n else float("nan")
               for t, n, m in zip(thresholds, counts, counts[1:])}}


def cotr_row(name: str, values: np.ndarray) -> dict:
    return {"pool": name, "text images": len(values), "= 0": int((values == 0).sum()),
            **nested_counts(values, COTR_THRESHOLDS, "< 0.3")}


def index_measures(index_dir: Path, scorer: str) -> pd.DataFrame:
    files = sorted(index_dir.glob("*.parquet"))
    if not files:
        raise SystemExit(f"no parquet parts in {index_dir}")
    columns = ["has_text", "cotr", f"{scorer}.rsa", f"{scorer}.rsc"]
    index = pd.concat(pd.read_parquet(f, columns=columns) for f in files)
    return index[index["has_text"].fillna(False).astype(bool)]


def markdown(rows: list[dict]) -> str:
    return pd.DataFrame(rows).to_markdown(index=False)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="*", help="NAME=YAML generator overrides")
    parser.add_argument("--base", default="demo_mix", help="dataset of config.yaml whose generator variants modify")
    parser.add_argument("--index", action="append", default=[], help="NAME=DIR of a run's pool index")
    parser.add_argument("--scorer", default="ref")
    parser.add_argument("--steps", type=float, default=0.25, help="the RSA/RSC threshold step besides 0.1")
    parser.add_argument("--heading", default=HEADING, help="the docs section (a '## ...' line) to write")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/EXPERIMENTS.md")
    parser.add_argument("--no-write", action="store_true", help="print the section only")
    args = parser.parse_args(argv)

    base = yaml.safe_load((ROOT / "config.yaml").read_text())["datasets"][args.base]["generator"]
    truth = []
    for spec in args.variants:
        name, _, overrides = spec.partition("=")
        truth.append(cotr_row(name, truth_cotrs({**base, **(yaml.safe_load(overrides) or {})})))
    spotted, relative = [], []
    for spec in args.index:
        name, _, folder = spec.partition("=")
        index = index_measures(Path(folder), args.scorer)
        spotted.append(cotr_row(name, index["cotr"].to_numpy()))
        for measure in ("rsa", "rsc"):
            values = index[f"{args.scorer}.{measure}"].dropna().to_numpy()
            for step in sorted({0.1, args.steps}):
                thresholds = [round(k * step, 3) for k in range(4)]
                row = nested_counts(values, thresholds, "< 0")
                relative.append({"pool": name, "measure": measure.upper(), "text images": len(values),
                                 "< 0": row["< 0"], "thresholds": " / ".join(f"{t:g}" for t in thresholds),
                                 "images at or above": " / ".join(str(row[f">= {t:g}"]) for t in thresholds),
                                 "share to next": " / ".join(f"{row[f'share {t:g}']:.2f}" for t in thresholds[:-1])})
    parts = [args.heading, "", f"`python bench/caption_mix.py {' '.join(sys.argv[1:] if argv is None else argv)}`", ""]
    if truth:
        parts += ["Ground-truth CoTR of the text images (generator only):", "", markdown(truth), ""]
    if spotted:
        parts += ["Spotted CoTR of the text images (the run's index):", "", markdown(spotted), ""]
    if relative:
        parts += [f"RSA and RSC of `{args.scorer}` at nested thresholds (0.1 steps: the paper's):", "",
                  markdown(relative), ""]
    publish(args.heading, "\n".join(parts), args)


if __name__ == "__main__":
    main()
