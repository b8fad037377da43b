"""Materialising: one read of each part's shards serves every subset of a pass; the reduce writes
shards byte-identical to copying the subset alone (or a listing of the pieces); DataComp uid lists
have the resharder's layout; counts reconcile; an edited subset reruns only its own chain."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from parrotscope.io import read_json, read_parquet, write_parquet
from parrotscope.materialise import (
    UID_DTYPE,
    MaterialiseError,
    SampleNotFound,
    TarWriter,
    index_path_of,
    list_subset,
    map_part,
    materialise_subset,
    member_header,
    plan_passes,
    reshard_subset,
    run_reduce,
    uid_array,
)
from parrotscope.shards import iter_shard

from conftest import image_bytes, write_tar


def sample_members(key, i, uid=None):
    meta = {"key": key} if uid is None else {"key": key, "uid": uid}
    return {"jpg": image_bytes(color=(i * 20 % 255, 10, 10)), "txt": f"caption {key}".encode(),
            "json": json.dumps(meta).encode()}


def uid_of(i):
    """A 128-bit hex uid; high halves differ, so sorting by (high, low) is tested."""
    return f"{((i * 0x9E3779B97F4A7C15) << 61 | (i * 7919)) % (1 << 128):032x}"


@pytest.fixture
def source(tmp_path):
    """Three source shards of six samples each (two parts: [a], [b, c]); one sample carries an
    extra member (not copied), one caption is only in its json, one key is repeated in its shard."""
    shards, members = [], {}
    for s, prefix in enumerate("abc"):
        entries = []
        for i in range(6):
            key = f"{prefix}{i}"
            members[key] = sample_members(key, 6 * s + i, uid=uid_of(6 * s + i))
            if key == "b2":
                del members[key]["txt"]
                members[key]["json"] = json.dumps({"caption": "only in json", "uid": uid_of(6 * s + i)}).encode()
            entries += [(f"{key}.{ext}", data) for ext, data in members[key].items()]
            if key == "a1":
                entries.append(("a1.npy", b"\x00" * 8))
        if prefix == "c":
            entries += [("c3.jpg", image_bytes()), ("c3.txt", b"a repeated key")]
            members[LONG] = sample_members(LONG, 99, uid=uid_of(99))  # a name that needs a PAX record
            entries += [(f"{LONG}.{ext}", data) for ext, data in members[LONG].items()]
        shards.append(write_tar(tmp_path / f"{prefix}.tar", entries))
    return shards, members


def keys_table(keys, shards):
    by_prefix = dict(zip("abc", shards))
    return pd.DataFrame({"__key__": keys, "part": ["p00000" if k[0] == "a" else "p00001" for k in keys],
                         "shard": [by_prefix[k[0]] for k in keys]})


LONG = "c" + "l" * 110
PARTS = {"p00000": [0], "p00001": [1, 2]}
SUBSETS = {
    "one": ["b5", "a1", "a2", "b0", "a4", "b3", "c2", "c3", LONG],
    "two": ["a0", "a1", "b2", "c5", "c0", "b4"],
    "three": ["c1", "c4", "c3", "b1"],  # nothing in part p00000: an empty piece
}


def run_maps(shards, subsets, root):
    """The map of every part for ``subsets``; returns subset -> pieces in part order, and counts."""
    pieces = {name: [] for name in subsets}
    counts = {}
    for part, idx in PARTS.items():
        part_shards = [shards[i] for i in idx]
        tables = {name: keys_table(chosen, shards) for name, chosen in subsets.items()}
        keys = {name: t[t["part"] == part] for name, t in tables.items()}
        out = {name: root / "pieces" / name / f"{part}.tar" for name in subsets}
        counts[part] = map_part(part_shards, keys, out, root / "counts" / f"{part}.json", part=part)
        for name in subsets:
            pieces[name].append(out[name])
    return pieces, counts


def tree(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("n_shards", [1, 2, 3])
def test_map_and_reshard_are_byte_identical_to_copying_each_subset_alone(source, tmp_path, n_shards):
    shards, _ = source
    pieces, _ = run_maps(shards, SUBSETS, tmp_path)
    for name, chosen in SUBSETS.items():
        keys = keys_table(chosen, shards)
        materialise_subset(keys, shards, tmp_path / "alone" / name / "shards", n_shards)
        reshard_subset(keys.sample(frac=1.0, random_state=0), pieces[name], tmp_path / "subsets" / name / "shards",
                       n_shards, name)
        alone, reduced = tree(tmp_path / "alone" / name / "shards"), tree(tmp_path / "subsets" / name / "shards")
        assert list(alone) == [f"{i:05d}.tar" for i in range(n_shards)] + ["sizes.json"]
        assert reduced == alone, name


def test_pieces_hold_each_subsets_samples_with_the_source_bytes(source, tmp_path):
    shards, members = source
    pieces, counts = run_maps(shards, SUBSETS, tmp_path)
    for name, chosen in SUBSETS.items():
        got = {}
        for piece in pieces[name]:
            samples = list(iter_shard(str(piece)))
            index = read_parquet(index_path_of(piece))
            assert index["__key__"].tolist() == [s.key for s in samples]  # index in piece order
            got.update({s.key: s.files for s in samples})
        assert sorted(got) == sorted(chosen)
        for key, files in got.items():
            expected = dict(members[key])
            if key == "b2":
                expected["txt"] = b"only in json"  # OpenCLIP reads captions from txt only
            assert files == expected, key  # a1.npy left out; the first c3 is the sample
    assert [s.key for s in iter_shard(str(pieces["three"][0]))] == []


def test_map_counts_reconcile(source, tmp_path):
    shards, _ = source
    _, counts = run_maps(shards, SUBSETS, tmp_path)
    p0, p1 = counts["p00000"], counts["p00001"]
    for c in (p0, p1):
        assert c["samples_in"] == c["samples_selected"] + c["samples_skipped"]
        assert c["samples_skipped"] == sum(c["skipped_by_reason"].values())
        for stats in c["subsets"].values():
            assert stats["samples"] == stats["selected"]
    assert p0["samples_in"] == 6 and p0["shards_read"] == 1
    assert p1["samples_in"] == 14 and p1["shards_read"] == 2 and p1["skipped_by_reason"]["duplicate_key"] == 1
    union = {k for chosen in SUBSETS.values() for k in chosen}
    assert p0["samples_selected"] + p1["samples_selected"] == len(union)
    assert p0["subsets"]["one"]["members_dropped"] == 1 and p1["subsets"]["two"]["caption_from_json"] == 1
    assert p0["bytes_read"] == (tmp_path / "a.tar").stat().st_size
    assert read_json(tmp_path / "counts" / "p00001.json") == json.loads(json.dumps(p1))
    # A shard no subset chose from is not read at all.
    only_a = map_part(shards, {"x": keys_table(["a0"], shards)}, {"x": tmp_path / "x.tar"})
    assert only_a["shards_read"] == 1 and only_a["shards_without_selected_keys"] == 2


def test_map_missing_key_names_shard_and_key_and_publishes_nothing(source, tmp_path):
    shards, _ = source
    keys = {"x": keys_table(["b1", "b9"], shards), "y": keys_table(["c0"], shards)}
    out = {"x": tmp_path / "p" / "x.tar", "y": tmp_path / "p" / "y.tar"}
    with pytest.raises(SampleNotFound) as err:
        map_part(shards[1:], keys, out, tmp_path / "p" / "counts.json")
    assert shards[1] in str(err.value) and "b9" in str(err.value)
    assert list((tmp_path / "p").iterdir()) == []
    with pytest.raises(MaterialiseError, match="not among the part's"):
        map_part(shards[2:], keys, out)


def test_reshard_refuses_pieces_that_do_not_hold_the_subset(source, tmp_path):
    shards, _ = source
    pieces, _ = run_maps(shards, SUBSETS, tmp_path)
    keys = keys_table(SUBSETS["one"], shards)
    with pytest.raises(MaterialiseError, match=r"6 missing.*4 not selected"):
        reshard_subset(keys, pieces["one"][:1] + [pieces["two"][1]], tmp_path / "o", 2, "one")
    more = keys_table([*SUBSETS["one"], "c0"], shards)
    with pytest.raises(MaterialiseError, match="1 missing"):
        reshard_subset(more, pieces["one"], tmp_path / "o", 2, "one")
    assert not (tmp_path / "o").exists()
    with pytest.raises(MaterialiseError, match="curate.n_shards"):
        reshard_subset(keys, pieces["one"], tmp_path / "o", len(keys) + 1, "one")


def test_tar_writer_writes_what_tarfile_writes():
    members = [("k0.jpg", b"x" * 1000), ("k0.txt", b""), ("k1.json", b"{}"), ("k" * 120 + ".txt", b"long name"),
               ("caf\u00e9.txt", "accent".encode())]
    expected = io.BytesIO()
    with tarfile.open(fileobj=expected, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = (
                len(data), 0, 0o644, 0, 0, "", "")
            tar.addfile(info, io.BytesIO(data))
    got = io.BytesIO()
    writer = TarWriter(got)
    for name, data in members:
        writer.add(member_header(name, len(data)), data)
    writer.close()
    assert got.getvalue() == expected.getvalue()


@pytest.mark.parametrize("name", ["k.jpg", "0" * 96 + ".jpg", "0" * 97 + ".jpg", "dir/sub/key.txt", "caf\u00e9.json",
                                  "bad\udcff.txt"])
@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 8 ** 11 - 1, 8 ** 11])
def test_fast_member_header_is_tarfiles_header(name, size):
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = size, 0, 0o644, 0, 0, "", ""
    assert member_header(name, size) == info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")


def test_reshard_refuses_a_damaged_piece(source, tmp_path):
    shards, _ = source
    pieces, _ = run_maps(shards, SUBSETS, tmp_path)
    keys = keys_table(SUBSETS["one"], shards)
    data = pieces["one"][1].read_bytes()
    pieces["one"][1].write_bytes(data[:-tarfile.RECORDSIZE])
    with pytest.raises(MaterialiseError, match="not what its index describes"):
        reshard_subset(keys, pieces["one"], tmp_path / "o", 2, "one")
    pieces["one"][1].write_bytes(data[512:1024] + data[:512] + data[1024:])  # same size, samples garbled
    with pytest.raises(MaterialiseError, match="is not 'b0' as its index says"):
        reshard_subset(keys, pieces["one"], tmp_path / "o", 2, "one")
    assert not (tmp_path / "o").exists()


# --- listing and uids ------------------------------------------------------------------------------


def test_listing_names_the_pieces_and_the_trainer_accepts_it(source, tmp_path):
    shards, _ = source
    subsets = {name: chosen for name, chosen in SUBSETS.items() if name != "three"}
    pieces, _ = run_maps(shards, subsets, tmp_path)
    keys = keys_table(SUBSETS["one"], shards)
    listing = tmp_path / "pieces" / "one" / "sizes.json"
    counts = list_subset(keys, pieces["one"], listing, tmp_path / "subsets" / "one", "one")
    assert read_json(listing) == {"p00000.tar": 3, "p00001.tar": 6} == counts["sizes"]
    assert counts["samples_in"] == counts["samples_written"] + counts["samples_skipped"] == len(keys)
    assert read_json(tmp_path / "subsets" / "one" / "materialised.json")["output"] == "listing"
    from parrotscope.train import check_training_shards, count_training_samples

    check_training_shards([str(p) for p in pieces["one"]], str(listing))  # counts per piece checked
    assert count_training_samples(str(listing)) == len(keys)


def test_listing_refuses_an_empty_piece(source, tmp_path):
    shards, _ = source
    pieces, _ = run_maps(shards, SUBSETS, tmp_path)
    with pytest.raises(MaterialiseError, match="hold no sample"):
        list_subset(keys_table(SUBSETS["three"], shards), pieces["three"], tmp_path / "pieces" / "three" / "sizes.json",
                    tmp_path / "subsets" / "three", "three")
    assert not (tmp_path / "pieces" / "three" / "sizes.json").exists()


def test_reduce_modes_replace_each_others_marker(source, tmp_path):
    shards, _ = source
    pieces, _ = run_maps(shards, SUBSETS, tmp_path)
    keys_path = tmp_path / "subsets" / "one" / "keys.parquet"
    write_parquet(keys_table(SUBSETS["one"], shards), keys_path)
    shards_dir, listing = tmp_path / "subsets" / "one" / "shards", tmp_path / "pieces" / "one" / "sizes.json"
    args = (str(keys_path), [str(p) for p in pieces["one"]])
    run_reduce(*args, "reshard", "one", 2, str(shards_dir), str(listing))
    assert sorted(p.name for p in shards_dir.iterdir()) == ["00000.tar", "00001.tar", "sizes.json"]
    run_reduce(*args, "listing", "one", None, str(shards_dir), str(listing))
    assert listing.exists() and list(shards_dir.iterdir()) == []
    run_reduce(*args, "reshard", "one", 2, str(shards_dir), str(listing))
    assert not listing.exists() and (shards_dir / "sizes.json").exists()


def test_uids_npy_has_datacomps_layout_and_values(source, tmp_path):
    shards, members = source
    pieces, _ = run_maps(shards, SUBSETS, tmp_path)
    keys = keys_table(SUBSETS["two"], shards)
    counts = reshard_subset(keys, pieces["two"], tmp_path / "subsets" / "two" / "shards", 2, "two")
    uids = np.load(tmp_path / "subsets" / "two" / "uids.npy", allow_pickle=False)
    assert uids.dtype == np.dtype("u8,u8") == UID_DTYPE and uids.ndim == 1
    hexes = [json.loads(members[k]["json"])["uid"] for k in SUBSETS["two"]]
    # DataComp's resharder: np.array([divmod(int(uid, 16), 2**64)], u16)[0], then np.searchsorted.
    expected = sorted((int(h, 16) >> 64, int(h, 16) & (2 ** 64 - 1)) for h in hexes)
    assert [tuple(int(x) for x in row) for row in uids] == expected
    assert len(set(uids.tolist())) == len(uids) == len(hexes)  # sorted (above) and unique
    for h in hexes:
        probe = np.array([divmod(int(h, 16), 2 ** 64)], UID_DTYPE)[0]
        assert np.searchsorted(uids, probe, "right") - np.searchsorted(uids, probe, "left") == 1
    assert counts["uids"]["file"] == "uids.npy" and counts["uids"]["n_with_uid"] == len(hexes)
    assert uid_array(["0" * 31 + "1", "f" * 32, "0" * 31 + "1"]).tolist() == [(0, 1), (2 ** 64 - 1, 2 ** 64 - 1)]


def test_no_uids_no_file_and_the_counts_say_why(tmp_path):
    entries = []
    for i in range(4):
        meta = {"uid": uid_of(i)} if i < 2 else {}
        entries += [(f"k{i}.jpg", image_bytes()), (f"k{i}.txt", b"c"), (f"k{i}.json", json.dumps(meta).encode())]
    shard = write_tar(tmp_path / "s.tar", entries)
    keys = pd.DataFrame({"__key__": [f"k{i}" for i in range(4)], "part": "p00000", "shard": shard})
    map_part([shard], {"all": keys, "none": keys.iloc[2:], "some": keys.iloc[:2]},
             {n: tmp_path / "pieces" / n / "p00000.tar" for n in ("all", "none", "some")})
    # A uid list from an earlier run is removed when the subset no longer has one.
    (tmp_path / "subsets" / "all").mkdir(parents=True)
    (tmp_path / "subsets" / "all" / "uids.npy").write_bytes(b"stale")
    for name, chosen, note in (("all", keys, "not every sample"), ("none", keys.iloc[2:], "no sample")):
        counts = reshard_subset(chosen, [tmp_path / "pieces" / name / "p00000.tar"],
                                tmp_path / "subsets" / name / "shards", 1, name)
        assert counts["uids"]["file"] is None and note in counts["uids"]["note"]
        assert not (tmp_path / "subsets" / name / "uids.npy").exists()
    assert counts["uids"]["n_without_uid"] == 2
    counts = reshard_subset(keys.iloc[:2], [tmp_path / "pieces" / "some" / "p00000.tar"],
                            tmp_path / "subsets" / "some" / "shards", 1, "some")
    assert counts["uids"]["file"] == "uids.npy" and (tmp_path / "subsets" / "some" / "uids.npy").exists()


# --- passes ----------------------------------------------------------------------------------------


def test_passes_keep_table3_apart_from_scores_and_merge_on_request():
    tables = {"table3": ["random", "no_text"], "table4": ["cotr_ge_0.5"], "table 5": ["rsa_ge_0.1"]}
    curated = ["random", "no_text", "cotr_ge_0.5", "rsa_ge_0.1", "src_text", "src_scored", "unused.1"]
    scored = ["rsa_ge_0.1", "src_scored"]
    filters = ["filter_fix", "filter_random"]
    used = ["src_text", "src_scored", "pool", "filter_random"]
    assert plan_passes(tables, curated, scored, filters, used=used) == {
        "table3": ["random", "no_text"], "table4": ["cotr_ge_0.5"], "table_5": ["rsa_ge_0.1"],
        "text": ["src_text"], "scored": ["src_scored"], "filters": filters, "subset_unused_1": ["unused.1"]}
    assert plan_passes(tables, curated, scored, filters, "dependency", used) == {
        "text": ["random", "no_text", "cotr_ge_0.5", "src_text"], "scored": ["rsa_ge_0.1", "src_scored"],
        "filters": filters, "subset_unused_1": ["unused.1"]}
    assert plan_passes(tables, curated, scored, filters, "single", used) == {
        "all": ["random", "no_text", "cotr_ge_0.5", "rsa_ge_0.1", "src_text", "src_scored", *filters],
        "subset_unused_1": ["unused.1"]}
    # Every subset in exactly one pass, whatever the mode; names fit rule names.
    for mode in ("table", "dependency", "single"):
        passes = plan_passes({"text": ["random"], "all": ["no_text"]}, curated, scored, filters, mode, used)
        placed = [s for subsets in passes.values() for s in subsets]
        assert sorted(placed) == sorted([*curated, *filters]) and all(n.isidentifier() for n in passes)
    with pytest.raises(MaterialiseError, match="materialise.passes"):
        plan_passes(tables, curated, scored, filters, "per_subset")


# --- the one-subset path (moved from parrotscope.curate; its behaviour is unchanged) ----------------


def read_out(out_dir, name):
    return {s.key: s.files for s in iter_shard(str(out_dir / name))}


@pytest.fixture
def two_shards(tmp_path):
    """Two source shards of six samples each; one sample carries an extra member (not copied)."""
    shards, members = [], {}
    for s, prefix in enumerate("ab"):
        entries = []
        for i in range(6):
            key = f"{prefix}{i}"
            members[key] = sample_members(key, 6 * s + i)
            entries += [(f"{key}.{ext}", data) for ext, data in members[key].items()]
            if key == "a1":
                entries.append(("a1.npy", b"\x00" * 8))
        shards.append(write_tar(tmp_path / f"{prefix}.tar", entries))
    return shards, members


def test_materialise_writes_equal_shards_with_identical_bytes(two_shards, tmp_path):
    shards, members = two_shards
    chosen = ["b5", "a1", "a2", "b0", "a4", "b3", "b2"]
    out = tmp_path / "subset" / "shards"
    result = materialise_subset(keys_table(chosen, shards), shards, out, 3)
    sizes = read_json(out / "sizes.json")
    assert sizes == {"00000.tar": 3, "00001.tar": 2, "00002.tar": 2} == result["sizes"]
    assert result["n_samples"] == 7 and result["n_source_shards_read"] == 2 and result["n_members_dropped"] == 1
    got = {}
    for name, n in sizes.items():
        samples = read_out(out, name)
        assert len(samples) == n
        got.update(samples)
    assert sorted(got) == sorted(chosen)
    for key, files in got.items():
        assert files == members[key]  # same members, same bytes; a1.npy left out
    assert sorted(p.name for p in out.iterdir()) == ["00000.tar", "00001.tar", "00002.tar", "sizes.json"]
    assert [p.name for p in out.parent.iterdir()] == ["shards"]  # no temporary directory left


def test_materialise_is_byte_reproducible_and_replaces_stale_shards(two_shards, tmp_path):
    shards, _ = two_shards
    keys = keys_table(["a0", "a3", "b1", "b4"], shards)
    out = tmp_path / "shards"
    materialise_subset(keys, shards, out, 3)
    materialise_subset(keys.iloc[::-1], shards, tmp_path / "again", 2)
    materialise_subset(keys, shards, out, 2)
    assert sorted(p.name for p in out.iterdir()) == ["00000.tar", "00001.tar", "sizes.json"]
    for name in ("00000.tar", "00001.tar"):
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes()


def test_missing_key_names_shard_and_key_and_leaves_no_output(two_shards, tmp_path):
    shards, _ = two_shards
    keys = keys_table(["a0", "b1", "b9"], shards)
    out = tmp_path / "subset" / "shards"
    with pytest.raises(SampleNotFound) as err:
        materialise_subset(keys, shards, out, 2)
    assert shards[1] in str(err.value) and "b9" in str(err.value)
    assert not out.exists()
    assert list((tmp_path / "subset").iterdir()) == []


def test_failure_keeps_an_earlier_complete_output(two_shards, tmp_path):
    shards, _ = two_shards
    out = tmp_path / "shards"
    materialise_subset(keys_table(["a0", "b1"], shards), shards, out, 2)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(SampleNotFound):
        materialise_subset(keys_table(["a0", "a7"], shards), shards, out, 2)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_materialise_refuses_unknown_shards_and_empty_shards(two_shards, tmp_path):
    shards, _ = two_shards
    with pytest.raises(MaterialiseError, match="not among the dataset"):
        materialise_subset(keys_table(["a0"], shards), shards[1:], tmp_path / "x", 1)
    with pytest.raises(MaterialiseError, match="curate.n_shards"):
        materialise_subset(keys_table(["a0"], shards), shards, tmp_path / "x", 2)


def test_caption_only_in_json_becomes_a_txt_member(tmp_path):
    jpg = image_bytes()
    shard = write_tar(tmp_path / "c.tar", [("c0.jpg", jpg), ("c0.json", json.dumps({"caption": "Sale now"}).encode())])
    keys = pd.DataFrame({"__key__": ["c0"], "part": ["p00000"], "shard": [shard]})
    result = materialise_subset(keys, [shard], tmp_path / "out", 1)
    files = read_out(tmp_path / "out", "00000.tar")["c0"]
    assert files["txt"] == b"Sale now" and files["jpg"] == jpg and result["n_caption_from_json"] == 1


def test_output_tars_carry_no_time_or_owner(two_shards, tmp_path):
    shards, _ = two_shards
    materialise_subset(keys_table(["a0", "b0"], shards), shards, tmp_path / "o", 1)
    with tarfile.open(tmp_path / "o" / "00000.tar") as tar:
        assert {(m.mtime, m.uid, m.uname) for m in tar.getmembers()} == {(0, 0, "")}


def test_moved_names_still_import_from_curate():
    from parrotscope import curate, materialise

    assert curate.materialise_subset is materialise.materialise_subset
    assert curate.SampleNotFound is materialise.SampleNotFound and curate.SIZES_FILE == "sizes.json"


# --- the workflow on the tiny config ---------------------------------------------------------------


TABLE3 = ["random", "no_text", "text_only"]


def test_table3_plans_no_scoring_and_one_pass_of_its_own(tmp_path):
    """Table 3's subsets come from a pass of their own: no inpainting, scoring or other table."""
    from workflow import planned_jobs, tiny_config, write_config

    write_config(tmp_path, tiny_config())
    jobs = planned_jobs(tmp_path, "results/table3.csv")
    assert jobs["materialise_map_table3"] == 2 and jobs["materialise_reduce"] == 3 and jobs["curate_select"] == 3
    assert not {"inpaint", "score", "index", "filter_fix", "filter_baseline"} & set(jobs)
    assert [rule for rule in jobs if rule.startswith("materialise_map")] == ["materialise_map_table3"]
    # One pass for everything, for a cluster run of all tables: it waits for every selection.
    (tmp_path / "single.yaml").write_text("materialise:\n  passes: single\n")
    jobs = planned_jobs(tmp_path, "results/table3.csv", "--configfile", str(tmp_path / "single.yaml"))
    assert jobs["materialise_map_all"] == 2 and {"score", "filter_fix"} <= set(jobs)


