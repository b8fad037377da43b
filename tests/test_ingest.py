"""Every bad-input kind becomes a recorded skip; a broken shard is recorded (`on_bad_shard: record`)
or a clear error (`fail`)."""

import io
import json
import logging
import tarfile

import numpy as np
import pytest

from conftest import image_bytes
from parrotscope.ingest import ingest_part, merge_part_counts, read_part_shards, run_ingest, run_parts
from parrotscope.io import read_json, read_parquet
from parrotscope.shards import (ShardError, check_sample, expand_shards, iter_images, iter_part, iter_shard, scan_shard,
                                to_rgb, Sample)

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


def test_fail_mode_makes_a_broken_shard_an_error_naming_it(make_tar, tmp_path):
    good = make_tar("good.tar", sample("000") + sample("001") + sample("002"))
    data = open(good, "rb").read()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) // 2 + 100])
    with pytest.raises(ShardError, match="cut.tar"):
        ingest_part([str(cut)], max_pixels=10**8, on_bad_shard="fail")
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"this is not a tar file" * 100)
    with pytest.raises(ShardError, match="garbage.tar"):
        ingest_part([str(garbage)], max_pixels=10**8, on_bad_shard="fail")
    with pytest.raises(ShardError, match="missing.tar"):
        ingest_part([str(tmp_path / "missing.tar")], max_pixels=10**8, on_bad_shard="fail")
    with pytest.raises(ValueError, match="on_bad_shard"):
        ingest_part([good], max_pixels=10**8, on_bad_shard="ignore")


FOUR = [f"{i:03d}" for i in range(4)]


def member_offsets(path) -> dict[str, tuple[int, int]]:
    """Member name -> (header offset, data offset) in a tar."""
    with tarfile.open(path) as tar:
        return {m.name: (m.offset, m.offset_data) for m in tar.getmembers()}


def cut_copy(path, at: int, name: str):
    """A copy of the tar cut after ``at`` bytes, as an interrupted download leaves it."""
    out = path.parent / name
    out.write_bytes(path.read_bytes()[:at])
    return str(out)


@pytest.fixture
def four(make_tar, tmp_path):
    """A shard of four whole samples 000..003 and the offsets of its members."""
    path = make_tar("four.tar", [m for k in FOUR for m in sample(k)])
    return tmp_path / "four.tar", member_offsets(path)


