"""Stage ``synth``: the synthetic text benchmark (paper Sec. 5, Figs. 6-8, Table 10's Sync. Score).

Vocabularies
    N-gram vocabularies ("all contiguous N word sequences extracted from a text corpus") of the
    normalised words of two corpora, the top ``top_k`` grams by frequency (the paper keeps 400,000),
    ties broken alphabetically so the vocabulary is deterministic:

    * ``caption``: the captions of every processed sample; a gram's count is its number of
      occurrences in the corpus.
    * ``coemb``: the Co-Emb. text of every parrot image. Algorithm 1 defines it as a *set* of
      words, which has no order, so 2-grams cannot come from ``co_words`` alone. Here the spotted
      ``words`` (OCR reading order) of each image are normalised and cut into runs of consecutive
      co-embedded words; the image's grams are those inside runs, each counted **once per image**
      (a gram's count is the number of parrot images in which it is co-embedded). For 1-grams this
      is exactly the ``co_words`` set of each image.

    Words are normalised like the match stage (:func:`parrotscope.match.normalise_word`); words that
    normalise to nothing (a lone "-") are dropped, so their neighbours become adjacent.

    A dataset-wide step: the grams are counted in Python a batch of index rows at a time into
    ``(gram, count)`` tables, which DuckDB sums and ranks (:func:`rank_grams`), so neither the
    index nor the corpus's grams are ever held whole.

Rendering (the authors' ``sys_benchmark.py``)
    A 224 x 224 RGB canvas, the font at 32 px (Arial there; Liberation Sans, metric-compatible, by
    default here), one gram centred, four (background, text) styles: white-black, black-white,
    gray-white, gray-black, gray being PIL's ``"gray"`` = (128, 128, 128). Placement
    (``synth.placement``): ``authors`` (the default) centres the box Pillow's legacy
    ``draw.textsize`` returned, whose right and bottom edges are measured from the drawing origin,
    as the authors do; the ink then sits a few pixels below the centre (3 px for words with
    ascenders, 6 px for x-height-only words at 224 px, font 32). ``ink`` centres the ink's own
    bounding box instead. Grams wider than the canvas keep the 32 px font and overflow on
    both sides, as the authors' code does. Grams with a character the font has no glyph for are
    left out (they would render as empty boxes); the authors likewise skip grams the font cannot
    render. The benchmark is a directory: one webdataset tar per style (``KEY.png`` + ``KEY.txt``)
    and ``manifest.parquet`` with one row per image.

Measures (per model)
    For each image: ``own`` = cosine similarity to the text embedding of its own gram (prompt
    ``template.format(gram)``, the raw gram by default as the authors); ``other`` = mean similarity
    to every other gram of the vocabulary; ``gap = own - other``; ``rank`` of the own gram among all
    grams (ties counted against it). The **Sync. Score** is the mean ± std (ddof 0) of ``own`` over
    all images (Table 10 reports it on the 1-gram caption vocabulary). The raw score is not
    comparable between small models trained from scratch (a model reading nothing can have the
    highest raw score: all its similarities are high), so the **sync gap** and the **word zero-shot
    accuracy** (share of images whose own gram ranks first; chance = 1 / vocabulary size) are
    reported beside it, overall, per style, by gram frequency (log-spaced bins, Fig. 6b) and by gram
    length in characters (Fig. 7).

    Cost: image-text similarities are images x vocabulary; at the paper's 400,000 grams and four
    styles that is 6.4e11 dot products per model (minutes on a GPU, slow on a CPU).
"""

from __future__ import annotations

import io
import logging
import os
import sys
import tarfile
import tempfile
import time
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from .db import Engine, KeyPartitions, connect, copy_to_parquet, hash_partitions, parquet_source
from .io import KEY, atomic_dir, atomic_path, read_json, read_parquet, write_json, write_parquet
from .match import Normalisation, normalise_word

# torch is imported where models run: the vocabulary, rendering and figure jobs do without it.
if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SOURCES = ("caption", "coemb")
# (background, text) as in sys_benchmark.py; PIL's "gray" is (128, 128, 128).
STYLES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "white-black": ((255, 255, 255), (0, 0, 0)),
    "black-white": ((0, 0, 0), (255, 255, 255)),
    "gray-white": ((128, 128, 128), (255, 255, 255)),
    "gray-black": ((128, 128, 128), (0, 0, 0)),
}
MANIFEST = "manifest.parquet"
INFO = "benchmark.json"
VOCAB_COLUMNS = ["gram", "count", "length"]


