"""The spot stage: real OCR engines on rendered words, and the table logic around them."""

import importlib.util
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from conftest import image_bytes, write_tar
from parrotscope.ingest import run_ingest
from parrotscope.io import read_parquet
from parrotscope.shards import ShardError
from parrotscope.spot import (
    SPOTTERS,
    Detection,
    RapidOCRSpotter,
    Spotter,
    check_image,
    detections_row,
    keep_detection,
    make_spotter,
    merge_word_pieces,
    rapidocr_params,
    resolve_spot_device,
    reading_order,
    run_spot,
    spot_table,
    split_line_polygon,
)

FONT = "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf"
# Native-size detection for both test sizes (no upscaling), as the demo config does.
NATIVE = {"Det.limit_type": "max", "Det.limit_side_len": 736, "Global.use_cls": False}
SQUARE = (0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0)


def render(size, lines, font_size, background=(235, 225, 190), fill=(150, 20, 20)):
    """Draw lines of words at given (x, y); return the RGB array and each word's drawn box."""
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(FONT, font_size)
    boxes = {}
    for (x, y), line in lines:
        draw.text((x, y), line, font=font, fill=fill)
        for word in line.split():
            start = line.index(word)
            left = x + draw.textlength(line[:start], font=font)
            top, bottom = draw.textbbox((x, y), word, font=font)[1::2]
            boxes[word.lower()] = (left, top, left + draw.textlength(word, font=font), bottom)
    return np.asarray(image, dtype=np.uint8).copy(), boxes


def bbox(flat):
    xs, ys = flat[0::2], flat[1::2]
    return min(xs), min(ys), max(xs), max(ys)


def area(box):
    return (box[2] - box[0]) * (box[3] - box[1])


def around(found, drawn):
    """(share of the drawn word's box that the found box covers, found area / drawn area)."""
    ix = max(0.0, min(found[2], drawn[2]) - max(found[0], drawn[0]))
    iy = max(0.0, min(found[3], drawn[3]) - max(found[1], drawn[1]))
    return ix * iy / area(drawn), area(found) / area(drawn)


def assert_reads(row, drawn, width, height):
    """Every drawn word read (case-insensitive), one polygon per word, each inside the image and
    on its drawn word."""
    words = [w.lower() for w in row["words"]]
    assert row["status"] == "ok" and row["error"] == ""
    assert (row["width"], row["height"]) == (width, height)
    assert set(drawn) <= set(words), (words, list(drawn))
    assert len(row["polygons"]) == len(row["word_scores"]) == row["n_words"] == len(row["words"])
    assert row["text"] == " ".join(row["words"])
    for word, flat in zip(words, row["polygons"]):
        assert len(flat) == 8
        x0, y0, x1, y1 = bbox(flat)
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        if word in drawn:
            covered, scale = around((x0, y0, x1, y1), drawn[word])
            # engines pad their boxes around the glyphs; proportional cuts (EasyOCR) shift a little
            assert covered > 0.75 and scale < 2.5, (word, (x0, y0, x1, y1), drawn[word])


@pytest.fixture(scope="module")
def rapid():
    return make_spotter("rapidocr", NATIVE, threads=2)


def test_rapidocr_reads_a_word_on_128px(rapid):
    image, drawn = render((128, 128), [((14, 48), "Parrot")], 26)
    row = spot_table([("a", image, None)], rapid, 0.5, 2).iloc[0]
    assert_reads(row, drawn, 128, 128)


def test_rapidocr_gives_one_polygon_per_word_on_320x240(rapid):
    image, drawn = render((320, 240), [((12, 30), "fresh PARROT food"), ((40, 140), "Big Sale")], 30)
    row = spot_table([("b", image, None)], rapid, 0.5, 2).iloc[0]
    assert_reads(row, drawn, 320, 240)
    # reading order: the first line's words, left to right, before the second line's
    assert [w.lower() for w in row["words"]] == ["fresh", "parrot", "food", "big", "sale"]