@pytest.fixture(scope="module")
def table3_run(tmp_path_factory):
    from workflow import snakemake, tiny_config, write_config

    work = tmp_path_factory.mktemp("materialise")
    write_config(work, tiny_config())
    snakemake(work, "-c", "2", "results/table3.csv")
    return work


def copy_run(run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy, symlinks=True)
    return copy


def mtimes(work, pattern):
    return {str(p.relative_to(work)): p.stat().st_mtime_ns for p in sorted(work.glob(pattern))}


@pytest.mark.slow
def test_the_run_reconciles_and_matches_the_one_subset_path(table3_run, tmp_path):
    demo = table3_run / "results" / "demo"
    parts = read_json(demo / "parts.json")
    in_total = 0
    for part in parts["parts"]:
        counts = read_json(demo / "materialise" / "table3" / f"{part}.json")
        assert counts["samples_in"] == counts["samples_selected"] + counts["samples_skipped"]
        in_total += counts["samples_in"]
    assert in_total == parts["samples_in"]
    for name in TABLE3:
        keys = read_parquet(demo / "subsets" / name / "keys.parquet")
        done = read_json(demo / "subsets" / name / "materialised.json")
        assert done["samples_in"] == done["samples_written"] + done["samples_skipped"] == len(keys)
        assert done["uids"]["file"] is None and done["uids"]["n_without_uid"] == len(keys)  # the demo has no uid
        shards = [str(table3_run / s) for p in parts["parts"].values() for s in p["shards"]]
        alone = tmp_path / name
        materialise_subset(keys.assign(shard=[str(table3_run / s) for s in keys["shard"]]), shards, alone, 1)
        assert tree(alone) == tree(demo / "subsets" / name / "shards")