# ----------------------------------------------------------------------------------------------
# Vocabularies


def normalised_words(text: str, norm: Normalisation) -> list[str]:
    """The normalised words of ``text`` in order (``str.split()``), empties dropped."""
    return [w for w in (normalise_word(t, norm) for t in text.split()) if w]


def ngrams(words: Sequence[str], n: int) -> Iterator[str]:
    """Contiguous ``n``-word sequences joined by single spaces."""
    for i in range(len(words) - n + 1):
        yield " ".join(words[i:i + n])


def count_grams(docs: Iterable[list[list[str]]], n: int, once_per_doc: bool) -> Counter:
    """Gram counts over documents, each a list of word segments (grams never cross segments)."""
    counts: Counter = Counter()
    for segments in docs:
        grams = (g for seg in segments for g in ngrams(seg, n))
        counts.update(set(grams) if once_per_doc else grams)
    return counts


def vocab_table(ranked: Iterable[tuple[str, int]]) -> pd.DataFrame:
    """``(gram, count, length)`` of grams already ranked, with the vocabulary file's types."""
    frame = pd.DataFrame(list(ranked), columns=["gram", "count"]).astype({"gram": object, "count": "int64"})
    frame["length"] = frame["gram"].str.len().astype("int64")
    return frame[VOCAB_COLUMNS]


def _check_vocab_args(source: str, n: int, top_k: int) -> None:
    if source not in SOURCES:
        raise ValueError(f"unknown vocabulary source {source!r}; expected one of {SOURCES}")
    if n < 1 or top_k < 1:
        raise ValueError(f"n and top_k must be >= 1 (got n={n}, top_k={top_k})")


def coemb_segments(words: Sequence[str], co_words: Iterable[str], norm: Normalisation) -> list[list[str]]:
    """Runs of consecutive spotted words (normalised) that are co-embedded, in reading order."""
    co = set(co_words)
    runs: list[list[str]] = [[]]
    for word in (normalise_word(w, norm) for w in words):
        if not word:
            continue
        if word in co:
            runs[-1].append(word)
        elif runs[-1]:
            runs.append([])
    return [r for r in runs if r]


def _as_list(value) -> list[str]:
    """A list cell of the index: None/NaN for samples without that stage's result."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return [str(v) for v in value]


# Index columns each vocabulary reads.
VOCAB_COLUMNS_READ = {"caption": ["status", "caption"], "coemb": ["status", "is_parrot", "words", "co_words"]}
# Rows of the index read at once, and distinct grams counted in Python before they are written to
# a count table: together they bound the job's Python memory whatever the size of a part.
BATCH_ROWS = 65_536
FLUSH_GRAMS = 1_000_000


def vocab_docs(frame: pd.DataFrame, source: str, norm: Normalisation) -> Iterator[list[list[str]]]:
    """The documents of some index rows, each a list of word segments: the normalised caption of
    every processed sample (``caption``), or the runs of co-embedded spotted words of every
    processed parrot image (``coemb``)."""
    ok = frame[frame["status"] == "ok"]
    if source == "caption":
        return ([normalised_words(t, norm)] for t in ok["caption"].fillna("").astype(str))
    parrots = ok[ok["is_parrot"].fillna(False).astype(bool)]
    return (coemb_segments(w, c, norm)
            for w, c in zip(map(_as_list, parrots["words"]), map(_as_list, parrots["co_words"])))


def index_batches(paths: Sequence[str], columns: list[str], batch_rows: int = BATCH_ROWS) -> Iterator[pd.DataFrame]:
    """The index parts' rows in part order, ``batch_rows`` at a time: no part is ever whole in memory."""
    for path in paths:
        try:
            batches = pq.ParquetFile(path, page_checksum_verification=True).iter_batches(batch_rows, columns=columns)
            for batch in batches:
                yield batch.to_pandas()
        except (OSError, ValueError) as exc:  # pyarrow's errors; a corrupt or stale part names its file
            raise ValueError(f"cannot read {path}: {exc}. Delete it and rerun to rebuild it.") from exc


