"""Execution at LAION scale: every dataset-wide step on synthetic per-part tables of 1e6-1e8 rows.

Run on demand (not a test; the largest size needs ~30 GB of disk and about an hour on 2 cores):

    .venv/bin/python bench/bench_scale.py                                    # 1M, 10M, 100M rows
    .venv/bin/python bench/bench_scale.py --sizes 1000000 --no-write         # quick look

For each size N the benchmark synthesizes a LAION-shaped dataset in parts of ``--part-rows`` rows
(default 2M: LAION-2B in 460 parts of 500 shards holds ~4.3M per part): the per-part tables of
ingest (captions of LAION's length: 1 + Poisson(9) words from a Zipf vocabulary of 50,000), spot
(55% of images with 1-6 spotted words and their polygons), match (half of the text images parrot
their words), score (S(raw), the four removals, RSA/RSC), the filters' per-part tables and the
cluster assignment; then the index parts are written by the index stage's own per-part function
(:func:`parrotscope.index.run_index_part`), as the per-part jobs do.

Each dataset-wide step then runs as its rule runs it (the same library call with the rule's
engine settings: ``--mem-mb`` of the job, DuckDB gets 60% of it, ``--threads``), in a fresh
process, measuring wall time and peak resident memory (``wait4`` of that process). With
``--old-max`` the pre-DuckDB code (``--old-src``, the library as it was before the data plane,
which concatenated every part into one DataFrame) runs its index, Table 1, Table 2 and selection
on the same data up to that size, for comparison. Results: a markdown table, printed and written
under ``## dataset-wide steps at scale`` in docs/BENCHMARKS.md unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchdoc import add_common_arguments, publish

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## dataset-wide steps at scale"
VOCAB = 50_000
SCORER = "ref"
SUBSET_SHARE = 0.01  # a 1% subset: LAION-2B's 3M-of-2B subsets are 0.15%; 1% stresses the top-N more
SUBSETS = {
    "random": [],
    "text_only": [["has_text", "==", True]],
    "cotr_ge_0.5": [["has_text", "==", True], ["cotr", ">=", 0.5]],
    "rsa_ge_0.1": [["has_text", "==", True], ["{scorer}.rsa", ">=", 0.1]],
}


# --- synthetic LAION-shaped parts ----------------------------------------------------------------


def vocabulary():
    import pyarrow as pa

    return pa.array([f"w{i:05d}" for i in range(VOCAB)])


def zipf_ids(rng, n):
    """Word ids with a Zipf-like frequency (web captions' head-heavy vocabulary)."""
    import numpy as np

    return np.minimum(rng.zipf(1.2, size=n) - 1, VOCAB - 1).astype(np.int32)


def ragged(values, lengths):
    """A list array of ``values`` split into consecutive lists of ``lengths``."""
    import numpy as np
    import pyarrow as pa

    return pa.ListArray.from_arrays(pa.array(offsets_of(lengths).astype(np.int32)), values)


def offsets_of(lengths):
    """Start offsets of consecutive runs of ``lengths`` (and the total at the end)."""
    import numpy as np

    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def spans(starts, lengths):
    """The positions ``starts[i] + 0 .. lengths[i]-1`` of every run, concatenated (vectorised)."""
    import numpy as np

    total = int(lengths.sum())
    run_start = np.repeat(offsets_of(lengths)[:-1], lengths)
    return np.repeat(starts, lengths) + (np.arange(total) - run_start)


def part_tables(part: int, rows: int, seed: int):
    """The per-part stage tables of one synthetic part (pyarrow tables, keyed by ``__key__``)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    rng = np.random.default_rng([seed, part])
    words = vocabulary()
    per_shard = 10_000
    idx = np.arange(rows, dtype=np.int64) + part * rows
    shard_no, within = idx // per_shard, idx % per_shard
    keys = pc.binary_join_element_wise(pc.utf8_lpad(pa.array(shard_no.astype(str)), 6, "0"),
                                       pc.utf8_lpad(pa.array(within.astype(str)), 4, "0"), "")
    shards = pc.binary_join_element_wise(pa.scalar("/data/laion2b/"), pc.utf8_lpad(pa.array(shard_no.astype(str)), 6, "0"),
                                         pa.scalar(".tar"), "")
    ok = rng.random(rows) >= 0.01
    status = pa.array(np.where(ok, "ok", "skipped"))
    error = pa.array(np.where(ok, "", "corrupt_image"))
    cap_len = 1 + rng.poisson(9, rows).astype(np.int32)
    cap_ids = zipf_ids(rng, int(cap_len.sum()))
    cap_words = ragged(words.take(pa.array(cap_ids)), cap_len)
    captions = pc.binary_join(cap_words, " ")
    has_text = ok & (rng.random(rows) < 0.55)
    n_spot = np.where(has_text, rng.integers(1, 7, rows), 0).astype(np.int32)
    parrot = has_text & (rng.random(rows) < 0.5)
    spot_ids = zipf_ids(rng, int(n_spot.sum()))
    # A parrot's first spotted words are its caption's first words: they are co-embedded.
    n_co = np.where(parrot, np.minimum(n_spot, cap_len), 0).astype(np.int32)
    co_ids = cap_ids[spans(offsets_of(cap_len)[:-1], n_co)]
    spot_ids[spans(offsets_of(n_spot)[:-1], n_co)] = co_ids
    co_words = ragged(words.take(pa.array(co_ids)), n_co)
    spotted = ragged(words.take(pa.array(spot_ids)), n_spot)
    polygons = ragged(ragged(pa.array(rng.random(int(n_spot.sum()) * 8) * 224), np.full(int(n_spot.sum()), 8)), n_spot)
    cotr = np.where(ok, n_co / cap_len, np.nan)
    float_or_null = lambda a, mask: pa.array(np.where(mask, a, np.nan), from_pandas=True)  # noqa: E731
    samples = pa.table({
        "__key__": keys, "shard": shards, "status": status, "error": error, "caption": captions,
        "width": pa.array(rng.integers(200, 1200, rows)), "height": pa.array(rng.integers(200, 1200, rows)),
        "mode": pa.array(np.full(rows, "RGB")), "format": pa.array(np.full(rows, "JPEG")),
        "n_bytes": pa.array(rng.integers(5_000, 200_000, rows)), "meta": pa.array(np.full(rows, "{}")),
    })
    spot = pa.table({
        "__key__": keys, "status": pa.array(np.where(ok, "ok", "skipped")), "error": error,
        "width": samples["width"], "height": samples["height"], "words": spotted,
        "word_scores": ragged(pa.array(rng.random(int(n_spot.sum()))), n_spot), "polygons": polygons,
        "n_words": pa.array(n_spot.astype(np.int64)), "text": pc.binary_join(spotted, " "),
        "n_dropped": pa.array(np.zeros(rows, dtype=np.int64)),
    })
    match = pa.table({
        "__key__": keys, "status": pa.array(np.where(ok, "ok", "skipped")), "error": error,
        "n_caption_words": pa.array(cap_len.astype(np.int64)), "n_ocr_words": pa.array(n_spot.astype(np.int64)),
        "co_words": co_words, "cotr": float_or_null(cotr, ok), "co_words_fuzzy": co_words,
        "cotr_fuzzy": float_or_null(cotr, ok), "has_text": pa.array(has_text, mask=~ok),
        "is_parrot": pa.array(parrot, mask=~ok), "is_parrot_fuzzy": pa.array(parrot, mask=~ok),
    })
    s_raw = np.clip(rng.normal(0.31, 0.04, rows) + 0.03 * parrot, -1, 1)
    s_all = s_raw - np.where(has_text, rng.normal(0.02, 0.03, rows) + 0.04 * parrot, np.nan)
    s_co = s_raw - np.where(parrot, rng.normal(0.05, 0.03, rows), np.nan)
    s_rand_all = s_raw - np.where(has_text, rng.normal(0.005, 0.02, rows), np.nan)
    s_rand_co = s_raw - np.where(parrot, rng.normal(0.005, 0.02, rows), np.nan)
    score = pa.table({
        "__key__": keys, "status": status,
        **{name: float_or_null(values, ok & ~np.isnan(values)).cast(pa.float32()) for name, values in {
            "s_raw": s_raw, "s_all": s_all, "s_co": s_co, "s_rand_all": s_rand_all, "s_rand_co": s_rand_co,
            "rsa": s_raw - s_all, "rsc": s_raw - s_co, "rsa_rand": s_raw - s_rand_all,
            "rsc_rand": s_raw - s_rand_co}.items()},
    })
    assign = pa.table({"__key__": keys.filter(pa.array(ok)),
                       "cluster": pa.array(rng.integers(0, 4000, int(ok.sum())).astype(np.int32)),
                       "distance": pa.array(rng.random(int(ok.sum())).astype(np.float32))})
    return {"samples": samples, "spot": spot, "match": match, f"score/{SCORER}": score,
            f"cluster/{SCORER}/assign": assign}


def synthesize(root: Path, n_rows: int, part_rows: int, seed: int = 0) -> dict:
    """Write the parts (skipped when ``manifest.json`` says they are complete) and the index
    parts; return the manifest (paths per table, row counts, bytes on disk, time taken)."""
    import pyarrow.parquet as pq

    from parrotscope.index import run_index_part
    from parrotscope.io import write_json

    manifest_path = root / "manifest.json"
    if manifest_path.exists():
        return json.loads(manifest_path.read_text())
    shutil.rmtree(root, ignore_errors=True)
    n_parts = math.ceil(n_rows / part_rows)
    start = time.perf_counter()
    paths: dict[str, list[str]] = {}
    index_seconds = []
    total = 0
    for p in range(n_parts):
        rows = min(part_rows, n_rows - p * part_rows)
        part = f"p{p:05d}"
        for table, data in part_tables(p, rows, seed).items():
            path = root / table / f"{part}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(data, path)
            paths.setdefault(table, []).append(str(path))
        total += rows
        t = time.perf_counter()
        for view, scores in (("index", {SCORER: paths[f"score/{SCORER}"][-1]}), ("index_text", {})):
            out = root / view / f"{part}.parquet"
            run_index_part(part, paths["samples"][-1], paths["spot"][-1], paths["match"][-1], scores, str(out))
            paths.setdefault(view, []).append(str(out))
        index_seconds.append(time.perf_counter() - t)
        print(f"  part {p + 1}/{n_parts}: {total:,} rows", flush=True)
    counts = {"samples_in": total, "ok": None, "skipped": None, "skipped_by_reason": {}}
    manifest = {"n_rows": total, "n_parts": n_parts, "part_rows": part_rows, "paths": paths,
                "seconds": round(time.perf_counter() - start, 1),
                "index_part_seconds": round(sum(index_seconds) / len(index_seconds), 2),
                "bytes": sum(f.stat().st_size for f in root.rglob("*.parquet")), "counts": counts}
    write_json(manifest, manifest_path)
    return manifest


# --- the steps, called as their rules call them --------------------------------------------------


def parts_json(root: Path, manifest: dict) -> str:
    """parts.json as the `parts` rule writes it: the ingest counts (here from the samples parts)."""
    import duckdb

    path = root / "parts.json"
    if not path.exists():
        source = "read_parquet([" + ", ".join(f"'{p}'" for p in manifest["paths"]["samples"]) + "])"
        ok, skipped = duckdb.sql(f"SELECT count(*) FILTER (WHERE status = 'ok'), "
                                 f"count(*) FILTER (WHERE status <> 'ok') FROM {source}").fetchall()[0]
        path.write_text(json.dumps({"samples_in": ok + skipped, "ok": ok, "skipped": skipped,
                                    "skipped_by_reason": {"corrupt_image": skipped}}))
    return str(path)


def step_table1(root: Path, m: dict, engine):
    from parrotscope.tables import run_table1

    run_table1({"laion": m["paths"]["match"]}, {"laion": parts_json(root, m)}, str(root / "out/table1.csv"), 4, engine)


def step_table2(root: Path, m: dict, engine):
    from parrotscope.tables import run_table2

    run_table2(m["paths"]["index"], [SCORER], str(root / "out/table2.csv"), str(root / "out/fig5.png"), 4, engine)


def step_select(name: str):
    def run(root: Path, m: dict, engine):
        from parrotscope.curate import needs_scores, run_select

        view = "index" if needs_scores(SUBSETS[name], [SCORER]) else "index_text"
        size = max(1, int(m["n_rows"] * SUBSET_SHARE))
        run_select(m["paths"][view], str(root / f"out/{name}/keys.parquet"), str(root / f"out/{name}/stats.json"),
                   name, SUBSETS[name], size, 0, SCORER, engine)
    return run


STEPS = {
    "table1": step_table1,
    "table2": step_table2,
    **{f"select {name}": step_select(name) for name in SUBSETS},
}


# --- the pre-DuckDB code, for comparison -----------------------------------------------------------


def old_index(root: Path, m: dict, engine):
    """The old `index` rule: every part joined and concatenated into one DataFrame, one file."""
    from parrotscope.index import run_index

    p = m["paths"]
    run_index([f"p{i:05d}" for i in range(m["n_parts"])], p["samples"], p["spot"], p["match"],
              p[f"score/{SCORER}"], [SCORER], str(root / "old/index.parquet"))


def old_table1(root: Path, m: dict, engine):
    from parrotscope.tables import run_table1

    run_table1({"laion": m["paths"]["match"]}, {"laion": parts_json(root, m)}, str(root / "old/table1.csv"), 4)


def old_table2(root: Path, m: dict, engine):
    from parrotscope.tables import run_table2

    run_table2(str(root / "old/index.parquet"), [SCORER], str(root / "old/table2.csv"), str(root / "old/fig5.png"), 4)


def old_select(name: str):
    def run(root: Path, m: dict, engine):
        from parrotscope.curate import run_select

        size = max(1, int(m["n_rows"] * SUBSET_SHARE))
        run_select(str(root / "old/index.parquet"), str(root / f"old/{name}/keys.parquet"),
                   str(root / f"old/{name}/stats.json"), name, SUBSETS[name], size, 0, SCORER)
    return run


OLD_STEPS = {"index": old_index, "table1": old_table1, "table2": old_table2,
             **{f"select {name}": old_select(name) for name in SUBSETS}}


# --- measuring -----------------------------------------------------------------------------------


@dataclass
class Measured:
    step: str
    seconds: float
    peak_gb: float
    ok: bool


def measure(step: str, root: Path, args, old: bool = False) -> Measured:
    """Run one step in a fresh process; wall time and peak RSS of that process (``wait4``)."""
    env = dict(os.environ, PYTHONPATH=str(args.old_src if old else ROOT / "src"))
    cmd = [sys.executable, __file__, "--run-step", step, "--data", str(root), "--mem-mb", str(args.mem_mb),
           "--threads", str(args.threads)] + (["--old"] if old else [])
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read()
    if status != 0:
        print(f"  {'old ' if old else ''}{step} failed:\n{err[-3000:]}", flush=True)
    return Measured(step, seconds, usage.ru_maxrss / 1024 ** 2, status == 0)


def run_step(args) -> None:
    """Inside the fresh process: one step on the synthesized data."""
    manifest = json.loads((args.data / "manifest.json").read_text())
    (args.data / ("old" if args.old else "out")).mkdir(exist_ok=True)
    engine = None
    if not args.old:  # the old library has no engine: it read everything into pandas
        from parrotscope.db import Engine

        engine = Engine(mem_mb=args.mem_mb, threads=args.threads, tmpdir=str(args.data / "tmp"))
    (OLD_STEPS if args.old else STEPS)[args.run_step](args.data, manifest, engine)


def fmt_rows(n: int) -> str:
    return f"{n / 1e6:g}M"


def report(results: list[dict], args) -> str:
    lines = [SECTION, "",
             f"Measured {datetime.date.today()} on {platform.node() or 'this machine'} ({os.cpu_count()} cores, "
             f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1024 ** 3:.0f} GB), by "
             f"`bench/bench_scale.py` ({args.threads} threads, jobs of {args.mem_mb} MB: DuckDB limit "
             f"{int(args.mem_mb * 0.6)} MB). Synthetic LAION-shaped per-part tables in parts of "
             f"{fmt_rows(args.part_rows)} rows; each step in a fresh process, as its rule calls it; peak RSS of "
             "that process. \"old\": the pre-DuckDB code on the same data (one concatenated index).", ""]
    lines += ["| rows | parts | data on disk | per-part index job | step | wall | peak RSS | rows/s | old: wall, peak RSS |",
              "|---:|---:|---:|---:|---|---:|---:|---:|---|"]
    for r in results:
        m = r["manifest"]
        for i, s in enumerate(r["steps"]):
            old = r["old"].get(s.step)
            old_text = (f"{old.seconds:.1f} s, {old.peak_gb:.2f} GB" if old and old.ok else "failed" if old else "")
            head = (f"| {fmt_rows(m['n_rows'])} | {m['n_parts']} | {m['bytes'] / 1e9:.1f} GB | "
                    f"{m['index_part_seconds']:.1f} s |" if i == 0 else "| | | | |")
            lines.append(f"{head} {s.step} | {s.seconds:.1f} s | {s.peak_gb:.2f} GB | "
                         f"{m['n_rows'] / s.seconds:,.0f} | {old_text} |" if s.ok else f"{head} {s.step} | failed | | | |")
        if "index" in r["old"]:
            o = r["old"]["index"]
            text = f"{o.seconds:.1f} s, {o.peak_gb:.2f} GB" if o.ok else "failed"
            lines.append(f"| | | | | (old) index: one concatenated file | | | | {text} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000, 100_000_000])
    parser.add_argument("--part-rows", type=int, default=2_000_000)
    parser.add_argument("--data", type=Path, default=Path("/tmp/parrotscope-scale"))
    parser.add_argument("--mem-mb", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--old-max", type=int, default=1_000_000, help="run the pre-DuckDB code up to this size")
    parser.add_argument("--old-src", type=Path, help="the pre-DuckDB library's src/ (a checkout of 3fbba3e)")
    parser.add_argument("--keep", action="store_true", help="keep the synthesized data")
    parser.add_argument("--run-step", help=argparse.SUPPRESS)
    parser.add_argument("--old", action="store_true", help=argparse.SUPPRESS)
    add_common_arguments(parser, ROOT, shards=False)
    args = parser.parse_args()
    if args.run_step:
        run_step(args)
        return
    results = []
    for n in args.sizes:
        root = args.data / fmt_rows(n)
        part_rows = min(args.part_rows, max(1, n // 10))  # at least ten parts
        print(f"{fmt_rows(n)} rows: synthesizing in parts of {part_rows:,}", flush=True)
        manifest = synthesize(root, n, part_rows)
        steps = [measure(step, root, args) for step in STEPS]
        for s in steps:
            print(f"  {s.step}: {s.seconds:.1f} s, {s.peak_gb:.2f} GB", flush=True)
        old = {}
        if args.old_src and n <= args.old_max:
            for step in OLD_STEPS:
                old[step] = measure(step, root, args, old=True)
                print(f"  old {step}: {old[step].seconds:.1f} s, {old[step].peak_gb:.2f} GB", flush=True)
        results.append({"manifest": manifest, "steps": steps, "old": old})
        if not args.keep:
            shutil.rmtree(root / "out", ignore_errors=True)
            shutil.rmtree(root / "old", ignore_errors=True)
    args.part_rows = min(args.part_rows, max(1, args.sizes[-1] // 10))
    publish(SECTION, report(results, args), args)


if __name__ == "__main__":
    main()