def test_rapidocr_without_word_boxes_splits_lines_proportionally():
    spotter = make_spotter("rapidocr", {**NATIVE, "Global.return_word_box": False}, threads=2)
    image, drawn = render((320, 240), [((12, 90), "hello parrot world")], 32)
    detections = spotter.spot(image)
    assert detections and all(det.word_polygons is None for det in detections)
    row = spot_table([("c", image, None)], spotter, 0.5, 2).iloc[0]
    assert_reads(row, drawn, 320, 240)


def test_text_free_image_yields_no_words(rapid):
    image = Image.new("RGB", (128, 128), (90, 140, 200))
    draw = ImageDraw.Draw(image)
    draw.ellipse([30, 30, 90, 90], outline=(250, 250, 250), width=8)
    draw.rectangle([100, 10, 120, 30], fill=(20, 20, 20))
    row = spot_table([("d", np.asarray(image).copy(), None)], rapid, 0.5, 2).iloc[0]
    assert row["status"] == "ok" and row["n_words"] == 0 and row["text"] == ""


def test_keep_detection_drops_symbols_and_low_scores():
    assert not keep_detection(Detection("★", 0.99, SQUARE), 0.5, 2)
    assert not keep_detection(Detection("O", 0.99, SQUARE), 0.5, 2)
    assert not keep_detection(Detection("▼ •", 0.99, SQUARE), 0.5, 2)
    assert not keep_detection(Detection("SALE", 0.3, SQUARE), 0.5, 2)
    assert keep_detection(Detection("OK", 0.9, SQUARE), 0.5, 2)
    assert keep_detection(Detection("★ 5%", 0.9, SQUARE), 0.5, 1)


def test_dropped_detections_are_counted():
    dets = [Detection("★", 0.99, SQUARE), Detection("big sale", 0.9, SQUARE)]
    row = detections_row("k", dets, (10, 10), 0.5, 2)
    assert row["n_dropped"] == 1 and row["words"] == ["big", "sale"] and row["word_scores"] == [0.9, 0.9]


def test_split_line_polygon_cuts_by_character_share():
    line = ((0.0, 0.0), (50.0, 0.0), (50.0, 10.0), (0.0, 10.0))
    first, second = split_line_polygon(line, "ab cd")
    assert first == ((0.0, 0.0), (20.0, 0.0), (20.0, 10.0), (0.0, 10.0))
    assert second == ((30.0, 0.0), (50.0, 0.0), (50.0, 10.0), (30.0, 10.0))


def test_merge_word_pieces_joins_pieces_of_one_word_and_refuses_mismatches():
    a = ((0.0, 0.0), (10.0, 0.0), (10.0, 5.0), (0.0, 5.0))
    b = ((12.0, 0.0), (15.0, 0.0), (15.0, 5.0), (12.0, 5.0))
    c = ((20.0, 0.0), (30.0, 0.0), (30.0, 5.0), (20.0, 5.0))
    merged = merge_word_pieces("50% off", [("50", a), ("%", b), ("off", c)])
    assert merged == (((0.0, 0.0), (15.0, 0.0), (15.0, 5.0), (0.0, 5.0)), c)
    assert merge_word_pieces("50% off", [("50", a), ("off", c)]) is None
    assert merge_word_pieces("ab cd", [("abcd", a)]) is None


def test_reading_order_sorts_lines_then_x():
    def det(text, x, y):
        return Detection(text, 1.0, ((x, y), (x + 10, y), (x + 10, y + 10), (x, y + 10)))

    ordered = reading_order([det("c", 0, 40), det("b", 30, 1), det("a", 0, 0)])
    assert [d.text for d in ordered] == ["a", "b", "c"]


class Failing(Spotter):
    """Raises on images whose first pixel is black; reads 'hi there' elsewhere."""

    name = "failing"

    def spot(self, image):
        check_image(image)
        if image[0, 0].sum() == 0:
            raise RuntimeError("engine exploded")
        return [Detection("hi there", 0.9, ((1.0, 1.0), (20.0, 1.0), (20.0, 8.0), (1.0, 8.0)))]