def count_parts(paths: Sequence[str], source: str, n: int, norm: Normalisation, folder: Path,
                batch_rows: int = BATCH_ROWS, flush_grams: int = FLUSH_GRAMS) -> list[Path]:
    """Count the ``source`` grams of the index parts into ``(gram, count)`` parquet tables in
    ``folder``. The normalisation is Python (the match stage's); counts are flushed to a table
    whenever ``flush_grams`` distinct grams are held, so a gram may appear in several tables and
    its count is their sum. Counts add up across batches, because a caption gram counts per
    occurrence and a Co-Emb. gram once per image, and an image is never split between batches."""
    files: list[Path] = []
    counts: Counter = Counter()

    def flush() -> None:
        if counts:
            files.append(folder / f"counts-{len(files):06d}.parquet")
            pq.write_table(pa.table({"gram": pa.array(list(counts), pa.string()),
                                     "count": pa.array(list(counts.values()), pa.int64())}), files[-1])
            counts.clear()

    batches = index_batches(paths, VOCAB_COLUMNS_READ[source], batch_rows)
    for frame in tqdm(batches, desc=f"{source} {n}-grams", unit="batch", file=sys.stderr, mininterval=30):
        counts.update(count_grams(vocab_docs(frame, source, norm), n, once_per_doc=source == "coemb"))
        if len(counts) >= flush_grams:
            flush()
    flush()
    return files


# A group of the gram sum in the engine: the gram's bytes, its sum and the hash table's overhead.
GRAM_ROW_BYTES = 96


def rank_grams(con, files: Sequence[Path], top_k: int) -> pd.DataFrame:
    """The ``top_k`` grams by their count summed over the count tables, ties alphabetical: a
    GROUP BY over every gram of the corpus. Past the engine's memory it runs in hash partitions
    of the grams (:class:`parrotscope.db.KeyPartitions`): a gram's whole sum lies in one
    partition, so the top ``top_k`` of the union of the partitions' own top lists is exact.
    DuckDB orders strings by their UTF-8 bytes, which is code point order, Python's ``str`` order."""
    if not files:
        return vocab_table([])
    ranked: list[tuple[str, int]] = []
    with KeyPartitions(con, "gram", hash_partitions(con, files, GRAM_ROW_BYTES)) as parts:
        parts.add("grams", f'(SELECT gram, "count" FROM {parquet_source(files)})')
        for i in range(parts.k):
            top = con.execute(f"""SELECT gram, CAST(sum("count") AS BIGINT) AS n FROM {parts.source("grams", i)}
                                  GROUP BY gram ORDER BY n DESC, gram LIMIT {int(top_k)}""").fetchall()
            ranked = sorted(ranked + top, key=lambda row: (-row[1], row[0]))[:int(top_k)]
    return vocab_table(ranked)


def count_part(index_path: str, source: str, n: int, norm: Normalisation, out_path: str | os.PathLike,
               engine: Engine = Engine()) -> None:
    """One index part's ``(gram, count)`` table: the per-part job of the vocabularies. The Python
    normalisation is the costly part (about 1e4-1e5 captions a second per core), so it runs where
    the parts run, in parallel; the dataset-wide step only sums these tables (:func:`rank_grams`).
    The part's flushed counts are summed by the engine, so memory stays bounded for any part."""
    _check_vocab_args(source, n, 1)
    with tempfile.TemporaryDirectory(prefix="synth-counts-", dir=engine.tmpdir or None) as folder:
        files = count_parts([index_path], source, n, norm, Path(folder))
        if not files:  # a part without a processed sample: an empty table of the same schema
            with atomic_path(out_path, suffix=".parquet") as tmp:
                pq.write_table(pa.table({"gram": pa.array([], pa.string()), "count": pa.array([], pa.int64())}), tmp)
            return
        copy_to_parquet(connect(engine), f'SELECT gram, CAST(sum("count") AS BIGINT) AS "count" '
                                         f"FROM {parquet_source(files)} GROUP BY gram", out_path)


def synth_vocab(index_paths: Sequence[str], source: str, n: int, top_k: int, norm: Normalisation,
                engine: Engine = Engine()) -> pd.DataFrame:
    """The ``source`` ``n``-gram vocabulary of the index parts (processed samples only): each part
    counted (:func:`count_part`), the counts summed and ranked by DuckDB (:func:`rank_grams`), as
    the rules ``synth_counts`` and ``synth_vocab`` do it."""
    _check_vocab_args(source, n, top_k)
    with tempfile.TemporaryDirectory(prefix="synth-vocab-", dir=engine.tmpdir or None) as folder:
        files = [Path(folder) / f"{i:06d}.parquet" for i in range(len(index_paths))]
        for path, out in zip(index_paths, files):
            count_part(path, source, n, norm, out, engine)
        return rank_grams(connect(engine), files, top_k)