@pytest.mark.slow
def test_editing_one_subsets_criteria_reruns_only_its_chain(table3_run, tmp_path):
    from workflow import planned_jobs, snakemake

    work = copy_run(table3_run, tmp_path)
    assert planned_jobs(work, "results/table3.csv") == {}
    import yaml

    from parrotscope.curate import PAPER_SUBSETS

    # curate.subsets as a whole replaces the default (the paper's): no_text gets one more condition.
    subsets = dict(PAPER_SUBSETS, no_text=[*PAPER_SUBSETS["no_text"], ["cotr", "<", 0.5]])
    edit = work / "edit.yaml"
    edit.write_text(yaml.safe_dump({"curate": {"subsets": subsets}}))
    jobs = planned_jobs(work, "results/table3.csv", "--configfile", str(edit))
    assert jobs == {"curate_select": 1, "materialise_map_table3": 2, "materialise_reduce": 1, "train": 1,
                    "evaluate": 1, "evaluate_sync": 1, "curation_table": 1, "study_table": 1}
    def others_outputs():
        return mtimes(work, "results/demo/subsets/[rt]*/shards/*") | mtimes(work, "results/models/demo/[rt]*/*/*/*.pt")

    others = others_outputs()
    pieces = {p: (work / p).read_bytes() for p in mtimes(work, "results/demo/pieces/*/*")}
    snakemake(work, "-c", "2", "results/table3.csv", "--configfile", str(edit))
    assert "no_text" in (work / "logs" / "materialise" / "demo" / "no_text.reduce.log").read_text()
    # The other subsets' pieces were rewritten byte for byte; their shards and models were not touched.
    assert {p: (work / p).read_bytes() for p in pieces} == pieces
    assert others_outputs() == others
    assert planned_jobs(work, "results/table3.csv", "--configfile", str(edit)) == {}


