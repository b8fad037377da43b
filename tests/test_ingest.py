"""Every bad-input kind becomes a recorded skip (or, for a broken shard, a clear error)."""

import json

import numpy as np
import pytest

from conftest import image_bytes
from parrotscope.ingest import ingest_part, merge_part_counts, read_part_shards, run_ingest, run_parts
from parrotscope.io import read_json, read_parquet
from parrotscope.shards import ShardError, check_sample, expand_shards, iter_images, to_rgb, Sample

GOOD_JPG = image_bytes()


def sample(key, jpg=GOOD_JPG, txt=b"a red square", ext="jpg"):
    out = []
    if jpg is not None:
        out.append((f"{key}.{ext}", jpg))
    if txt is not None:
        out.append((f"{key}.txt", txt))
    out.append((f"{key}.json", json.dumps({"key": key}).encode()))
    return out


def test_every_bad_input_kind_is_a_recorded_skip(make_tar):
    truncated_jpg = GOOD_JPG[: len(GOOD_JPG) // 2]
    members = (
        sample("000")
        + sample("001", jpg=b"\x00not an image at all")
        + sample("002", jpg=truncated_jpg)
        + sample("003", txt=None)
        + sample("004", txt=b"   \n")
        + sample("005", txt="café".encode("latin-1"))
        + sample("006", jpg=b"")
        + sample("007", jpg=image_bytes(size=(400, 300)))
        + sample("008", jpg=None)
        + sample("009", jpg=image_bytes("CMYK"))
        + sample("010", jpg=image_bytes("RGBA", fmt="PNG"), ext="png")
        + sample("011", jpg=image_bytes("L", fmt="PNG"), ext="png")
        + sample("012", jpg=image_bytes("I;16", fmt="PNG"), ext="png")
        + sample("013", jpg=image_bytes("RGB", fmt="WEBP"), ext="webp")
        + sample("000")  # duplicate key, later in the shard
    )
    shard = make_tar("a.tar", members)
    table, counts = ingest_part([shard], max_pixels=100_000)
    status = table.set_index("__key__")["status"].to_dict()
    assert status == {
        "000": "ok", "001": "corrupt_image", "002": "corrupt_image", "003": "missing_caption",
        "004": "empty_caption", "005": "caption_not_utf8", "006": "empty_image",
        "007": "image_too_large", "008": "missing_image", "009": "ok", "010": "ok", "011": "ok",
        "012": "ok", "013": "ok",
    }
    assert counts["samples_in"] == 15
    assert counts["ok"] == 6 and counts["skipped"] == 9
    assert counts["skipped_by_reason"]["duplicate_key"] == 1
    assert counts["duplicates"] == [{"__key__": "000", "shard": shard}]
    assert all(table.loc[table.status != "ok", "error"].str.len() > 0)
    assert table["__key__"].is_unique


def test_duplicate_key_across_shards_of_a_part(make_tar):
    a = make_tar("a.tar", sample("k1") + sample("k2"))
    b = make_tar("b.tar", sample("k2") + sample("k3"))
    table, counts = ingest_part([a, b], max_pixels=10**8)
    assert sorted(table["__key__"]) == ["k1", "k2", "k3"]
    assert table.set_index("__key__").loc["k2", "shard"] == a
    assert counts["samples_in"] == 4 and counts["skipped_by_reason"] == {"duplicate_key": 1}


def test_truncated_tar_is_an_error_naming_the_shard(make_tar, tmp_path):
    good = make_tar("good.tar", sample("000") + sample("001") + sample("002"))
    data = open(good, "rb").read()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) // 2 + 100])
    with pytest.raises(ShardError, match="cut.tar"):
        ingest_part([str(cut)], max_pixels=10**8)
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"this is not a tar file" * 100)
    with pytest.raises(ShardError, match="garbage.tar"):
        ingest_part([str(garbage)], max_pixels=10**8)
    with pytest.raises(ShardError, match="missing.tar"):
        ingest_part([str(tmp_path / "missing.tar")], max_pixels=10**8)


def test_pipe_urls_and_brace_patterns(make_tar, tmp_path):
    make_tar("s00.tar", sample("a0"))
    make_tar("s01.tar", sample("a1"))
    urls = expand_shards(f"pipe:cat {tmp_path}/s{{00..01}}.tar")
    assert urls == [f"pipe:cat {tmp_path}/s00.tar", f"pipe:cat {tmp_path}/s01.tar"]
    table, counts = ingest_part(urls, max_pixels=10**8)
    assert sorted(table["__key__"]) == ["a0", "a1"] and counts["ok"] == 2


def test_modes_convert_to_rgb_with_white_behind_transparency():
    from PIL import Image

    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert to_rgb(rgba)[0, 0].tolist() == [255, 255, 255]
    for mode in ("L", "CMYK", "P", "I;16", "1"):
        img = Image.new("RGB", (5, 3), (10, 200, 30)).convert(mode) if mode != "I;16" else \
            Image.fromarray(np.arange(15, dtype=np.uint16).reshape(3, 5))
        arr = to_rgb(img)
        assert arr.shape == (3, 5, 3) and arr.dtype == np.uint8


def test_run_ingest_writes_table_and_counts_and_iter_images(make_tar, tmp_path):
    shard = make_tar("a.tar", sample("x") + sample("y", jpg=b"bad"))
    run_ingest([shard], 10**8, tmp_path / "t.parquet", tmp_path / "c.json")
    t = read_parquet(tmp_path / "t.parquet")
    c = read_json(tmp_path / "c.json")
    assert len(t) == 2 and c["ok"] == 1
    merged = merge_part_counts({"p00000": c, "p00001": c})
    assert merged["samples_in"] == 4 and merged["skipped_by_reason"] == {"corrupt_image": 2}
    images = list(iter_images([shard], {"x"}, 10**8))
    assert [k for k, _ in images] == ["x"] and images[0][1].shape == (24, 32, 3)


def test_caption_falls_back_to_json_caption():
    s = Sample("k", "s.tar", {"jpg": GOOD_JPG, "json": json.dumps({"caption": "from json"}).encode()})
    checked, _ = check_sample(s, 10**8)
    assert checked.status == "ok" and checked.caption == "from json"


def test_read_part_shards_lists_every_shard_in_part_order(tmp_path):
    # Part order is parts.json's, not the names' sort order, and non-local URLs are kept.
    parts = {"p00001": ["b/0.tar", "b/1.tar"], "p00000": ["pipe:cat a/0.tar"]}
    paths = {}
    for name, shards in parts.items():
        paths[name] = tmp_path / f"{name}.counts.json"
        paths[name].write_text(json.dumps({"shards": shards, "samples_in": 1, "ok": 1, "skipped": 0,
                                           "skipped_by_reason": {}, "duplicates": []}))
    run_parts(paths, tmp_path / "parts.json")
    assert read_part_shards(tmp_path / "parts.json") == ["b/0.tar", "b/1.tar", "pipe:cat a/0.tar"]