def run_synth_counts(index_path: str, source: str, n: int, normalisation: dict, out_path: str,
                     engine: Engine = Engine()) -> None:
    """The rule ``synth_counts``: one part's gram counts."""
    count_part(index_path, source, int(n), Normalisation.from_config(normalisation), out_path, engine)


def run_vocab_from_counts(count_paths: Sequence[str], top_k: int, out_path: str, engine: Engine = Engine()) -> None:
    """The rule ``synth_vocab``: the ``top_k`` grams of the summed per-part counts (dataset-wide)."""
    vocab = rank_grams(connect(engine), count_paths, int(top_k))
    log.info("vocabulary of %d parts: %d grams (top_k %d)", len(count_paths), len(vocab), top_k)
    write_parquet(vocab, out_path, key="gram")


def run_synth_vocab(index_paths: Sequence[str], source: str, n: int, top_k: int, normalisation: dict, out_path: str,
                    engine: Engine = Engine()) -> None:
    """Write the vocabulary of the index parts (``synth.top_k`` grams) for the rule ``synth_vocab``."""
    vocab = synth_vocab(index_paths, source, int(n), int(top_k), Normalisation.from_config(normalisation), engine)
    log.info("%s %d-gram vocabulary: %d grams (top_k %d)", source, n, len(vocab), top_k)
    write_parquet(vocab, out_path, key="gram")


# ----------------------------------------------------------------------------------------------
# Rendering


@lru_cache(maxsize=8)
def load_font(font_path: str, font_px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_path), int(font_px))


@lru_cache(maxsize=8)
def font_codepoints(font_path: str) -> frozenset[int]:
    """Code points the font maps to a glyph (its best cmap)."""
    from fontTools.ttLib import TTFont

    with TTFont(str(font_path), lazy=True) as font:
        return frozenset(font.getBestCmap())


def missing_glyphs(text: str, font_path: str) -> set[str]:
    """Characters of ``text`` (whitespace aside) the font has no glyph for."""
    have = font_codepoints(str(font_path))
    return {c for c in text if not c.isspace() and ord(c) not in have}


def style_colours(style: str | tuple) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """``(background, text)`` RGB of a style name or of an explicit pair."""
    if isinstance(style, str):
        if style not in STYLES:
            raise ValueError(f"unknown style {style!r}; styles: {list(STYLES)}")
        return STYLES[style]
    background, fill = style
    return tuple(background), tuple(fill)


PLACEMENTS = ("authors", "ink")


def text_origin(text: str, font: ImageFont.FreeTypeFont, size: int, placement: str = "authors") -> tuple[float, float]:
    """Where to draw ``text`` on a ``size`` x ``size`` canvas.

    ``authors``: the box of legacy ``textsize`` (``getbbox``'s right and bottom, measured from the
    origin) is centred: origin ``((size - right) / 2, (size - bottom) / 2)``, as ``sys_benchmark.py``.
    ``ink``: the ink's bounding box is centred; ``getbbox`` starts below and right of the origin by
    the box's offsets, so the origin is shifted back by them. Either way a box wider than the
    canvas gives a negative x: the text overflows on both sides.
    """
    left, top, right, bottom = font.getbbox(text)
    if placement == "authors":
        return (size - right) / 2, (size - bottom) / 2
    if placement == "ink":
        return (size - (right - left)) / 2 - left, (size - (bottom - top)) / 2 - top
    raise ValueError(f"synth.placement must be one of {PLACEMENTS}, got {placement!r}")


def render_gram(text: str, style: str | tuple, font_path: str, size: int = 224, font_px: int = 32,
                placement: str = "authors") -> Image.Image:
    """One synthetic image: ``text`` centred (:func:`text_origin`) on a ``size`` x ``size`` canvas
    of the style's colours."""
    background, fill = style_colours(style)
    font = load_font(str(font_path), int(font_px))
    image = Image.new("RGB", (size, size), background)
    ImageDraw.Draw(image).text(text_origin(text, font, size, placement), text, font=font, fill=fill)
    return image


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)  # mtime 0: the same vocabulary gives byte-identical tars
    tar.addfile(info, io.BytesIO(data))


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def renderable_vocab(vocab: pd.DataFrame, font_path: str) -> tuple[pd.DataFrame, list[str]]:
    """``(kept vocabulary with gram_id, dropped grams)``: grams needing glyphs the font lacks go."""
    dropped_mask = vocab["gram"].map(lambda g: bool(missing_glyphs(g, font_path))).astype(bool)
    kept = vocab.loc[~dropped_mask].reset_index(drop=True)
    kept.insert(0, "gram_id", np.arange(len(kept), dtype="int64"))
    kept["n_words"] = kept["gram"].map(lambda g: len(g.split())).astype("int64")
    return kept, vocab.loc[dropped_mask, "gram"].tolist()


