"""MMC4 documents as samples: the demo's MMC4-like documents, malformed documents, and the rules."""

import gzip
import json
import zipfile

import pandas as pd
import pytest

from conftest import image_bytes, write_tar
from parrotscope.config import ConfigError, check_datasets
from parrotscope.demo.documents import OTHER_SENTENCE, make_document, write_document_shard, write_documents
from parrotscope.ingest import ingest_part
from parrotscope.mmc4 import MMC4Error, convert_part, doc_stem
from workflow import snakemake, tiny_config, write_config

GOOD = image_bytes(size=(64, 48))


def document(url, sentences, images):
    """An MMC4 document: ``images`` are (image_name, matched_text_index) pairs."""
    return {"url": url, "text_list": sentences,
            "image_info": [{"image_name": name, "matched_text_index": index, "matched_sim": 0.3, "raw_url": name}
                           for name, index in images]}


def malformed_part(root):
    """One document file with every kind of damage, its images in a folder; and what it holds."""
    (root / "images").mkdir()
    for name in ("a.jpg", "b.png", "c.jpg"):
        (root / "images" / name).write_bytes(GOOD)
    lines = [
        json.dumps(document("u1", ["a red sale sign", "more text"], [("a.jpg", 0), ("b.png", 1)])),
        "{not json",
        json.dumps(document("u2", ["one sentence"], [("missing.jpg", 0), ("c.jpg", 5)])),
        "",  # blank lines are not documents
        json.dumps(["a", "list"]),
        json.dumps({"url": "u3", "text_list": ["x"]}),  # no image_info
        json.dumps(document("u4", ["only"], [("a.jpg", True)])),  # a bool is no index
    ]
    path = root / "docs_shard_7_v2.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_demo_documents_follow_mmc4_and_record_the_truth_of_the_assigned_sentence(tmp_path):
    cfg = {"documents_per_shard": 30, "own_sentence_prob": 0.5, "text_fraction": 0.6}
    counts = write_document_shard(cfg, 3, str(tmp_path / "00003.jsonl"), str(tmp_path / "00003.images.tar"))
    docs = [json.loads(line) for line in (tmp_path / "00003.jsonl").read_text().splitlines()]
    assert len(docs) == counts["documents"] == 30
    entries = [(d, e) for d in docs for e in d["image_info"]]
    assert len(entries) == counts["images"] and 0 < counts["own_sentence"] < counts["images"]
    for doc, entry in entries:
        sentence = doc["text_list"][entry["matched_text_index"]]
        truth = entry["truth"]
        said = {w.lower() for w in sentence.split()}
        assert truth["parrot_words"] == [w for w in truth["words"] if w.lower() in said] or \
            truth["caption_kind"] != OTHER_SENTENCE
    # Deterministic by (seed, shard, document): the same document whatever the shard size.
    from parrotscope.demo import demo_config
    assert make_document(demo_config(cfg), 3, 7) == make_document(demo_config({**cfg, "documents_per_shard": 8}), 3, 7)
    assert docs[7] == json.loads(json.dumps(make_document(demo_config(cfg), 3, 7)[0]))


def test_generated_documents_convert_to_samples_captioned_by_their_assigned_sentence(tmp_path):
    write_document_shard({"documents_per_shard": 12}, 0, str(tmp_path / "00000.jsonl"),
                         str(tmp_path / "00000.images.tar"))
    counts = convert_part([str(tmp_path / "00000.jsonl")], str(tmp_path / "{doc}.images.tar"),
                          str(tmp_path / "p.tar"), str(tmp_path / "p.json"), on_bad_shard="fail")
    docs = [json.loads(line) for line in (tmp_path / "00000.jsonl").read_text().splitlines()]
    n_images = sum(len(d["image_info"]) for d in docs)
    assert counts["documents_in"] == counts["documents_read"] == 12
    assert counts["images_in"] == counts["images_written"] == n_images
    assert json.loads((tmp_path / "p.json").read_text()) == counts
    table, ingested = ingest_part([str(tmp_path / "p.tar")], 10**8, "fail")
    assert ingested["samples_in"] == ingested["ok"] == n_images and table["__key__"].is_unique
    for _, row in table.iterrows():
        meta = json.loads(row["meta"])
        line = int(meta["doc_id"].rsplit("-", 1)[1])
        doc = docs[line - 1]
        assert row["__key__"].startswith(meta["doc_id"] + "-") and meta["doc_url"] == doc["url"]
        assert row["caption"] == doc["text_list"][meta["text_index"]]
        assert "words" in meta["truth"]