@pytest.mark.slow
def test_listing_mode_trains_on_the_pieces_in_place(table3_run, tmp_path):
    from workflow import planned_jobs, snakemake

    work = copy_run(table3_run, tmp_path)
    listing = work / "listing.yaml"
    listing.write_text("materialise:\n  output: listing\n")
    jobs = planned_jobs(work, "results/table3.csv", "--configfile", str(listing))
    assert jobs["materialise_reduce"] == 3 and jobs["train"] == 3 and "materialise_map_table3" not in jobs
    target = "results/models/demo/random/tiny-rn/seed0/results.json"
    snakemake(work, "-c", "2", target, "--configfile", str(listing))
    demo = work / "results" / "demo"
    sizes = read_json(demo / "pieces" / "random" / "sizes.json")
    assert sizes == {f"{p}.tar": len(read_parquet(demo / "pieces" / "random" / f"{p}.parquet"))
                     for p in ("p00000", "p00001")}
    assert not (demo / "subsets" / "random" / "shards" / "sizes.json").exists()  # one marker only
    results = read_json(work / target)
    assert results["n_samples"] == sum(sizes.values()) == 8
    train_data = results["command"][results["command"].index("--train-data") + 1]
    assert train_data.endswith("pieces/random/p00000.tar::" + str(demo / "pieces" / "random" / "p00001.tar"))
    assert results["n_shards"] == 2