def render_benchmark(vocab: pd.DataFrame, out_dir: str | os.PathLike, font_path: str, size: int = 224,
                     font_px: int = 32, styles: Sequence[str] = tuple(STYLES), placement: str = "authors"
                     ) -> pd.DataFrame:
    """Render every gram in every style into ``out_dir`` (atomically); return the manifest.

    ``out_dir`` holds ``{style}.tar`` (members ``{gram_id:07d}.png`` and ``.txt``),
    ``manifest.parquet`` (one row per image: key, gram_id, gram, count, length, n_words, style,
    shard) and ``benchmark.json`` (rendering settings, sizes, dropped grams).
    """
    if vocab["gram"].duplicated().any():
        raise ValueError("the vocabulary has duplicate grams")
    if not styles:
        raise ValueError("no styles to render")
    kept, dropped = renderable_vocab(vocab, font_path)
    if dropped:
        log.warning("%d grams need glyphs the font lacks and are left out, e.g. %s", len(dropped), dropped[:5])
    rows = []
    start = time.perf_counter()
    with atomic_dir(out_dir) as tmp:
        for style in styles:
            shard = f"{style}.tar"
            with tarfile.open(tmp / shard, "w") as tar:
                for gram_id, gram in zip(kept["gram_id"], kept["gram"]):
                    member = f"{gram_id:07d}"
                    _add_member(tar, f"{member}.png", png_bytes(render_gram(gram, style, font_path, size, font_px, placement)))
                    _add_member(tar, f"{member}.txt", gram.encode("utf-8"))
            rows.append(kept.assign(style=style, shard=shard,
                                    **{KEY: [f"{style}/{i:07d}" for i in kept["gram_id"]]}))
        columns = [KEY, "gram_id", "gram", "count", "length", "n_words", "style", "shard"]
        manifest = pd.concat(rows, ignore_index=True)[columns]
        write_parquet(manifest, tmp / MANIFEST)
        write_json({"font": str(font_path), "font_px": int(font_px), "size": int(size), "placement": placement,
                    "styles": list(styles),
                    "n_grams": len(kept), "n_images": len(manifest), "dropped": dropped,
                    "render_seconds": round(time.perf_counter() - start, 3)}, tmp / INFO)
    return manifest


def run_synth_render(vocab_path: str, out_dir: str, font: str, font_px: int, size: int,
                     placement: str = "authors") -> None:
    manifest = render_benchmark(read_parquet(vocab_path), out_dir, font, int(size), int(font_px),
                                placement=placement)
    log.info("rendered %d images into %s", len(manifest), out_dir)


# ----------------------------------------------------------------------------------------------
# Measures


def read_benchmark(bench_dir: str | os.PathLike) -> tuple[pd.DataFrame, dict]:
    """The manifest and the settings of a rendered benchmark."""
    bench_dir = Path(bench_dir)
    return read_parquet(bench_dir / MANIFEST), read_json(bench_dir / INFO)


def embed_texts(scorer, texts: Sequence[str], batch_size: int) -> torch.Tensor:
    """L2-normalised text embeddings (rows in ``texts`` order), float32 on the scorer's device."""
    import torch

    from .score import encode_texts

    return torch.cat([encode_texts(scorer, scorer.tokenizer(list(texts[start:start + batch_size])))
                      for start in range(0, len(texts), batch_size)])


def embed_image_batches(scorer, tar_path: str | os.PathLike, batch_size: int, workers: int = 0
                        ) -> Iterator[tuple[list[int], torch.Tensor]]:
    """``(gram ids, L2-normalised image embeddings)`` of one style's tar, batch by batch in file
    order, decoded and preprocessed by ``workers`` DataLoader processes (:mod:`parrotscope.feed`)."""
    from .feed import PngImages, pair_loader
    from .score import encode_images

    for keys, pixels, _ in pair_loader(PngImages(str(tar_path)), scorer.preprocess, None, batch_size, workers,
                                       scorer.device):
        yield [int(k) for k in keys], encode_images(scorer, pixels)