def test_spot_table_keeps_every_item_with_its_status():
    white = np.full((12, 24, 3), 255, np.uint8)
    black = np.zeros((12, 24, 3), np.uint8)
    items = [
        ("k1", white, None),
        ("k2", None, "corrupt_image"),
        ("k3", black, None),
        ("k4", None, None),
        ("k5", np.zeros((4, 4), np.uint8), None),
    ]
    table = spot_table(items, Failing(), 0.5, 2, progress="spot")
    assert table["__key__"].tolist() == ["k1", "k2", "k3", "k4", "k5"] and table["__key__"].is_unique
    rows = table.set_index("__key__")
    assert rows.loc["k1", "status"] == "ok" and list(rows.loc["k1", "words"]) == ["hi", "there"]
    assert (rows.loc["k1", "width"], rows.loc["k1", "height"]) == (24, 12)
    assert (rows.loc["k2", "status"], rows.loc["k2", "error"]) == ("skipped", "corrupt_image")
    assert (rows.loc["k2", "width"], rows.loc["k2", "n_words"]) == (0, 0)
    assert rows.loc["k3", "status"] == "error" and "engine exploded" in rows.loc["k3", "error"]
    assert (rows.loc["k3", "width"], rows.loc["k3", "height"]) == (24, 12)
    assert (rows.loc["k4", "status"], rows.loc["k4", "error"]) == ("skipped", "no image")
    assert rows.loc["k5", "status"] == "error" and "HxWx3 uint8" in rows.loc["k5", "error"]
    assert table[["width", "height", "n_words", "n_dropped"]].dtypes.eq("int64").all()


def test_spot_table_refuses_duplicate_keys():
    image = np.full((8, 8, 3), 255, np.uint8)
    with pytest.raises(ValueError, match="duplicate sample key 'x'"):
        spot_table([("x", image, None), ("x", image, None)], Failing(), 0.5, 2)


def test_empty_input_gives_an_empty_table_with_all_columns():
    table = spot_table([], Failing(), 0.5, 2)
    assert len(table) == 0 and "polygons" in table.columns and "__key__" in table.columns


def test_make_spotter_rejects_unknown_backends_listing_known_ones():
    with pytest.raises(ValueError, match=r"unknown spot backend 'deepsolo'.*easyocr.*rapidocr"):
        make_spotter("deepsolo", {}, 1)
    assert {"rapidocr", "easyocr"} <= set(SPOTTERS)


def test_rapidocr_params_checks_keys_and_sets_threads():
    params = rapidocr_params({"Det": {"limit_side_len": 320}, "Global.use_cls": False}, threads=64)
    assert params["Det.limit_side_len"] == 320 and params["Global.use_cls"] is False
    assert params["Global.log_level"] == "error" and params["Global.return_word_box"] is True
    assert 1 <= params["EngineConfig.onnxruntime.intra_op_num_threads"] <= 64
    assert params["EngineConfig.onnxruntime.inter_op_num_threads"] == 1
    with pytest.raises(ValueError, match="Det.limit_sidelen"):
        rapidocr_params({"Det.limit_sidelen": 320}, 1)
    with pytest.raises(ValueError, match="threads"):
        rapidocr_params({"EngineConfig.onnxruntime.intra_op_num_threads": 2}, 1)
    assert rapidocr_params({"Det.ocr_version": "PP-OCRv6"}, 1)["Det.ocr_version"].value == "PP-OCRv6"
    assert params["EngineConfig.onnxruntime.use_cuda"] is False
    assert rapidocr_params({}, 1, cuda=True)["EngineConfig.onnxruntime.use_cuda"] is True
    with pytest.raises(ValueError, match="spot.device"):
        rapidocr_params({"EngineConfig.onnxruntime.use_cuda": True}, 1)