def test_malformed_documents_become_status_rows_and_the_counts_reconcile(tmp_path):
    path = malformed_part(tmp_path)
    missing = str(tmp_path / "docs_shard_8_v2.jsonl")
    counts = convert_part([str(path), missing], str(tmp_path / "images"), str(tmp_path / "p.tar"),
                          str(tmp_path / "p.json"))
    assert counts["doc_files_missing"] == [missing]
    assert (counts["documents_in"], counts["documents_read"]) == (6, 3)
    assert counts["documents_skipped_by_reason"] == {"bad_json": 1, "not_a_document": 2}
    assert [(b["line"], b["reason"]) for b in counts["bad_lines"]] == [(2, "bad_json"), (5, "not_a_document"),
                                                                      (6, "not_a_document")]
    assert (counts["images_in"], counts["images_written"]) == (5, 2)
    assert counts["images_skipped_by_reason"] == {"image_file_missing": 1, "text_index_out_of_range": 2}

    table, ingested = ingest_part([str(tmp_path / "p.tar")], 10**8)
    assert ingested["samples_in"] == counts["images_in"] + counts["documents_skipped"] == 8
    assert ingested["samples_in"] == ingested["ok"] + ingested["skipped"]
    assert ingested["skipped_by_reason"] == {"bad_json": 1, "image_file_missing": 1, "not_a_document": 2,
                                             "text_index_out_of_range": 2}
    rows = table.set_index("__key__")
    stem = doc_stem(str(path))
    assert rows.loc[f"{stem}-0000001-000", "caption"] == "a red sale sign"
    assert rows.loc[f"{stem}-0000001-001", ["status", "caption"]].tolist() == ["ok", "more text"]
    assert rows.loc[f"{stem}-0000002", "status"] == "bad_json"
    assert "missing.jpg" in rows.loc[f"{stem}-0000003-000", "error"]
    assert "5" in rows.loc[f"{stem}-0000003-001", "error"]
    assert rows.loc[f"{stem}-0000007-000", "status"] == "text_index_out_of_range"


def test_fail_mode_stops_at_the_first_damage(tmp_path):
    path = malformed_part(tmp_path)
    with pytest.raises(MMC4Error, match=r":2: bad_json"):
        convert_part([str(path)], str(tmp_path / "images"), str(tmp_path / "p.tar"), str(tmp_path / "p.json"), "fail")
    with pytest.raises(MMC4Error, match="document file not found"):
        convert_part([str(tmp_path / "none.jsonl")], str(tmp_path / "images"), str(tmp_path / "p.tar"),
                     str(tmp_path / "p.json"), "fail")
    assert not (tmp_path / "p.tar").exists() and not (tmp_path / "p.json").exists()


def test_zipped_and_gzipped_documents_and_image_tars_read_alike(tmp_path):
    docs = [document("u", ["first", "second"], [("x.jpg", 1), ("y.jpg", 0)])]
    write_documents(docs, str(tmp_path / "plain.jsonl"))
    text = (tmp_path / "plain.jsonl").read_bytes()
    with zipfile.ZipFile(tmp_path / "zipped.jsonl.zip", "w") as archive:
        archive.writestr("zipped.jsonl", text)
    (tmp_path / "gzipped.jsonl.gz").write_bytes(gzip.compress(text))
    for stem in ("plain", "zipped", "gzipped"):
        write_tar(tmp_path / f"{stem}.tar", [("x.jpg", GOOD), ("y.jpg", GOOD)])
    captions = {}
    for name in ("plain.jsonl", "zipped.jsonl.zip", "gzipped.jsonl.gz"):
        out = tmp_path / f"{name}.out.tar"
        convert_part([str(tmp_path / name)], str(tmp_path / "{doc}.tar"), str(out), str(tmp_path / f"{name}.json"), "fail")
        table, _ = ingest_part([str(out)], 10**8, "fail")
        captions[name] = table["caption"].tolist()
    assert list(captions.values()) == [["second", "first"]] * 3