@pytest.mark.parametrize("where, whole, cut_key", [
    # inside 002's image data: 002 is the sample cut mid-way
    ("data", ["000", "001"], "002"),
    # exactly before 002's first header, as tarfile alone would read a shorter tar: 001 was the
    # group open at the cut, and members of it could have followed
    ("boundary", ["000"], "001"),
    # inside 002's caption header
    ("header", ["000", "001"], "002"),
])
def test_truncated_tar_keeps_its_whole_samples_and_records_the_shard(four, make_tar, caplog, where, whole,
                                                                      cut_key):
    path, offsets = four
    header, data = offsets["002.jpg"] if where != "header" else offsets["002.txt"]
    at = {"data": data + 10, "boundary": header, "header": header + 100}[where]
    cut = cut_copy(path, at, f"cut-{where}.tar")
    after = make_tar("after.tar", sample("100"))  # the part goes on after the damaged shard
    with caplog.at_level(logging.WARNING, logger="parrotscope.shards"):
        table, counts = ingest_part([cut, after], max_pixels=10**8)
    status = dict(zip(table["__key__"], table["status"]))
    assert status == {**{k: "ok" for k in whole}, cut_key: "truncated_shard", "100": "ok"}
    row = table.set_index("__key__").loc[cut_key]
    assert row["shard"] == cut and "shard cut inside this sample" in row["error"]
    assert counts["samples_in"] == len(whole) + 2 == counts["ok"] + counts["skipped"]
    assert counts["skipped_by_reason"] == {"truncated_shard": 1}
    assert counts["shards_truncated"] == [cut] and counts["shards_missing"] == []
    assert cut in counts["shard_errors"]
    assert any(cut in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_garbled_header_mid_way_is_a_cut(four):
    path, offsets = four
    data = bytearray(path.read_bytes())
    header = offsets["002.txt"][0]
    for i in range(header + 2, header + 6):  # the name field: the header checksum no longer matches
        data[i] ^= 0x5A
    garbled = path.parent / "garbled.tar"
    garbled.write_bytes(bytes(data))
    table, counts = ingest_part([str(garbled)], max_pixels=10**8)
    assert dict(zip(table["__key__"], table["status"])) == {"000": "ok", "001": "ok", "002": "truncated_shard"}
    assert counts["shards_truncated"] == [str(garbled)] and counts["samples_in"] == 3


def test_every_reader_sees_the_samples_ingest_recorded(four):
    """Later stages read without a mode of their own: the same cut gives the same samples, the cut
    one is never an image, and a key lost after ingest is an error, not a silent drop."""
    path, offsets = four
    cut = cut_copy(path, offsets["002.jpg"][1] + 10, "cut.tar")
    table, _ = ingest_part([cut], max_pixels=10**8)
    assert [s.key for s in iter_part([cut])] == table["__key__"].tolist()
    for url in (cut, f"pipe:cat {cut}"):
        images = list(iter_images([url], set(table.loc[table.status == "ok", "__key__"]), 10**8))
        assert [k for k, _ in images] == ["000", "001"]
    with pytest.raises(ShardError, match="changed since ingest"):
        list(iter_images([cut], {"000", "003"}, 10**8))
    # the training check scans a shard ingest recorded as cut up to its cut, and refuses others
    assert scan_shard(cut, "record").n_samples == 3 and scan_shard(cut, "record").cut
    with pytest.raises(ShardError, match="cut.tar"):
        scan_shard(cut)


def test_missing_and_unreadable_shards_are_recorded(make_tar, tmp_path, caplog):
    good = make_tar("good.tar", sample("a") + sample("b"))
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"this is not a tar file" * 100)
    missing = str(tmp_path / "missing.tar")
    with caplog.at_level(logging.WARNING, logger="parrotscope.shards"):
        table, counts = ingest_part([missing, good, str(garbage)], max_pixels=10**8)
    assert table["__key__"].tolist() == ["a", "b"] and counts["samples_in"] == counts["ok"] == 2
    assert counts["shards_missing"] == [missing] and counts["shards_truncated"] == [str(garbage)]
    assert any(missing in r.getMessage() for r in caplog.records)
    assert list(iter_images([missing, good], {"a"}, 10**8))[0][0] == "a"


def test_parts_json_totals_damaged_shards_and_training_skips_missing_ones(make_tar, tmp_path):
    good = make_tar("good.tar", sample("a"))
    missing = str(tmp_path / "missing.tar")
    paths = {}
    for name, shards in {"p00000": [good, missing], "p00001": [missing.replace("missing", "gone")]}.items():
        paths[name] = tmp_path / f"{name}.counts.json"
        run_ingest(shards, 10**8, tmp_path / f"{name}.parquet", paths[name])
    run_parts(paths, tmp_path / "parts.json")
    parts = read_json(tmp_path / "parts.json")
    assert parts["n_shards"] == 3 and parts["n_shards_missing"] == 2 and parts["n_shards_truncated"] == 0
    assert parts["shards_missing"] == [missing, missing.replace("missing", "gone")]
    assert parts["samples_in"] == parts["ok"] == 1
    assert read_part_shards(tmp_path / "parts.json") == [good]


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


def test_training_on_the_pool_accepts_only_the_cuts_ingest_recorded(four, tmp_path):
    from parrotscope.train import check_training_shards

    path, offsets = four
    cut = cut_copy(path, offsets["002.jpg"][1] + 10, "cut.tar")
    parts = tmp_path / "parts.json"
    parts.write_text(json.dumps({"ok": 2, "parts": {}, "shards_truncated": [cut]}))
    check_training_shards([cut, str(path)], str(parts))
    parts.write_text(json.dumps({"ok": 2, "parts": {}}))
    with pytest.raises(ShardError, match="cut.tar"):
        check_training_shards([cut], str(parts))


# --- the fast reader of plain local tars ---------------------------------------------------------