def test_spot_device_falls_back_to_cpu_with_its_reason(monkeypatch):
    import onnxruntime

    assert resolve_spot_device("cpu") == ("cpu", "spot.device is cpu")
    with pytest.raises(ValueError, match="spot.device"):
        resolve_spot_device("tpu")
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    for asked in ("auto", "cuda"):
        device, why = resolve_spot_device(asked)
        assert device == "cpu" and "no CUDAExecutionProvider" in why and "onnxruntime-gpu" in why
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    device, why = resolve_spot_device("cuda")
    assert device == "cpu" and "no CUDA GPU" in why
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert resolve_spot_device("auto")[0] == "cuda"


def test_run_spot_writes_one_row_per_sample(tmp_path, rapid):
    image, _ = render((128, 96), [((10, 30), "Parrot")], 26)
    png = io.BytesIO()
    Image.fromarray(image).save(png, format="PNG")
    shard = write_tar(tmp_path / "s.tar", [
        ("a.png", png.getvalue()), ("a.txt", b"a parrot"),
        ("b.jpg", b"garbage"), ("b.txt", b"broken"),
        ("c.jpg", image_bytes(size=(40, 30))), ("c.txt", b"plain red"),
    ])
    samples, out = tmp_path / "samples.parquet", tmp_path / "spot.parquet"
    run_ingest([shard], 10_000_000, samples, tmp_path / "counts.json")
    run_spot(samples, [shard], out, backend="rapidocr", options=NATIVE, threads=1, min_score=0.5,
             min_alnum=2, max_pixels=10_000_000)
    table = read_parquet(out).set_index("__key__")
    assert table.index.tolist() == ["a", "b", "c"]
    assert table.loc["a", "status"] == "ok" and [w.lower() for w in table.loc["a", "words"]] == ["parrot"]
    assert (table.loc["b", "status"], table.loc["b", "error"]) == ("skipped", "corrupt_image")
    assert table.loc["c", "status"] == "ok" and table.loc["c", "n_words"] == 0

    # shards changed since ingest: the stage stops rather than misattribute images to keys
    other = write_tar(tmp_path / "t.tar", [("z.png", png.getvalue()), ("z.txt", b"z")])
    with pytest.raises(ShardError, match="changed since ingest"):
        run_spot(samples, [other], tmp_path / "x.parquet", backend="rapidocr", options=NATIVE,
                 threads=1, min_score=0.5, min_alnum=2, max_pixels=10_000_000)


easyocr_missing = importlib.util.find_spec("easyocr") is None or importlib.util.find_spec("easyocr_en_models") is None


@pytest.mark.skipif(easyocr_missing, reason="easyocr extra not installed (pip install -e .[easyocr])")
def test_easyocr_reads_words_offline():
    spotter = make_spotter("easyocr", {}, threads=2)
    image, drawn = render((320, 240), [((12, 30), "fresh PARROT food"), ((40, 140), "Big Sale")], 30)
    row = spot_table([("e", image, None)], spotter, 0.3, 2).iloc[0]
    assert_reads(row, drawn, 320, 240)
    image, drawn = render((128, 128), [((14, 48), "Parrot")], 26)
    assert_reads(spot_table([("f", image, None)], spotter, 0.3, 2).iloc[0], drawn, 128, 128)


def test_easyocr_rejects_unknown_options_or_reports_how_to_install():
    if easyocr_missing:
        with pytest.raises(ImportError, match=r"pip install -e \.\[easyocr\]"):
            make_spotter("easyocr", {}, 1)
    else:
        with pytest.raises(ValueError, match="text_treshold"):
            make_spotter("easyocr", {"text_treshold": 0.5}, 1)


def test_rapidocr_spotter_refuses_non_rgb_arrays(rapid):
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        rapid.spot(np.zeros((10, 10, 3), np.float32))
    assert isinstance(rapid, RapidOCRSpotter)
