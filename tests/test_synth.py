"""Synthetic text benchmark: vocabularies, rendering like sys_benchmark.py, measures, groupings, figures."""

import json
import tarfile
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from fontTools.ttLib import TTFont
from PIL import Image, ImageDraw, ImageFont

from parrotscope.db import Engine, connect
from parrotscope.io import read_parquet, write_parquet
from parrotscope.match import Normalisation
from parrotscope.score import Scorer
from parrotscope.synth import (
    STYLES, coemb_segments, count_parts, frequency_bins, group_by_frequency, group_by_length, normalised_words,
    plot_sync_by_frequency_and_length, plot_sync_scores, rank_grams, read_benchmark, render_benchmark, render_gram,
    run_synth_eval, run_synth_figures, run_synth_vocab, sync_metrics, synth_vocab, vocab_table)
from parrotscope.train import build_model

FONT = "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf"
NORM = Normalisation()
GRAMS = ["sale", "open", "coffee", "parrot", "hello world"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Every test of this module runs with one torch thread (see conftest)."""


def vocab_frame(grams, counts=None):
    counts = counts or list(range(len(grams), 0, -1))
    return pd.DataFrame({"gram": grams, "count": counts, "length": [len(g) for g in grams]})


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """5 grams x 4 styles, counts 1, 3, 10, 30, 100."""
    out = tmp_path_factory.mktemp("bench") / "caption_1gram"
    render_benchmark(vocab_frame(GRAMS, [100, 30, 10, 3, 1]), out, FONT)
    return out


@pytest.fixture(scope="module")
def tiny_scorer():
    torch.manual_seed(0)
    model, preprocess, tokenizer = build_model("tiny-rn", device="cpu")
    return Scorer("random-tiny", model, preprocess, tokenizer, "cpu")


# ----------------------------------------------------------------------------------------------
# Vocabularies

CAPTIONS = ["Sale! Sale now", "big SALE now", "now open", "Café open", "- open -"]


def cell_list(value):
    """A list cell of the index; None or NaN where the sample has no such result."""
    return [] if value is None or (isinstance(value, float) and np.isnan(value)) else [str(v) for v in value]


def ref_vocab(index, source, n, top_k, norm):
    """The vocabulary's definition in memory (the module docstring; how it was computed before it
    became a dataset-wide query): grams of the processed samples counted with a Counter, sorted
    by (count descending, gram), the first top_k kept."""
    ok = index[index["status"] == "ok"]
    if source == "caption":
        docs, once = ([normalised_words(t, norm)] for t in ok["caption"].fillna("").astype(str)), False
    else:
        parrots = ok[ok["is_parrot"].fillna(False).astype(bool)]
        docs = (coemb_segments(cell_list(w), cell_list(c), norm) for w, c in zip(parrots["words"], parrots["co_words"]))
        once = True
    counts = Counter()
    for segments in docs:
        grams = [" ".join(seg[i:i + n]) for seg in segments for i in range(len(seg) - n + 1)]
        counts.update(set(grams) if once else grams)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]
    frame = pd.DataFrame(ranked, columns=["gram", "count"]).astype({"gram": object, "count": "int64"})
    frame["length"] = frame["gram"].str.len().astype("int64")
    return frame[["gram", "count", "length"]]


def index_rows(captions=(), words=(), co_words=(), parrot=(), status=None):
    """Index rows (the text index's vocabulary columns); captions or Co-Emb. words."""
    n = max(len(captions), len(words))
    return pd.DataFrame({
        "__key__": [f"k{i:04d}" for i in range(n)],
        "status": status or ["ok"] * n,
        "caption": list(captions) or [None] * n,
        "words": list(words) or [[] for _ in range(n)],
        "co_words": list(co_words) or [[] for _ in range(n)],
        "is_parrot": list(parrot) or [bool(c) for c in (co_words or [[]] * n)],
    })


def write_index(folder, index, parts=2):
    """The rows as index parts in order, as the index stage writes them."""
    paths = []
    for i, chunk in enumerate(np.array_split(np.arange(len(index)), parts)):
        path = folder / f"p{i:05d}.parquet"
        write_parquet(index.iloc[chunk].reset_index(drop=True), path)
        paths.append(str(path))
    return paths


def vocab_of(tmp_path, index, source, n, top_k, norm=NORM):
    return synth_vocab(write_index(tmp_path, index), source, n, top_k, norm, Engine(tmpdir=str(tmp_path)))


def test_caption_unigrams_count_occurrences_normalised_with_alphabetical_ties(tmp_path):
    vocab = vocab_of(tmp_path, index_rows(CAPTIONS), "caption", 1, 4)
    assert list(vocab.columns) == ["gram", "count", "length"]
    # sale, now and open 3 times each (ties alphabetical), then big and cafe once: top 4 keeps big.
    assert vocab["gram"].tolist() == ["now", "open", "sale", "big"]
    assert vocab["count"].tolist() == [3, 3, 3, 1]
    assert vocab["length"].tolist() == [3, 4, 4, 3]


def test_caption_bigrams_are_contiguous_and_top_k(tmp_path):
    vocab = vocab_of(tmp_path, index_rows(CAPTIONS), "caption", 2, 3)
    # "- open -" has one word left after normalisation, hence no 2-gram.
    assert vocab["gram"].tolist() == ["sale now", "big sale", "cafe open"]
    assert vocab["count"].tolist() == [2, 1, 1]
    assert vocab["length"].tolist() == [8, 8, 9]
    full = vocab_of(tmp_path, index_rows(CAPTIONS), "caption", 2, 100)
    assert dict(zip(full["gram"], full["count"])) == {
        "sale now": 2, "big sale": 1, "cafe open": 1, "now open": 1, "sale sale": 1}


def test_normalisation_switched_off_keeps_case_and_punctuation(tmp_path):
    raw = Normalisation(lowercase=False, strip_punctuation=False, strip_accents=False)
    vocab = vocab_of(tmp_path, index_rows(["Sale! Sale now"]), "caption", 1, 10, raw)
    assert dict(zip(vocab["gram"], vocab["count"])) == {"Sale!": 1, "Sale": 1, "now": 1}


def test_coemb_runs_and_once_per_image_counts(tmp_path):
    assert coemb_segments(["SALE", "50%", "now", "Open"], ["sale", "now", "open"], NORM) == [["sale"], ["now", "open"]]
    words = [["SALE", "50%", "now", "Open"], ["now", "open", "now", "open"]]
    co = [["now", "open", "sale"], ["now", "open"]]
    bigrams = vocab_of(tmp_path, index_rows(words=words, co_words=co), "coemb", 2, 10)
    assert dict(zip(bigrams["gram"], bigrams["count"])) == {"now open": 2, "open now": 1}
    unigrams = vocab_of(tmp_path, index_rows(words=words, co_words=co), "coemb", 1, 10)
    assert unigrams["gram"].tolist() == ["now", "open", "sale"] and unigrams["count"].tolist() == [2, 2, 1]


def test_vocab_uses_ok_rows_and_parrot_images(tmp_path):
    index = pd.DataFrame({
        "__key__": ["a", "b", "c", "d"],
        "status": ["ok", "ok", "ok", "error"],
        "caption": ["Sale now", "Open now", "sale sale", None],
        "words": [["SALE", "now"], ["closed"], [], None],
        "co_words": [["now", "sale"], [], [], None],
        "is_parrot": [True, False, False, None],
    })
    caption = vocab_of(tmp_path, index, "caption", 1, 10)
    assert dict(zip(caption["gram"], caption["count"])) == {"sale": 3, "now": 2, "open": 1}
    coemb = vocab_of(tmp_path, index, "coemb", 2, 10)
    assert coemb["gram"].tolist() == ["sale now"] and coemb["count"].tolist() == [1]
    run_synth_vocab(write_index(tmp_path, index), "caption", 2, 2, {"lowercase": True, "strip_punctuation": True,
                                                                 "strip_accents": True}, str(tmp_path / "v.parquet"))
    assert read_parquet(tmp_path / "v.parquet")["gram"].tolist() == ["open now", "sale now"]
    with pytest.raises(ValueError, match="unknown vocabulary source"):
        vocab_of(tmp_path, index, "ocr", 1, 10)
    with pytest.raises(ValueError, match="n and top_k"):
        vocab_of(tmp_path, index, "caption", 0, 10)


# Captions whose normalisation matters (accents, case folding of ß, punctuation at the edges,
# words that normalise to nothing, characters beyond the BMP), ties at every count, and rows that
# are not processed; spotted words in OCR order with their co-embedded sets.
MESSY_CAPTIONS = ["Café CAFE cafe!", "naïve façade", "🎉 party 🎉 party", "Zebra apple Äpfel", "a-b a-b (a-b)",
                  "", None, "  spaced   out  ", "ÅNGSTRÖM straße STRASSE", "- -- ---", "zz éa 🎉", "éa zz 🎉 x",
                  "sale SALE sale now", "Now OPEN", "open now, open!", "ζ Ω ω"]
MESSY_WORDS = [["SALE", "50%", "now", "Open"], ["now", "open", "now", "open"], ["Café", "-", "ouvert"], [],
               None, ["ÉA", "zz", "zz"], ["x"], ["Straße", "strasse", "open"]]
MESSY_CO = [["now", "open", "sale"], ["now", "open"], ["cafe", "ouvert"], [], None, ["ea", "zz"], [],
            ["strasse", "open"]]


def messy_index(copies=3):
    """The messy rows a few times over (so grams tie across parts), some not processed."""
    n_cap, n_words = len(MESSY_CAPTIONS), len(MESSY_WORDS)
    rows = []
    for c in range(copies):
        for i in range(max(n_cap, n_words)):
            status = "ok" if (i + c) % 7 else "spot_failed"
            words, co = MESSY_WORDS[i % n_words], MESSY_CO[i % n_words]
            rows.append({"__key__": f"{c}-{i:03d}", "status": status, "caption": MESSY_CAPTIONS[i % n_cap],
                         "words": words, "co_words": co, "is_parrot": None if co is None else bool(co)})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("source", ["caption", "coemb"])
@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("norm", [NORM, Normalisation(lowercase=False, strip_punctuation=True, strip_accents=False)])
@pytest.mark.parametrize("partitions", [1, 4])
def test_vocab_queries_equal_the_in_memory_definition(tmp_path, source, n, norm, partitions, monkeypatch):
    """Counted a few rows at a time, flushed every few grams (so a gram is summed over several
    count tables) and ranked by DuckDB, at once or in hash partitions of the grams (as past the
    engine's memory): the same vocabulary as one Counter sorted in Python, for every top_k that
    cuts through a tie."""
    import parrotscope.synth as synth

    monkeypatch.setattr(synth, "hash_partitions", lambda con, files, row_bytes: partitions)
    index = messy_index()
    paths = write_index(tmp_path, index, parts=3)
    files = count_parts(paths, source, n, norm, tmp_path, batch_rows=5, flush_grams=4)
    full = ref_vocab(index, source, n, 1000, norm)
    assert len(files) > 1 or len(full) < 4
    con = connect(Engine(mem_mb=500, threads=2, tmpdir=str(tmp_path)))
    for top_k in (1, 2, 3, 5, 8, 13, 1000):
        expected = ref_vocab(index, source, n, top_k, norm)
        got = rank_grams(con, files, top_k)
        assert got.equals(expected), (top_k, got, expected)
    if n == 1:
        assert full["count"].duplicated().any() and len(files) > 3  # ties to break, counts summed over tables


def test_vocab_file_is_byte_identical_to_the_in_memory_one(tmp_path):
    index = messy_index()
    paths = write_index(tmp_path, index, parts=3)
    for source in ("caption", "coemb"):
        run_synth_vocab(paths, source, 1, 6, {"lowercase": True, "strip_punctuation": True, "strip_accents": True},
                        str(tmp_path / "got.parquet"), Engine(tmpdir=str(tmp_path)))
        write_parquet(ref_vocab(index, source, 1, 6, NORM), tmp_path / "expected.parquet", key="gram")
        assert (tmp_path / "got.parquet").read_bytes() == (tmp_path / "expected.parquet").read_bytes()
    assert not list(tmp_path.glob("synth-vocab-*"))  # the count tables are gone


def test_a_corrupt_index_part_is_named(tmp_path):
    paths = write_index(tmp_path, index_rows(CAPTIONS))
    data = open(paths[1], "rb").read()
    open(paths[1], "wb").write(data[:len(data) // 2])  # a part cut short: no footer
    with pytest.raises(ValueError, match="p00001.parquet"):
        synth_vocab(paths, "caption", 1, 3, NORM, Engine(tmpdir=str(tmp_path)))


# ----------------------------------------------------------------------------------------------
# Rendering


def ink_box(image: Image.Image, background) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the pixels that differ from the background, x1/y1 exclusive."""
    diff = np.abs(np.asarray(image, dtype=int) - np.array(background)).sum(-1) > 0
    ys, xs = np.nonzero(diff)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


@pytest.mark.parametrize("style", list(STYLES))
def test_styles_have_the_authors_colours(style):
    background, fill = STYLES[style]
    image = render_gram("Hello", style, FONT)
    assert image.size == (224, 224) and image.mode == "RGB"
    pixels = np.asarray(image).reshape(-1, 3)
    assert tuple(pixels[0]) == background
    colours = {tuple(p) for p in pixels}
    assert fill in colours  # fully covered glyph pixels carry exactly the text colour
    assert all(min(b, f) <= c <= max(b, f) for p in colours for c, b, f in zip(p, background, fill))


def test_style_pairs_match_sys_benchmark():
    assert STYLES == {"white-black": ((255,) * 3, (0,) * 3), "black-white": ((0,) * 3, (255,) * 3),
                      "gray-white": ((128,) * 3, (255,) * 3), "gray-black": ((128,) * 3, (0,) * 3)}


@pytest.mark.parametrize("word", ["sale", "Ty", "jig", "hello world", "a", "W", "..."])
def test_ink_placement_centres_the_ink_within_two_pixels(word):
    x0, y0, x1, y1 = ink_box(render_gram(word, "white-black", FONT, placement="ink"), (255, 255, 255))
    assert abs((x0 + x1) / 2 - 112) <= 2 and abs((y0 + y1) / 2 - 112) <= 2


@pytest.mark.parametrize("word", ["sale", "Ty", "open now", "menu"])
def test_authors_placement_is_sys_benchmarks_rule(word):
    """The default places the legacy `textsize` box, (right, bottom) of the text drawn at the
    origin, at the canvas centre: drawn here independently with ImageDraw.textbbox."""
    font = ImageFont.truetype(FONT, 32)
    expected = Image.new("RGB", (224, 224), (255, 255, 255))
    draw = ImageDraw.Draw(expected)
    _, _, w, h = draw.textbbox((0, 0), word, font=font)
    draw.text(((224 - w) / 2, (224 - h) / 2), word, font=font, fill=(0, 0, 0))
    np.testing.assert_array_equal(np.asarray(render_gram(word, "white-black", FONT)), np.asarray(expected))


def test_authors_placement_sits_low_by_the_space_above_the_ink():
    def drop(word):
        _, y0, _, y1 = ink_box(render_gram(word, "white-black", FONT), (255, 255, 255))
        _, i0, _, i1 = ink_box(render_gram(word, "white-black", FONT, placement="ink"), (255, 255, 255))
        return (y0 + y1) / 2 - (i0 + i1) / 2
    assert 2 <= drop("Tall") <= 4 and 5 <= drop("sea") <= 7  # ascenders ~3 px, x-height only ~6 px


def test_font_is_32_px():
    with TTFont(FONT) as font:
        cap = font["OS/2"].sCapHeight / font["head"].unitsPerEm
    x0, y0, x1, y1 = ink_box(render_gram("H", "black-white", FONT), (0, 0, 0))
    assert abs((y1 - y0) - cap * 32) <= 1.0
    _, y0, _, y1 = ink_box(render_gram("H", "black-white", FONT, font_px=16), (0, 0, 0))
    assert abs((y1 - y0) - cap * 16) <= 1.0


def test_long_grams_overflow_centred_at_full_size():
    """A gram wider than the canvas is the centre crop of the same gram centred on a wide canvas."""
    gram = "supercalifragilistic expialidocious"
    wide = np.asarray(render_gram(gram, "white-black", FONT, size=1024))[400:624, 400:624]
    crop = np.asarray(render_gram(gram, "white-black", FONT))
    np.testing.assert_array_equal(crop, wide)
    x0, _, x1, _ = ink_box(Image.fromarray(np.asarray(render_gram(gram, "white-black", FONT, size=1024))),
                           (255, 255, 255))
    assert x1 - x0 > 224 and abs((x0 + x1) / 2 - 512) <= 2


def test_benchmark_directory(tmp_path):
    out = tmp_path / "bench"
    out.mkdir()
    (out / "stale").write_text("replaced atomically")
    vocab = vocab_frame(["sale", "猫", "open now"])
    manifest = render_benchmark(vocab, out, FONT)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["manifest.parquet", "benchmark.json", *(f"{s}.tar" for s in STYLES)])
    assert len(manifest) == 2 * 4 and manifest["__key__"].is_unique
    assert set(manifest["gram"]) == {"sale", "open now"}  # no glyph for 猫 in Liberation Sans
    assert manifest.loc[manifest["gram"] == "open now", "n_words"].unique().tolist() == [2]
    info = json.loads((out / "benchmark.json").read_text())
    assert info["dropped"] == ["猫"] and info["n_images"] == 8 and info["font_px"] == 32
    with tarfile.open(out / "gray-black.tar") as tar:
        names = tar.getnames()
        assert names == ["0000000.png", "0000000.txt", "0000001.png", "0000001.txt"]
        assert tar.extractfile("0000001.txt").read().decode() == "open now"
        png = Image.open(tar.extractfile("0000000.png"))
        np.testing.assert_array_equal(np.asarray(png.convert("RGB")),
                                      np.asarray(render_gram("sale", "gray-black", FONT)))
    assert read_benchmark(out)[0].equals(manifest)


# ----------------------------------------------------------------------------------------------
# Measures


def test_benchmark_images_decoded_in_workers_give_the_same_frame(tiny_scorer, bench):
    _, here = sync_metrics(tiny_scorer, bench, batch_size=3, progress=False)
    _, fed = sync_metrics(tiny_scorer, bench, batch_size=3, progress=False, workers=2)
    pd.testing.assert_frame_equal(here, fed, check_exact=True)


def test_metrics_equal_a_hand_computation(tiny_scorer, bench):
    metrics, frame = sync_metrics(tiny_scorer, bench, batch_size=3, progress=False)
    model, preprocess, tokenizer = tiny_scorer.model, tiny_scorer.preprocess, tiny_scorer.tokenizer
    with torch.no_grad():
        text = F.normalize(model.encode_text(tokenizer(GRAMS)), dim=-1)
        own, other, correct, styles = [], [], [], []
        for style in STYLES:
            pixels = torch.stack([preprocess(render_gram(g, style, FONT)) for g in GRAMS])
            sims = F.normalize(model.encode_image(pixels), dim=-1) @ text.T
            for i in range(len(GRAMS)):
                others = torch.cat([sims[i, :i], sims[i, i + 1:]])
                own.append(float(sims[i, i]))
                other.append(float(others.mean()))
                correct.append(bool(sims[i, i] > others.max()))
                styles.append(style)
    own, other = np.array(own), np.array(other)
    assert len(frame) == 20 and metrics["n_images"] == 20 and metrics["n_grams"] == 5
    assert metrics["sync_score_mean"] == pytest.approx(own.mean(), abs=1e-5)
    assert metrics["sync_score_std"] == pytest.approx(own.std(), abs=1e-5)
    assert metrics["sync_gap_mean"] == pytest.approx((own - other).mean(), abs=1e-5)
    assert metrics["word_accuracy"] == pytest.approx(np.mean(correct))
    assert metrics["chance_accuracy"] == pytest.approx(0.2)
    ordered = frame.set_index(["style", "gram"]).loc[list(zip(styles, GRAMS * 4))]
    np.testing.assert_allclose(ordered["own"], own, atol=1e-5)
    np.testing.assert_allclose(ordered["other"], other, atol=1e-5)
    white = slice(0, 5)
    assert metrics["by_style"]["white-black"]["sync_score_mean"] == pytest.approx(own[white].mean(), abs=1e-5)
    assert metrics["by_style"]["white-black"]["word_accuracy"] == pytest.approx(np.mean(correct[white]))
    json.dumps(metrics)  # plain types only


class InkReader(torch.nn.Module):
    """A fake CLIP that reads the rendered word exactly, to check the metric arithmetic.

    Images: the ink mask (pixels far from the corner colour) is matched to templates of every gram;
    the embedding is the one-hot of the best match. Texts: the one-hot of the gram's index. So every
    image's own similarity is 1 and every other similarity 0. Not a model of anything: only here to
    give known similarities.
    """

    def __init__(self, grams):
        super().__init__()
        self.masks = torch.stack([self.ink(self.pixels(render_gram(g, "white-black", FONT))[None])[0]
                                  for g in grams]).float()

    @staticmethod
    def pixels(image):
        return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)

    @staticmethod
    def ink(pixels):
        return (pixels - pixels[:, :, :1, :1]).abs().sum(1) > 100

    def encode_image(self, pixels):
        ink = self.ink(pixels).float().flatten(1)
        masks = self.masks.flatten(1)
        inter = ink @ masks.T
        iou = inter / (ink.sum(1, keepdim=True) + masks.sum(1) - inter)
        return F.one_hot(iou.argmax(1), len(masks)).float()

    def encode_text(self, indices):
        return F.one_hot(indices, len(self.masks)).float()


def test_a_model_that_reads_exactly_scores_one(bench):
    index = {g: i for i, g in enumerate(GRAMS)}
    reader = Scorer("reader", InkReader(GRAMS), InkReader.pixels,
                    lambda texts: torch.tensor([index[t] for t in texts]), "cpu")
    metrics, frame = sync_metrics(reader, bench, batch_size=4, progress=False)
    assert metrics["word_accuracy"] == 1.0 and metrics["mean_rank"] == 1.0
    assert metrics["sync_score_mean"] == 1.0 and metrics["sync_score_std"] == 0.0
    assert metrics["other_mean"] == 0.0 and metrics["sync_gap_mean"] == 1.0
    assert all(s["word_accuracy"] == 1.0 for s in metrics["by_style"].values())


def test_ties_count_against_the_model(bench):
    """A model giving every image and text the same embedding reads nothing: accuracy 0, gap 0."""
    const = Scorer("constant", type("Const", (), {
        "encode_image": staticmethod(lambda x: torch.ones(len(x), 3)),
        "encode_text": staticmethod(lambda x: torch.ones(len(x), 3))})(), InkReader.pixels,
        lambda texts: torch.zeros(len(texts), dtype=torch.long), "cpu")
    metrics, frame = sync_metrics(const, bench, batch_size=7, progress=False)
    assert metrics["sync_score_mean"] == pytest.approx(1.0)  # the highest raw score, reading nothing
    assert metrics["word_accuracy"] == 0.0 and metrics["sync_gap_mean"] == pytest.approx(0.0, abs=1e-6)
    assert (frame["rank"] == 5).all()


def test_template_is_applied_to_the_texts(bench):
    seen = []

    def tokenizer(texts):
        seen.extend(texts)
        return torch.zeros(len(texts), dtype=torch.long)

    const = Scorer("constant", type("Const", (), {
        "encode_image": staticmethod(lambda x: torch.ones(len(x), 3)),
        "encode_text": staticmethod(lambda x: torch.ones(len(x), 3))})(), InkReader.pixels, tokenizer, "cpu")
    sync_metrics(const, bench, template='the word "{}"', progress=False)
    assert seen == [f'the word "{g}"' for g in GRAMS]


def test_frequency_bins_are_log_spaced_and_cover_the_counts():
    counts = pd.Series([1, 2, 9, 10, 99, 100, 999, 1000])
    bins = frequency_bins(counts, n_bins=3)
    assert bins["bin_lo"].tolist() == [1, 1, 1, 10, 10, 100, 100, 100]
    assert bins["bin_hi"].tolist() == [9, 9, 9, 99, 99, 1000, 1000, 1000]
    assert bins["bin"].tolist()[0] == "1-9"
    single = frequency_bins(pd.Series([5, 5]), n_bins=4)
    assert single["bin"].tolist() == ["5", "5"]


def test_grouping_by_frequency_and_length():
    frame = pd.DataFrame({
        "gram_id": [0, 0, 1, 1, 2, 2],
        "count": [1, 1, 9, 9, 100, 100],
        "length": [3, 3, 3, 3, 5, 5],
        "own": [0.1, 0.3, 0.5, 0.7, 0.2, 0.2],
        "gap": [0.0, 0.1, 0.2, 0.3, -0.1, 0.1],
        "correct": [False, True, True, True, False, False],
    })
    by_len = group_by_length(frame)
    assert by_len["length"].tolist() == [3, 5] and by_len["n_grams"].tolist() == [2, 1]
    np.testing.assert_allclose(by_len["sync_score_mean"], [0.4, 0.2])
    np.testing.assert_allclose(by_len["sync_score_std"], [np.std([0.1, 0.3, 0.5, 0.7]), 0.0])
    np.testing.assert_allclose(by_len["word_accuracy"], [0.75, 0.0])
    by_freq = group_by_frequency(frame, n_bins=2)
    assert by_freq["bin"].tolist() == ["1-9", "10-100"]
    np.testing.assert_allclose(by_freq["sync_gap_mean"], [0.15, 0.0])
    assert by_freq["n_images"].tolist() == [4, 2]


# ----------------------------------------------------------------------------------------------
# The evaluation entry point and the figures


def test_run_synth_eval_writes_json_and_table(tmp_path, bench):
    torch.manual_seed(1)
    model, _, _ = build_model("tiny-rn")
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": model.state_dict()}, checkpoint)
    spec = {"name": "tiny", "arch": "tiny-rn", "checkpoint": str(checkpoint)}
    metrics = run_synth_eval(str(bench), spec, str(tmp_path / "m.json"), str(tmp_path / "m.parquet"),
                             batch_size=8, device="cpu")
    stored = json.loads((tmp_path / "m.json").read_text())
    assert stored["model"] == "tiny" and stored["spec"]["checkpoint"] == str(checkpoint)
    assert stored["sync_score_mean"] == pytest.approx(metrics["sync_score_mean"])
    table = read_parquet(tmp_path / "m.parquet")
    assert len(table) == 20 and table["own"].mean() == pytest.approx(stored["sync_score_mean"], abs=1e-6)


def is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_are_written(tmp_path, bench, tiny_scorer):
    metrics, frame = sync_metrics(tiny_scorer, bench, progress=False)
    curves, bars = tmp_path / "fig67.png", tmp_path / "fig8.png"
    plot_sync_by_frequency_and_length({"random": frame, "shifted": frame.assign(own=frame["own"] + 0.1)}, curves)
    plot_sync_scores({"random": metrics, "other": dict(metrics, word_accuracy=0.5)}, bars)
    assert is_png(curves) and is_png(bars)
    frame.to_parquet(tmp_path / "f.parquet")
    (tmp_path / "m.json").write_text(json.dumps(metrics))
    run_synth_figures({"a": str(tmp_path / "f.parquet")}, {"a": str(tmp_path / "m.json")},
                      str(tmp_path / "c.png"), str(tmp_path / "b.png"))
    assert is_png(tmp_path / "c.png") and is_png(tmp_path / "b.png")


def test_an_empty_vocabulary_gives_undefined_measures_not_a_crash(tmp_path, tiny_scorer):
    empty = vocab_table([])
    render_benchmark(empty, tmp_path / "empty", FONT)
    metrics, frame = sync_metrics(tiny_scorer, tmp_path / "empty", progress=False)
    assert frame.empty and metrics["n_images"] == 0 and metrics["by_style"] == {}
    assert metrics["sync_score_mean"] is None and metrics["word_accuracy"] is None
    assert metrics["chance_accuracy"] is None and metrics["by_frequency"] == [] and metrics["by_length"] == []
    json.dumps(metrics, allow_nan=False)
    plot_sync_scores({"empty": metrics}, tmp_path / "bars.png")
    plot_sync_by_frequency_and_length({"empty": frame}, tmp_path / "curves.png")
    assert is_png(tmp_path / "bars.png") and is_png(tmp_path / "curves.png")


def test_a_single_gram_has_no_gap(tmp_path, tiny_scorer):
    render_benchmark(vocab_frame(["solo"]), tmp_path / "one", FONT, styles=["white-black"])
    metrics, frame = sync_metrics(tiny_scorer, tmp_path / "one", progress=False)
    assert metrics["n_images"] == 1 and metrics["sync_gap_mean"] is None and metrics["other_mean"] is None
    assert metrics["sync_score_mean"] == pytest.approx(float(frame["own"].iloc[0]))


def test_per_part_counts_then_the_dataset_wide_rank_give_the_same_file(tmp_path):
    """The rules' split: `synth_counts` per part, `synth_vocab` over the parts' counts."""
    from parrotscope.synth import run_synth_counts, run_vocab_from_counts

    index = messy_index()
    paths = write_index(tmp_path, index, parts=3)
    norm = {"lowercase": True, "strip_punctuation": True, "strip_accents": True}
    counts = [str(tmp_path / f"counts-{i}.parquet") for i in range(len(paths))]
    for path, out in zip(paths, counts):
        run_synth_counts(path, "caption", 2, norm, out, Engine(tmpdir=str(tmp_path)))
    run_vocab_from_counts(counts, 7, str(tmp_path / "split.parquet"), Engine(tmpdir=str(tmp_path)))
    write_parquet(ref_vocab(index, "caption", 2, 7, NORM), tmp_path / "expected.parquet", key="gram")
    assert (tmp_path / "split.parquet").read_bytes() == (tmp_path / "expected.parquet").read_bytes()
    part = read_parquet(counts[0])
    assert list(part.columns) == ["gram", "count"] and part["gram"].is_unique