def similarity_measures(image_emb: torch.Tensor, text_emb: torch.Tensor, gram_ids: torch.Tensor) -> dict:
    """Per image: similarity to its own gram, mean similarity to the others, and the own gram's rank.

    The rank counts every other gram at least as similar as the own one, so ties count against
    the model (a constant model ranks last, not first).
    """
    import torch

    sims = image_emb @ text_emb.T
    n_grams = sims.shape[1]
    own = sims.gather(1, gram_ids[:, None]).squeeze(1)
    # With a single gram there is nothing to compare with: no "other" similarity, no gap.
    other = (sims.sum(1) - own) / (n_grams - 1) if n_grams > 1 else torch.full_like(own, float("nan"))
    rank = (sims >= own[:, None]).sum(1)  # the own gram counts itself once: rank 1 = strictly first
    return {"own": own.cpu().numpy(), "other": other.cpu().numpy(), "rank": rank.cpu().numpy()}


def score_benchmark(scorer, bench_dir: str | os.PathLike, batch_size: int = 64, template: str = "{}",
                    progress: bool = True, workers: int = 0) -> pd.DataFrame:
    """The manifest with ``own``, ``other``, ``gap``, ``rank`` and ``correct`` for every image."""
    import torch

    bench_dir = Path(bench_dir)
    manifest, _ = read_benchmark(bench_dir)
    grams = manifest.drop_duplicates("gram_id").sort_values("gram_id")
    if grams["gram_id"].tolist() != list(range(len(grams))):
        raise ValueError(f"{bench_dir}: gram ids are not 0..{len(grams) - 1}")
    if manifest.empty:  # an empty vocabulary (e.g. no parrot images): nothing to measure, not an error
        log.warning("%s: the benchmark has no images", bench_dir)
        return manifest.assign(own=np.float32(0), other=np.float32(0), rank=np.int64(0),
                               gap=np.float32(0), correct=False).iloc[:0]
    text_emb = embed_texts(scorer, [template.format(g) for g in grams["gram"]], batch_size)
    measured = []
    bar = tqdm(total=len(manifest), unit="img", file=sys.stderr, disable=not progress, desc=f"sync {scorer.name}",
               mininterval=10)
    for shard, style in manifest[["shard", "style"]].drop_duplicates().itertuples(index=False):
        for gram_ids, image_emb in embed_image_batches(scorer, bench_dir / shard, batch_size, workers):
            ids = torch.tensor(gram_ids, device=text_emb.device)
            m = similarity_measures(image_emb, text_emb, ids)
            measured.append(pd.DataFrame({"style": style, "gram_id": ids.cpu().numpy(), **m}))
            bar.update(len(gram_ids))
    bar.close()
    scores = pd.concat(measured, ignore_index=True)
    frame = manifest.merge(scores, on=["style", "gram_id"], how="left", validate="one_to_one")
    if frame["own"].isna().any():
        raise ValueError(f"{bench_dir}: {int(frame['own'].isna().sum())} manifest images missing from the tars")
    frame["gap"] = frame["own"] - frame["other"]
    frame["correct"] = frame["rank"] == 1
    return frame


def _stat(values: pd.Series, how: str) -> float | None:
    """Mean or population std (ddof 0) as a float; None where undefined (no values), for JSON."""
    values = values.dropna()
    if values.empty:
        return None
    return float(values.mean() if how == "mean" else values.astype("float64").std(ddof=0))


def summary(frame: pd.DataFrame) -> dict:
    """The headline measures over the images of ``frame``."""
    return {
        "n_images": int(len(frame)),
        "n_grams": int(frame["gram_id"].nunique()),
        "sync_score_mean": _stat(frame["own"], "mean"),
        "sync_score_std": _stat(frame["own"], "std"),
        "other_mean": _stat(frame["other"], "mean"),
        "sync_gap_mean": _stat(frame["gap"], "mean"),
        "sync_gap_std": _stat(frame["gap"], "std"),
        "word_accuracy": _stat(frame["correct"].astype("float64"), "mean"),
        "mean_rank": _stat(frame["rank"].astype("float64"), "mean"),
    }


def frequency_bins(counts: pd.Series, n_bins: int = 8) -> pd.DataFrame:
    """Log-spaced integer count bins ``[lo, hi]`` covering ``counts``: one row per image."""
    if counts.empty:
        return pd.DataFrame({"bin_lo": pd.Series(dtype="int64"), "bin_hi": pd.Series(dtype="int64"),
                             "bin": pd.Series(dtype=object)}, index=counts.index)
    lo, hi = int(counts.min()), int(counts.max())
    edges = np.unique(np.floor(np.geomspace(lo, hi + 1, n_bins + 1)).astype("int64"))
    idx = np.clip(np.searchsorted(edges, counts.to_numpy(), side="right") - 1, 0, len(edges) - 2)
    bin_lo, bin_hi = edges[idx], edges[idx + 1] - 1
    return pd.DataFrame({"bin_lo": bin_lo, "bin_hi": bin_hi,
                         "bin": [f"{a}" if a == b else f"{a}-{b}" for a, b in zip(bin_lo, bin_hi)]},
                        index=counts.index)