@pytest.mark.slow
def test_editing_the_materialise_module_reruns_map_and_reduce_in_one_run(table3_run, tmp_path):
    """The reduce is below the map, whose rerun hides the reduce's own params from Snakemake; its
    settings file (materialise_settings) still brings it, and the trainings, into the same plan."""
    from workflow import plan_after_editing

    proc = plan_after_editing(tmp_path, "materialise", table3_run, "results/table3.csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = proc.stdout.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    jobs = {line.split()[0]: int(line.split()[1]) for line in stats.splitlines()[3:]
            if len(line.split()) == 2 and line.split()[1].isdigit() and line.split()[0] != "total"}
    assert jobs == {"materialise_settings": 3, "materialise_map_table3": 2, "materialise_reduce": 3, "train": 3,
                    "evaluate": 3, "evaluate_sync": 3, "curation_table": 1, "study_table": 1}


def test_materialise_reads_a_truncated_source_shard_as_ingest_did(two_shards, tmp_path):
    """A source shard cut inside a3 (recorded by ingest, `on_bad_shard: record`): keys before the
    cut are copied whole; the cut sample, had it been selected, is a missing key, not half a sample."""
    import tarfile

    shards, members = two_shards
    with tarfile.open(shards[0]) as tar:
        at = tar.getmember("a3.jpg").offset_data + 50
    Path(shards[0]).write_bytes(Path(shards[0]).read_bytes()[:at])
    out = tmp_path / "subset" / "shards"
    materialise_subset(keys_table(["a0", "a2", "b1"], shards), shards, out, 1)
    assert read_out(out, "00000.tar") == {k: members[k] for k in ("a0", "a2", "b1")}
    with pytest.raises(SampleNotFound, match="a3"):
        materialise_subset(keys_table(["a0", "a3"], shards), shards, tmp_path / "again", 1)
