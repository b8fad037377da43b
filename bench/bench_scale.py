"""Execution at LAION scale: every dataset-wide step on synthetic per-part tables of 1e6-1e8 rows.

Run on demand (not a test; 1e7 rows take 4.7 GB of disk, 1e8 rows ~47 GB and hours on 2 cores).
Resumable: the synthesis keeps every finished part and ``results.json`` every measured step, so a
run that is cut off goes on where it stopped when started again with the same ``--data``:

    .venv/bin/python bench/bench_scale.py                                    # 1M, 10M, 100M rows
    .venv/bin/python bench/bench_scale.py --sizes 1000000 --no-write         # quick look

For each size N the benchmark synthesizes a LAION-shaped dataset in parts of ``--part-rows`` rows
(default 2M: LAION-2B in 460 parts of 500 shards holds ~4.3M per part): the per-part tables of
ingest (captions of LAION's length: 1 + Poisson(9) words from a Zipf vocabulary of 50,000), spot
(55% of images with 1-6 spotted words and their polygons), match (half of the text images parrot
their words), score (S(raw), the four removals, RSA/RSC), the filters' re-scores (T-MARS, flip),
the cluster assignment (4,000 clusters) and image embeddings for the fix's per-cluster dedup (16-d
instead of CLIP's 512-d, so that 1e8 rows fit this machine's disk; the dedup's memory is one
cluster's vectors either way); then the index parts are written by the index stage's own per-part function
(:func:`parrotscope.index.run_index_part`), as the per-part jobs do.

Each dataset-wide step then runs as its rule runs it (the same library call with the rule's
engine settings: ``--mem-mb`` of the job, DuckDB gets 60% of it, ``--threads``), in a fresh
process, measuring wall time and peak resident memory (that process's own ``VmHWM``). With
``--old-max`` the pre-DuckDB code (``--old-src``, the library as it was before the data plane,
which concatenated every part into one DataFrame) runs its index, Table 1, Table 2 and selection
on the same data up to that size, for comparison. Results: a markdown table, printed and written
under ``## dataset-wide steps at scale`` in docs/BENCHMARKS.md unless ``--no-write``.

Not run here: ``galleries`` (its dataset-wide part is the same top-share query as the CLIP-score
baseline; it then reads the picked images from the shards, which synthetic tables do not have) and
``cluster_fit`` (a bounded sample, ``cluster.fit_max_samples``, whatever N).
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
N_CLUSTERS = 4000   # the authors' K-means size
EMBED_DIM = 16      # embeddings for the fix's per-cluster dedup; CLIP's are 512-d (32x the bytes)
NORMALISATION = {"lowercase": True, "strip_punctuation": True, "strip_accents": True}
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


def gram_counts(words, cap_ids, cap_len, ok, co_ids, n_co) -> dict:
    """The part's (gram, count) tables as `synth_counts` writes them, computed vectorised from
    the word ids (the synthetic words are already normalised: the Python normalisation would
    return them unchanged): caption 1- and 2-grams of processed samples, Co-Emb. 1-grams once
    per parrot image."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    row = np.repeat(np.arange(len(cap_len)), cap_len)
    keep = ok[row]
    uni = np.bincount(cap_ids[keep], minlength=VOCAB)
    starts = offsets_of(cap_len)
    first = np.ones(len(cap_ids), dtype=bool)
    first[starts[:-1][cap_len > 0]] = False  # a bigram starts at every word but a caption's first
    second = np.flatnonzero(first & keep)
    pairs, pair_counts = np.unique(cap_ids[second - 1].astype(np.int64) * VOCAB + cap_ids[second], return_counts=True)
    co_row = np.repeat(np.arange(len(n_co)), n_co)
    co_unique = np.unique(co_row.astype(np.int64) * VOCAB + co_ids) % VOCAB  # once per image
    co = np.bincount(co_unique, minlength=VOCAB)

    def table(ids, counts):
        return pa.table({"gram": words.take(pa.array(ids)), "count": pa.array(counts, pa.int64())})

    bigram = pc.binary_join_element_wise(words.take(pa.array(pairs // VOCAB)), words.take(pa.array(pairs % VOCAB)), " ")
    return {"counts/caption_1gram": table(np.flatnonzero(uni), uni[uni > 0]),
            "counts/caption_2gram": pa.table({"gram": bigram, "count": pa.array(pair_counts, pa.int64())}),
            "counts/coemb_1gram": table(np.flatnonzero(co), co[co > 0])}


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
    n_ok = int(ok.sum())
    ok_keys = keys.filter(pa.array(ok))
    assign = pa.table({"__key__": ok_keys,
                       "cluster": pa.array(rng.integers(0, N_CLUSTERS, n_ok).astype(np.int32)),
                       "distance": pa.array(rng.random(n_ok).astype(np.float32))})
    # Image embeddings of the usable samples (EMBED_DIM, not CLIP's 512: see the module docstring).
    emb = rng.normal(size=(n_ok, EMBED_DIM)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    embed = pa.table({"__key__": ok_keys,
                      "image_emb": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), EMBED_DIM)})
    tmars = pa.table({"__key__": keys, "status": status,
                      "s_tmars": float_or_null(s_raw - 0.05 * parrot, has_text).cast(pa.float32())})
    flip = pa.table({"__key__": keys, "status": status,
                     "s_flip": float_or_null(s_raw - 0.03 * has_text, ok).cast(pa.float32())})
    return {"samples": samples, "spot": spot, "match": match, f"score/{SCORER}": score,
            **gram_counts(words, cap_ids, cap_len, ok, co_ids, n_co),
            f"cluster/{SCORER}/assign": assign, f"embed/{SCORER}": embed,
            f"filters/tmars/{SCORER}": tmars, f"filters/flip/{SCORER}": flip}


def joined_index(part: str, tables: dict, scores: dict, schema):
    """The index part the `index` job would write for these tables (all in the same key order by
    construction, so the join is a column concatenation), in the schema the real job wrote for the
    first part. Assembling it directly keeps the 1e8-row synthesis within minutes."""
    import pyarrow as pa

    from parrotscope.index import SAMPLE_COLUMNS, SPOT_COLUMNS

    samples, spot, match = tables["samples"], tables["spot"], tables["match"]
    columns = {c: samples[c] for c in SAMPLE_COLUMNS}
    columns["ingest_status"], columns["ingest_error"] = columns.pop("status"), columns.pop("error")
    columns["part"] = pa.array([part] * samples.num_rows)
    columns.update(status=spot["status"], error=spot["error"])
    columns.update({c: spot[c] for c in SPOT_COLUMNS[1:]})
    columns.update({c: match[c] for c in match.column_names if c not in ("__key__", "status", "error")})
    for name in scores:
        score = tables[f"score/{name}"]
        columns.update({f"{name}.{c}": score[c] for c in score.column_names if c not in ("__key__", "status")})
    return pa.table({f.name: columns[f.name] for f in schema}).cast(schema)


def write_atomic(table, path: Path) -> None:
    """A parquet file under a temporary name, then renamed: a killed run leaves no half part."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def synthesize_part(root: Path, p: int, rows: int, seed: int, schemas: dict) -> dict:
    """One part's tables and its two index parts; return its record (paths, rows, index time).

    Part 0's index parts are written by the index stage's own per-part job (timed), and give the
    schema the other parts' index parts follow."""
    from parrotscope.index import run_index_part

    part = f"p{p:05d}"
    tables = part_tables(p, rows, seed)
    paths = {}
    for table, data in tables.items():
        paths[table] = str(root / table / f"{part}.parquet")
        write_atomic(data, Path(paths[table]))
    index_seconds = None
    for view, scores in (("index", {SCORER: paths[f"score/{SCORER}"]}), ("index_text", {})):
        out = root / view / f"{part}.parquet"
        if p == 0:
            t = time.perf_counter()
            run_index_part(part, paths["samples"], paths["spot"], paths["match"], scores, str(out))
            index_seconds = time.perf_counter() - t
        else:
            write_atomic(joined_index(part, tables, scores, schemas[view]), out)
        paths[view] = str(out)
    return {"paths": paths, "rows": rows, "index_seconds": index_seconds}


def synthesize(root: Path, n_rows: int, part_rows: int, seed: int = 0) -> dict:
    """Write the parts and their index parts; return the manifest (paths per table, row counts,
    bytes on disk, time taken). Resumable: a part whose record (``parts/<part>.json``, written
    after its files) exists is not written again, so a run cut off at 1e8 rows goes on where it
    stopped."""
    import pyarrow.parquet as pq

    from parrotscope.io import write_json

    manifest_path = root / "manifest.json"
    if manifest_path.exists():
        return json.loads(manifest_path.read_text())
    n_parts = math.ceil(n_rows / part_rows)
    records, seconds = [], 0.0
    for p in range(n_parts):
        record_path = root / "parts" / f"p{p:05d}.json"
        if record_path.exists():
            records.append(json.loads(record_path.read_text()))
            continue
        start = time.perf_counter()
        rows = min(part_rows, n_rows - p * part_rows)
        schemas = {} if p == 0 else {view: pq.read_schema(root / view / "p00000.parquet")
                                     for view in ("index", "index_text")}
        record = synthesize_part(root, p, rows, seed, schemas)
        record["seconds"] = time.perf_counter() - start
        write_json(record, record_path)
        records.append(record)
        print(f"  part {p + 1}/{n_parts}: {sum(r['rows'] for r in records):,} rows "
              f"({record['seconds']:.0f} s)", flush=True)
    paths: dict[str, list[str]] = {}
    for record in records:
        for table, path in record["paths"].items():
            paths.setdefault(table, []).append(path)
    seconds = sum(r["seconds"] for r in records)
    total = sum(r["rows"] for r in records)
    counts = {"samples_in": total, "ok": None, "skipped": None, "skipped_by_reason": {}}
    manifest = {"n_rows": total, "n_parts": n_parts, "part_rows": part_rows, "paths": paths,
                "seconds": round(seconds, 1), "index_part_seconds": round(records[0]["index_seconds"], 2),
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


def cluster_model(root: Path) -> str:
    """A cluster model file of N_CLUSTERS centroids, as cluster_fit writes it (the figures merge
    clusters by their centroids)."""
    import numpy as np

    from parrotscope.cluster import ClusterModel, save_model

    path = root / "cluster_model.npz"
    if not path.exists():
        rng = np.random.default_rng(0)
        save_model(ClusterModel(mean=np.zeros(EMBED_DIM, np.float32), components=np.eye(EMBED_DIM, dtype=np.float32),
                                centroids=rng.normal(size=(N_CLUSTERS, EMBED_DIM)).astype(np.float32),
                                explained_variance=np.ones(EMBED_DIM, np.float32), whiten=False,
                                source="bench_scale", pca_dim_requested=EMBED_DIM), path)
    return str(path)


def step_fix(root: Path, m: dict, engine):
    from parrotscope.filters import run_fix

    p = m["paths"]
    run_fix(p["index"], str(root / "out/filter_fix/keys.parquet"), str(root / "out/filter_fix/stats.json"), SCORER,
            {"clip_threshold": 0.3, "aesthetic_threshold": 4.5, "dedup_threshold": 0.95},
            p[f"cluster/{SCORER}/assign"], p[f"embed/{SCORER}"], [], engine)


def step_baseline(method: str):
    def run(root: Path, m: dict, engine):
        from parrotscope.filters import run_baseline

        p = m["paths"]
        rescore = {"tmars": p[f"filters/tmars/{SCORER}"], "flip_clip": p[f"filters/flip/{SCORER}"]}.get(method, [])
        run_baseline(method, p["index"], str(root / "out/filter_fix/stats.json"),
                     str(root / f"out/filter_{method}/keys.parquet"), str(root / f"out/filter_{method}/stats.json"),
                     SCORER, 0, {"clip_score": 0.3, "flip_clip": 0.3}, rescore, engine)
    return run


def step_vocab(source: str, n: int):
    def run(root: Path, m: dict, engine):
        from parrotscope.synth import run_vocab_from_counts

        run_vocab_from_counts(m["paths"][f"counts/{source}_{n}gram"], 400_000,
                              str(root / f"out/vocab_{source}_{n}.parquet"), engine)
    return run


def step_counts_one_part(source: str, n: int):
    """The per-part `synth_counts` job on the first part (Python normalisation: the cost that runs
    in parallel across parts; the dataset-wide step sums the parts' tables)."""
    def run(root: Path, m: dict, engine):
        from parrotscope.synth import run_synth_counts

        run_synth_counts(m["paths"]["index_text"][0], source, n, NORMALISATION,
                         str(root / f"out/counts_{source}_{n}.parquet"), engine)
    return run


def step_cluster_figures(root: Path, m: dict, engine):
    from parrotscope.figures import run_cluster_figures

    p = m["paths"]
    run_cluster_figures(p["index"], p[f"cluster/{SCORER}/assign"], cluster_model(root), SCORER, 100, 0,
                        str(root / "out/cluster_profile.csv"), str(root / "out/fig3a.png"),
                        str(root / "out/fig5_left.png"), engine=engine)


def step_text_figures(root: Path, m: dict, engine):
    from parrotscope.figures import run_text_figures

    p = m["paths"]
    parts = [Path(x).stem for x in p["spot"]]
    run_text_figures(p["index"], dict(zip(parts, p["spot"])), dict(zip(parts, p["samples"])), SCORER, NORMALISATION,
                     20_000, 0, str(root / "out/fig4a.png"), str(root / "out/fig4b.png"), str(root / "out/fig4c.png"),
                     engine=engine)


STEPS = {
    "table1": step_table1,
    "table2": step_table2,
    **{f"select {name}": step_select(name) for name in SUBSETS},
    "filter_fix": step_fix,
    **{f"filter_baseline {method}": step_baseline(method) for method in ("clip_score", "tmars", "flip_clip", "random")},
    "synth_counts caption 2-gram (one part; per-part job)": step_counts_one_part("caption", 2),
    "synth_vocab caption 1-gram": step_vocab("caption", 1),
    "synth_vocab caption 2-gram": step_vocab("caption", 2),
    "synth_vocab coemb 1-gram": step_vocab("coemb", 1),
    "cluster_figures": step_cluster_figures,
    "text_figures": step_text_figures,
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
    load: float | None = None  # the 1-minute load average while it ran (mean of start and end)
    cold: bool | None = None  # the page cache was emptied before it ran (None: measured before the option)


def drop_page_cache() -> bool:
    """Empty the kernel's page cache (root only), so that a step reads its tables from disk.

    At LAION scale the tables are many times a node's memory and every scan reads the disk; here
    the 1e7 run's 4.7 GB stay in the cache between steps and the 1e8 run's 47 GB cannot, so
    warm-cache growth between the two measures the cache, not the step."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def measure(step: str, root: Path, args, old: bool = False) -> Measured:
    """Run one step in a fresh process; wall time and peak RSS of that process.

    The peak is the child's own ``VmHWM`` read at its end, not ``wait4``'s ``ru_maxrss``: Linux
    carries the parent's high-water mark across fork and exec into the child's maxrss, and this
    parent holds a synthesized part in memory."""
    env = dict(os.environ, PYTHONPATH=str(args.old_src if old else ROOT / "src"))
    cmd = [sys.executable, __file__, "--run-step", step, "--data", str(root), "--mem-mb", str(args.mem_mb),
           "--threads", str(args.threads)] + (["--old"] if old else [])
    cold = drop_page_cache() if args.cold else False
    load_before, start = os.getloadavg()[0], time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    load = (load_before + os.getloadavg()[0]) / 2
    if proc.returncode != 0:
        print(f"  {'old ' if old else ''}{step} failed:\n{proc.stderr[-3000:]}", flush=True)
    peaks = [int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith(HWM_TAG)]
    return Measured(step, seconds, peaks[-1] / 1024 ** 2 if peaks else float("nan"), proc.returncode == 0,
                    round(load, 2), cold)


HWM_TAG = "VMHWM_KB"


def own_peak_kb() -> int:
    """This process's peak resident set (``VmHWM`` of /proc/self/status), in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_step(args) -> None:
    """Inside the fresh process: one step on the synthesized data."""
    manifest = json.loads((args.data / "manifest.json").read_text())
    (args.data / ("old" if args.old else "out")).mkdir(exist_ok=True)
    engine = None
    if not args.old:  # the old library has no engine: it read everything into pandas
        from parrotscope.db import Engine

        engine = Engine(mem_mb=args.mem_mb, threads=args.threads, tmpdir=str(args.data / "tmp"))
    (OLD_STEPS if args.old else STEPS)[args.run_step](args.data, manifest, engine)
    print(HWM_TAG, own_peak_kb(), flush=True)


def fmt_rows(n: int) -> str:
    return f"{n / 1e6:g}M"


LAION2B_ROWS = 1.985e9  # pairs in LAION-2B-en (the paper's pool)


def extrapolation(results: list[dict]) -> list[str]:
    """Per step: wall time per 1e8 rows at the largest size, the time that gives at LAION-2B's
    rows (linear: every step is a scan, a top-N or a hash aggregation), and how peak memory moved
    between the two largest sizes (flat when the engine's limit, not N, sets it)."""
    if len(results) < 2:
        return []
    big, prev = results[-1], results[-2]
    n_big, n_prev = big["manifest"]["n_rows"], prev["manifest"]["n_rows"]
    before = {s.step: s for s in prev["steps"]}
    lines = ["", f"Extrapolated to LAION-2B ({LAION2B_ROWS:.3g} rows) linearly from the {fmt_rows(n_big)} run, on "
             "the same job (2 threads, the same memory; a step is a scan, a top-N or a hash aggregation, and more "
             "threads divide the time): the growth column is how wall time grew from "
             f"{fmt_rows(n_prev)} to {fmt_rows(n_big)} rows ({n_big / n_prev:g}x the rows), the last column peak "
             "memory at both sizes, against the engine's limit above plus Python's share.", "",
             f"| step | wall per 1e8 rows | at LAION-2B | wall growth {fmt_rows(n_prev)} → {fmt_rows(n_big)} | "
             f"peak RSS {fmt_rows(n_prev)} → {fmt_rows(n_big)} |", "|---|---:|---:|---:|---|"]
    superlinear = []
    for s in big["steps"]:
        if not s.ok or "one part" in s.step or s.step not in before or not before[s.step].ok:
            continue
        per = s.seconds * 1e8 / n_big
        hours = s.seconds * LAION2B_ROWS / n_big / 3600
        growth = s.seconds / before[s.step].seconds
        if growth > 1.5 * n_big / n_prev:
            superlinear.append(s.step)
        lines.append(f"| {s.step} | {per:.0f} s | {hours:.1f} h | {growth:.1f}x | "
                     f"{before[s.step].peak_gb:.2f} → {s.peak_gb:.2f} GB |")
    failed = [s.step for r in results for s in r["steps"] if not s.ok]
    if superlinear:
        lines += ["", f"Grew faster than the rows (more than 1.5x the row growth), so the linear extrapolation "
                      f"understates them: {', '.join(superlinear)}."]
    if failed:
        lines += ["", f"Failed (see the table): {', '.join(dict.fromkeys(failed))}."]
    return lines


def report(results: list[dict], args) -> str:
    lines = [SECTION, "",
             f"Measured {args.measured_on} on {platform.node() or 'this machine'} ({os.cpu_count()} cores, "
             f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1024 ** 3:.0f} GB), by "
             f"`bench/bench_scale.py` ({args.threads} threads, jobs of {args.mem_mb} MB: DuckDB limit "
             f"{int(args.mem_mb * 0.6)} MB). Synthetic LAION-shaped per-part tables in parts of "
             f"{fmt_rows(args.part_rows)} rows; each step in a fresh process, as its rule calls it; peak RSS of "
             "that process. The largest joins and GROUP BYs (the fix's, the cluster study's, the gram ranking's) "
             "run as a Grace hash join once their rows pass a quarter of the engine's limit "
             "(`parrotscope.db.KeyPartitions`): the first 1e8 run, without it, ran out of DuckDB's memory in "
             "filter_fix, cluster_figures and synth_vocab caption 2-gram. "
             "\"old\": the pre-DuckDB code on the same data (one concatenated index). \"load\": "
             "the machine's 1-minute load average while the step ran; above 2, other work shared the 2 cores and "
             "the wall time is an upper bound (memory is unaffected). \"cache\": cold when the page cache was "
             "emptied before the step (`--warm` keeps it), so that it reads its tables from disk at every size, as "
             "it must at LAION scale where they are many times the node's memory.", ""]
    lines += ["| rows | parts | data on disk | per-part index job | step | wall | peak RSS | rows/s | load | cache | "
              "old: wall, peak RSS |", "|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---|"]
    for r in results:
        m = r["manifest"]
        for i, s in enumerate(r["steps"]):
            old = r["old"].get(s.step)
            old_text = (f"{old.seconds:.1f} s, {old.peak_gb:.2f} GB" if old and old.ok else "failed" if old else "")
            head = (f"| {fmt_rows(m['n_rows'])} | {m['n_parts']} | {m['bytes'] / 1e9:.1f} GB | "
                    f"{m['index_part_seconds']:.1f} s |" if i == 0 else "| | | | |")
            rows = m["part_rows"] if "one part" in s.step else m["n_rows"]
            load = "" if s.load is None else f"{s.load:.1f}"
            cache = {True: "cold", False: "warm", None: ""}[s.cold]
            lines.append(f"{head} {s.step} | {s.seconds:.1f} s | {s.peak_gb:.2f} GB | "
                         f"{rows / s.seconds:,.0f} | {load} | {cache} | {old_text} |" if s.ok
                         else f"{head} {s.step} | failed | | | | | |")
        if "index" in r["old"]:
            o = r["old"]["index"]
            text = f"{o.seconds:.1f} s, {o.peak_gb:.2f} GB" if o.ok else "failed"
            lines.append(f"| | | | | (old) index: one concatenated file | | | | | | {text} |")
    lines += extrapolation(results)
    return "\n".join(lines) + "\n"


def save_store(store: dict, path: Path) -> None:
    """Every measurement so far as JSON (written after each step, atomically), so a run cut off
    goes on where it stopped and the section can be written again without rerunning."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(store, indent=1))
    os.replace(tmp, path)


def load_store(path: Path) -> dict:
    """The saved measurements: ``{"sizes": {rows: {"manifest", "steps", "old"}}, ...settings}``."""
    return json.loads(path.read_text()) if path.exists() else {"sizes": {}}


def results_of(store: dict) -> list[dict]:
    """The measurements by size, smallest first, in the order the steps are listed."""
    results = []
    for n in sorted(store["sizes"], key=int):
        entry = store["sizes"][n]
        steps = [Measured(**entry["steps"][step]) for step in STEPS if step in entry["steps"]]
        results.append({"manifest": entry["manifest"], "steps": steps,
                        "old": {k: Measured(**v) for k, v in entry["old"].items()}})
    return results


def measure_size(n: int, args, store: dict, saved: Path) -> None:
    """Synthesize ``n`` rows (resuming) and measure every step not yet measured at that size."""
    root = args.data / fmt_rows(n)
    part_rows = min(args.part_rows, max(1, n // 10))  # at least ten parts
    entry = store["sizes"].setdefault(str(n), {"steps": {}, "old": {}})
    todo = [("new", step) for step in STEPS]
    if args.old_src and n <= args.old_max:
        todo += [("old", step) for step in OLD_STEPS]
    if args.steps:
        todo = [(kind, step) for kind, step in todo if step in args.steps]
    if not args.remeasure:
        todo = [(kind, step) for kind, step in todo
                if not entry["steps" if kind == "new" else "old"].get(step, {}).get("ok")]
    if not todo:
        return
    print(f"{fmt_rows(n)} rows: synthesizing in parts of {part_rows:,}", flush=True)
    manifest = synthesize(root, n, part_rows)
    entry["manifest"] = {k: v for k, v in manifest.items() if k != "paths"}
    for kind, step in todo:
        done = entry["steps" if kind == "new" else "old"]
        result = measure(step, root, args, old=kind == "old")
        done[step] = vars(result)
        print(f"  {'old ' if kind == 'old' else ''}{step}: {result.seconds:.1f} s, {result.peak_gb:.2f} GB, "
              f"load {result.load}", flush=True)
        store.update(threads=args.threads, mem_mb=args.mem_mb, measured_on=str(datetime.date.today()))
        save_store(store, saved)
    failed = [step for step, m in {**entry["steps"], **entry["old"]}.items() if not m["ok"]]
    if failed:  # kept, so that the failed steps can be measured again without synthesizing
        print(f"  kept {root}: {len(failed)} step(s) failed", flush=True)
    elif not args.keep:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000, 100_000_000])
    parser.add_argument("--part-rows", type=int, default=2_000_000)
    parser.add_argument("--data", type=Path, default=Path("/tmp/parrotscope-scale"))
    parser.add_argument("--mem-mb", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--old-max", type=int, default=1_000_000, help="run the pre-DuckDB code up to this size")
    parser.add_argument("--old-src", type=Path, help="the pre-DuckDB library's src/ (a checkout of 3fbba3e)")
    parser.add_argument("--keep", action="store_true", help="keep the synthesized data of a size once measured")
    parser.add_argument("--remeasure", action="store_true", help="measure again the steps already measured")
    parser.add_argument("--steps", nargs="+", help="only these steps (names as in the table)")
    parser.add_argument("--warm", dest="cold", action="store_false",
                        help="keep the page cache between steps (default: empty it before each, as root)")
    parser.add_argument("--report-only", action="store_true", help="write the section from the saved results.json")
    parser.add_argument("--run-step", help=argparse.SUPPRESS)
    parser.add_argument("--old", action="store_true", help=argparse.SUPPRESS)
    add_common_arguments(parser, ROOT, shards=False)
    args = parser.parse_args()
    if args.run_step:
        run_step(args)
        return
    saved = args.data / "results.json"
    args.data.mkdir(parents=True, exist_ok=True)
    store = load_store(saved)
    if not args.report_only:
        for n in args.sizes:
            measure_size(n, args, store, saved)
    results = results_of(store)
    largest = results[-1]["manifest"]
    args.part_rows = largest["part_rows"]
    args.threads, args.mem_mb = store.get("threads", args.threads), store.get("mem_mb", args.mem_mb)
    args.measured_on = store.get("measured_on", str(datetime.date.today()))
    publish(SECTION, report(results, args), args)


if __name__ == "__main__":
    main()