def _grouped(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    grouped = frame.groupby(keys, sort=True)
    return grouped.agg(n_grams=("gram_id", "nunique"), n_images=("own", "size"),
                       sync_score_mean=("own", "mean"), sync_score_std=("own", lambda s: s.std(ddof=0)),
                       sync_gap_mean=("gap", "mean"), word_accuracy=("correct", "mean")).reset_index()


def group_by_frequency(frame: pd.DataFrame, n_bins: int = 8) -> pd.DataFrame:
    """Measures per log-spaced gram-frequency bin (Fig. 6b); ``bin_mid`` is the bin's geometric centre."""
    out = _grouped(frame.join(frequency_bins(frame["count"], n_bins)), ["bin_lo", "bin_hi", "bin"])
    out.insert(3, "bin_mid", np.sqrt(out["bin_lo"] * out["bin_hi"]))
    return out


def group_by_length(frame: pd.DataFrame) -> pd.DataFrame:
    """Measures per gram length in characters (Fig. 7)."""
    return _grouped(frame, ["length"])


def sync_metrics(scorer, benchmark: str | os.PathLike, batch_size: int = 64, template: str = "{}",
                 n_bins: int = 8, progress: bool = True, workers: int = 0) -> tuple[dict, pd.DataFrame]:
    """``(metrics, per-image frame)`` of one model on one rendered benchmark.

    ``scorer`` is a :class:`parrotscope.score.Scorer` (or anything with ``name``, ``model``,
    ``preprocess``, ``tokenizer`` and ``device``). ``metrics`` holds :func:`summary` overall and per
    style, the chance accuracy, and the frequency and length groupings as records.
    """
    frame = score_benchmark(scorer, benchmark, batch_size, template, progress, workers)
    metrics = {
        "model": scorer.name,
        "template": template,
        **summary(frame),
        "chance_accuracy": 1.0 / n_grams if (n_grams := int(frame["gram_id"].nunique())) else None,
        "by_style": {style: summary(part) for style, part in frame.groupby("style", sort=False)},
        "by_frequency": group_by_frequency(frame, n_bins).to_dict("records"),
        "by_length": group_by_length(frame).to_dict("records"),
    }
    return metrics, frame


def run_synth_eval(benchmark_dir: str, scorer_spec: dict, out_json: str, out_parquet: str, batch_size: int = 64,
                   template: str = "{}", device: str = "auto", threads: int = 1, n_bins: int = 8,
                   workers: int | None = None, precision: str = "auto") -> dict:
    """Evaluate one model (a scorer spec: ``name``, ``arch``, ``checkpoint`` or ``pretrained``);
    ``workers`` (None: one per thread beyond the first) decode and preprocess the images."""
    import torch

    from .feed import resolve_workers
    from .score import load_scorer

    torch.set_num_threads(max(1, int(threads)))
    start = time.perf_counter()
    scorer = load_scorer(scorer_spec, device, precision)
    metrics, frame = sync_metrics(scorer, benchmark_dir, int(batch_size), template, int(n_bins),
                                  workers=resolve_workers(workers, threads))
    metrics["benchmark"] = str(benchmark_dir)
    metrics["spec"] = dict(scorer_spec)
    metrics["seconds"] = round(time.perf_counter() - start, 3)
    write_parquet(frame, out_parquet)
    write_json(metrics, out_json)
    log.info("%s: %s", scorer.name, ", ".join(f"{k} {metrics[k]}" for k in (
        "sync_score_mean", "sync_score_std", "sync_gap_mean", "word_accuracy", "chance_accuracy")))
    return metrics


# ----------------------------------------------------------------------------------------------
# Figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


MEASURES = (("sync_score_mean", "Sync. Score (own similarity)"), ("sync_gap_mean", "Sync gap (own - others)"),
            ("word_accuracy", "Word zero-shot accuracy"))


def plot_sync_by_frequency_and_length(per_gram_frames: dict[str, pd.DataFrame], out_png: str | os.PathLike,
                                      n_bins: int = 8) -> None:
    """Figs. 6-7: the vocabulary's long tail, then each measure by gram frequency and by length.

    One line per entry of ``per_gram_frames`` (label -> frame of :func:`score_benchmark`).
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(len(MEASURES) + 1, 2, figsize=(11, 3.2 * (len(MEASURES) + 1)), squeeze=False)
    for label, frame in per_gram_frames.items():
        grams = frame.drop_duplicates("gram_id")
        counts = np.sort(grams["count"].to_numpy())[::-1]
        axes[0, 0].loglog(np.arange(1, len(counts) + 1), counts, label=label)
        lengths = grams["length"].value_counts().sort_index()
        axes[0, 1].plot(lengths.index, lengths.to_numpy(), marker=".", label=label)
        by_freq, by_len = group_by_frequency(frame, n_bins), group_by_length(frame)
        for row, (col, name) in enumerate(MEASURES, start=1):
            axes[row, 0].plot(by_freq["bin_mid"], by_freq[col], marker="o", label=label)
            axes[row, 1].plot(by_len["length"], by_len[col], marker="o", label=label)
    axes[0, 0].set(xlabel="Gram rank", ylabel="Gram frequency", title="Vocabulary (long tail)")
    axes[0, 1].set(xlabel="Gram length (characters)", ylabel="Number of grams", title="Vocabulary lengths")
    for row, (_, name) in enumerate(MEASURES, start=1):
        axes[row, 0].set_xscale("log")
        axes[row, 0].set(xlabel="Gram frequency (log-spaced bins)", ylabel=name, title=f"{name} by frequency")
        axes[row, 1].set(xlabel="Gram length (characters)", ylabel=name, title=f"{name} by length")
    for ax in axes[:, 1]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    _save(fig, out_png)


def plot_sync_scores(results: dict[str, dict], out_png: str | os.PathLike) -> None:
    """Fig. 8: per model, Sync. Score mean ± std, sync gap mean ± std and word accuracy (with chance)."""
    plt = _pyplot()
    labels = list(results)
    x = np.arange(len(labels))
    # Panels stacked, one bar per model: readable from a handful of models to the 18 of Tables 3-6.
    fig, axes = plt.subplots(3, 1, figsize=(max(6.0, 0.45 * len(labels) + 2.0), 10), sharex=True)
    panels = (("sync_score_mean", "sync_score_std", "Sync. Score (mean ± std)"),
              ("sync_gap_mean", "sync_gap_std", "Sync gap (mean ± std)"),
              ("word_accuracy", None, "Word zero-shot accuracy"))
    for ax, (mean, std, title) in zip(axes, panels):
        values = [_number(results[k][mean]) for k in labels]
        errors = [_number(results[k][std]) for k in labels] if std else None
        ax.bar(x, values, yerr=errors, capsize=3, color="tab:blue")
        ax.set_xticks(x, labels, rotation=45, ha="right")
        ax.set(title=title, ylabel=title.split(" (")[0])
        ax.axhline(0, color="black", lw=0.6)
        ax.grid(axis="y", alpha=0.3)
    chance = [_number(results[k].get("chance_accuracy")) for k in labels]
    if not np.isnan(chance).all():
        axes[2].scatter(x, chance, marker="_", s=400, color="red", label="chance", zorder=3)
        axes[2].legend(fontsize=8)
    _save(fig, out_png)


def _number(value) -> float:
    """A measure for plotting: None (undefined, e.g. an empty vocabulary) becomes NaN (not drawn)."""
    return float("nan") if value is None else float(value)


def _save(fig, out_png: str | os.PathLike) -> None:
    fig.tight_layout()
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    _pyplot().close(fig)


def run_synth_figures(frames: dict[str, str], metrics: dict[str, str], out_curves: str, out_bars: str,
                      n_bins: int = 8) -> None:
    """Figs. 6-7 from per-image tables (label -> parquet) and Fig. 8 from metrics (label -> JSON)."""
    plot_sync_by_frequency_and_length({k: read_parquet(v) for k, v in frames.items()}, out_curves, n_bins)
    plot_sync_scores({k: read_json(v) for k, v in metrics.items()}, out_bars)


def run_sync_bars(labels: list[str], metrics_paths: list[str], out_png: str | os.PathLike) -> None:
    """Fig. 8 from the metrics JSONs of the models, in the given label order."""
    plot_sync_scores({label: read_json(path) for label, path in zip(labels, metrics_paths)}, out_png)