def tar_variant(path, kind):
    """A tar of one shape for the fast/tarfile comparison; returns its path."""
    members = [m for k in ("000", "001") for m in sample(k)]
    fmt = tarfile.PAX_FORMAT
    extra = []
    if kind == "repeated_ext":
        members += [("001.txt", b"second caption"), ("000.jpg", GOOD_JPG)]
    elif kind == "odd_names":
        members = [("README", b"no ext"), ("__meta__.json", b"{}"), ("d/__x.json", b"{}"), ("A.JPG", GOOD_JPG),
                   ("A.txt", b""), ("d/sub/002.tar.gz", b"x" * 700), ("e.", b"1")] + members
    elif kind in ("non_ascii", "long_name"):
        members.append(("caf\u00e9.txt" if kind == "non_ascii" else "k" * 120 + ".txt", b"pax header"))
    elif kind == "gnu_long_name":
        fmt = tarfile.GNU_FORMAT
        members.append(("g" * 120 + ".txt", b"gnu header"))
    elif kind == "directories":
        extra = ["d", "d/e"]
        members = [(f"d/{n}", b) for n, b in members]
    with tarfile.open(path, "w:gz" if kind == "gzip" else "w", format=fmt) as tar:
        for name in extra:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    if kind == "cut":
        path.write_bytes(path.read_bytes()[:1500])
    elif kind == "no_end_block":
        raw = path.read_bytes()
        path.write_bytes(raw[:len(raw.rstrip(b"\0")) + (-len(raw.rstrip(b"\0")) % 512)])
    elif kind == "empty_file":
        path.write_bytes(b"")
    return str(path)


PLAIN = ("plain", "repeated_ext", "odd_names", "directories")
NOT_PLAIN = ("non_ascii", "long_name", "gnu_long_name", "gzip", "cut", "no_end_block", "empty_file")


@pytest.mark.parametrize("kind", PLAIN + NOT_PLAIN)
def test_the_fast_reader_gives_tarfiles_samples_or_steps_aside(kind, tmp_path, monkeypatch):
    """Plain tars are read with pread, every other shape by tarfile; the samples (and the damage
    recorded) are the same either way."""
    import parrotscope.shards as shards

    path = tar_variant(tmp_path / f"{kind}.tar", kind)
    fast_used = shards._iter_local_fast(path) is not None
    assert fast_used == (kind in PLAIN)

    def read():
        damage = []
        samples = [(s.key, s.shard, s.files, bool(s.cut)) for s in shards.iter_shard(path, "record", damage)]
        return samples, [(d.kind, d.n_samples) for d in damage]

    fast = read()
    monkeypatch.setattr(shards, "_iter_local_fast", lambda url, only=None: None)
    assert fast == read()
    if kind in PLAIN:
        assert fast[0]  # samples were read, by the fast path


@pytest.mark.parametrize("kind", ("plain", "repeated_ext", "gzip"))
def test_only_reads_the_bytes_of_the_keys_asked_for(kind, tmp_path):
    """``only``: the same samples in the same order; from a plain tar, the others unread and empty."""
    path = tar_variant(tmp_path / f"{kind}.tar", kind)
    every = list(iter_shard(path))
    picked = list(iter_shard(path, only={"001"}))
    assert [s.key for s in picked] == [s.key for s in every]
    for whole, some in zip(every, picked):
        if some.key == "001" or kind == "gzip":  # gzip goes through tarfile: everything is read
            assert (some.files, some.unread) == (whole.files, False)
        else:
            assert (some.files, some.unread) == ({}, True)


def test_the_fast_readers_key_split_is_webdatasets():
    from webdataset.tariterators import base_plus_ext

    from parrotscope.shards import _BASE_PLUS_EXT

    names = ["000.jpg", "a/b/000.tar.gz", "d.e/000.json", "README", "x.", ".hidden", "a/.b", "k.JPG", "a/b/",
             "caf\u00e9.txt", "a..b", "dir/sub/k.seg.png", "/abs/k.txt", "k"]
    for name in names:
        m = _BASE_PLUS_EXT.match(name)
        assert (m.groups() if m else (None, None)) == base_plus_ext(name), name


def test_the_fast_readers_numbers_are_tarfiles():
    from parrotscope.shards import _octal

    fields = [b"00000001234\0", b"     1234 \0", b"1234\0\0\0\0\0\0\0\0", b"\0" * 12, b"00000000000 ", b"0000001234 \0",
              b"7777777777\0\0", b"00000000017\0"]
    for field in fields:
        assert _octal(field) == tarfile.nti(field), field
    for bad in (b"0000000x234\0", b"12 34\0\0\0\0\0\0\0"):
        with pytest.raises((ValueError, tarfile.InvalidHeaderError)):
            tarfile.nti(bad)
        with pytest.raises(ValueError):
            _octal(bad)