def test_a_truncated_image_tar_keeps_the_images_before_the_cut_and_records_the_rest(tmp_path):
    # The tar is indexed, and each image read from its place: a cut tar gives up only what it lost.
    names = ["x.jpg", "y.jpg", "z.jpg"]
    docs = [document("u", ["first", "second", "third"], [(n, i) for i, n in enumerate(names)])]
    write_documents(docs, str(tmp_path / "d.jsonl"))
    write_tar(tmp_path / "d.tar", [(n, GOOD) for n in names])
    whole = (tmp_path / "d.tar").read_bytes()
    (tmp_path / "d.tar").write_bytes(whole[:whole.index(GOOD, whole.index(GOOD) + 1) + len(GOOD) // 2])
    counts = convert_part([str(tmp_path / "d.jsonl")], str(tmp_path / "{doc}.tar"), str(tmp_path / "p.tar"),
                          str(tmp_path / "p.json"))
    assert (counts["images_in"], counts["images_written"]) == (3, 1)
    assert counts["images_skipped_by_reason"]["image_file_missing"] == 2
    table, ingested = ingest_part([str(tmp_path / "p.tar")], 10**8)
    assert (ingested["samples_in"], ingested["ok"]) == (3, 1)
    assert table.loc[table["status"] == "ok", "caption"].tolist() == ["first"]
    with pytest.raises(MMC4Error, match="image tar unreadable"):
        convert_part([str(tmp_path / "d.jsonl")], str(tmp_path / "{doc}.tar"), str(tmp_path / "q.tar"),
                     str(tmp_path / "q.json"), "fail")


def test_an_mmc4_dataset_needs_its_images_and_only_mmc4_has_them():
    with pytest.raises(ConfigError, match="gives `images`"):
        check_datasets({"datasets": {"m": {"format": "mmc4", "shards": "/d/*.jsonl"}}})
    with pytest.raises(ConfigError, match="only MMC4"):
        check_datasets({"datasets": {"w": {"shards": "/d/a.tar", "images": "/d/img"}}})
    check_datasets({"datasets": {"m": {"format": "mmc4", "shards": "/d/a.jsonl", "images": "/d/{doc}.tar"},
                                 "g": {"format": "mmc4", "generator": {}}}})


@pytest.mark.slow
def test_mmc4_datasets_run_to_table1_with_their_damage_counted(tmp_path):
    """A generated MMC4-like dataset and MMC4 files with every kind of damage, through the rules."""
    path = malformed_part(tmp_path)
    cfg = tiny_config({"docs": {"format": "mmc4", "shards_per_part": 1,
                                "generator": {"seed": 2, "n_shards": 2, "documents_per_shard": 5}},
                       "mine": {"format": "mmc4", "shards": str(path), "images": str(tmp_path / "images"),
                                "shards_per_part": 1}})
    cfg["study_dataset"] = "docs"
    write_config(tmp_path, cfg)
    snakemake(tmp_path, "-c", "2", "results/table1.csv")
    table = pd.read_csv(tmp_path / "results" / "table1.csv", index_col=0)
    mine = table["mine (spotted)"]
    assert (mine["Samples in"], mine["Samples processed"], mine["Samples skipped"]) == (8, 2, 6)
    assert mine["Skipped: not_a_document"] == 2 and mine["Skipped: image_file_missing"] == 1
    docs = table["docs (spotted)"]
    converted = [json.loads((tmp_path / "results" / "docs" / "mmc4" / f"p0000{i}.counts.json").read_text())
                 for i in (0, 1)]
    assert docs["Samples in"] == docs["Samples processed"] == sum(c["images_in"] for c in converted)
    assert table.loc["Samples in", "docs (ground truth)"] == docs["Samples in"]
