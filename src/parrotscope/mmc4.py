"""Stage ``mmc4``: MMC4's interleaved documents as image-caption samples, one webdataset tar per part.

MMC4 (Zhu et al. 2023) ships documents, not pairs: jsonl files (``docs_no_face_shard_N_v2.jsonl``,
often zipped) whose lines hold a document's ``text_list`` (its sentences) and ``image_info`` (its
images: ``image_name``, ``matched_text_index``, ``matched_sim``, ...), with the images downloaded
apart, to a folder or to tars, under their ``image_name``. The paper (Table 8) pairs each image
with the sentence MMC4 assigned to it, ``text_list[matched_text_index]``; so does this stage.

:func:`convert_part` reads a part's document files and writes one sample per image entry to a
webdataset tar, so that every later stage reads MMC4 as it reads LAION's shards. A sample's json
keeps where it came from (``doc_id``, ``doc_url``, ``text_index``, ``matched_sim``, ``image_name``)
and, for the demo's generated documents, the ground truth (``truth``).

Nothing is lost silently. An image entry whose file is not found, or whose ``matched_text_index``
is not an index of ``text_list``, and a document line that is not a JSON document with its
``image_info`` and ``text_list``, each become a status row: a sample holding only its json, whose
``mmc4_skip`` names the reason (:data:`IMAGE_SKIPS`, :data:`DOCUMENT_SKIPS`) and ``error`` what was
wrong. Ingest records these rows with that reason, so Table 1 counts them as skipped samples. A
missing document file or image tar is listed in the part's counts in ``record`` mode (its entries
then become status rows) and stops the job in ``fail`` mode. Image entries in = written + skipped,
and documents in = read + skipped, are checked before the counts are written.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import sys
import tarfile
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import webdataset as wds
from tqdm import tqdm

from .io import atomic_path, write_json
from .shards import CONVERTED_SKIP, CONVERTED_SKIPS, FAIL, IMAGE_EXTS, RECORD, ShardError, check_mode

log = logging.getLogger(__name__)

# Skip reasons of image entries and of document lines (ingest's status rows, shards.CONVERTED_SKIPS).
IMAGE_FILE_MISSING, TEXT_INDEX_OUT_OF_RANGE, BAD_JSON, NOT_A_DOCUMENT = CONVERTED_SKIPS
IMAGE_SKIPS = (IMAGE_FILE_MISSING, TEXT_INDEX_OUT_OF_RANGE)
DOCUMENT_SKIPS = (BAD_JSON, NOT_A_DOCUMENT)
# Listed with file and line, up to this many per part (the counts stay exact beyond it).
MAX_LISTED = 100
DOC_PLACEHOLDER = "{doc}"


class MMC4Error(ShardError):
    """A document file or image source that cannot be read, in ``fail`` mode."""


def doc_stem(path: str) -> str:
    """The name of a document file without its extensions (``.jsonl``, ``.jsonl.zip``, ...), in
    characters a webdataset key may hold (no dots: webdataset splits a member name at the first)."""
    name = Path(path).name
    for ext in (".zip", ".gz"):
        name = name.removesuffix(ext)
    name = name.removesuffix(".jsonl").removesuffix(".json")
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


def read_lines(path: str) -> Iterator[bytes]:
    """The lines of a document file: plain jsonl, gzip, or a zip holding one jsonl (MMC4's own)."""
    if path.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
            if len(names) != 1:
                raise MMC4Error(f"{path}: a document zip holds one jsonl file, found {names[:5]}")
            with archive.open(names[0]) as fh:
                yield from fh
    elif path.endswith(".gz"):
        with gzip.open(path, "rb") as fh:
            yield from fh
    else:
        with open(path, "rb") as fh:
            yield from fh


def parse_document(line: bytes) -> tuple[dict | None, str, str]:
    """(document, skip reason, error) of one jsonl line; the document is None when skipped."""
    try:
        doc = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, BAD_JSON, str(exc)[:200]
    if not isinstance(doc, dict):
        return None, NOT_A_DOCUMENT, f"a JSON {type(doc).__name__}, not an object"
    if not isinstance(doc.get("image_info"), list) or not isinstance(doc.get("text_list"), list):
        return None, NOT_A_DOCUMENT, "no `image_info` and `text_list` lists"
    if any(not isinstance(entry, dict) or not isinstance(entry.get("image_name"), str) for entry in doc["image_info"]):
        return None, NOT_A_DOCUMENT, "an `image_info` entry without an `image_name` string"
    return doc, "", ""


class ImageSource:
    """The images of one document file, by ``image_name``: a folder, or a tar indexed once.

    ``template`` is a folder or a ``.tar`` path; ``{doc}`` in it stands for the document file's
    stem (:func:`doc_stem`), for images stored per document shard. A tar's members are indexed
    (name -> where its bytes lie) and read one at a time, so a document shard's image tar (MMC4's
    are hundreds of MB) is never held in memory whole.
    """

    def __init__(self, template: str, doc_path: str, on_bad_shard: str):
        self.path = template.replace(DOC_PLACEHOLDER, doc_stem(doc_path))
        self.missing = ""
        self._members: dict[str, tuple[int, int]] | None = None
        if self.path.endswith(".tar"):
            self._members = self._index_tar(on_bad_shard)
        elif not os.path.isdir(self.path):
            self._fail_or_record(on_bad_shard, "image folder not found")

    def _fail_or_record(self, on_bad_shard: str, error: str) -> None:
        if on_bad_shard == FAIL:
            raise MMC4Error(f"{self.path}: {error}")
        self.missing = error

    def _index_tar(self, on_bad_shard: str) -> dict[str, tuple[int, int]]:
        """(offset, size) of each regular member's bytes in the tar, by base name."""
        members: dict[str, tuple[int, int]] = {}
        try:
            with tarfile.open(self.path) as tar:
                for info in tar:
                    # A sparse member's bytes are not stored in one run: not an image writers make.
                    if info.isreg() and not info.issparse():
                        members[os.path.basename(info.name)] = (info.offset_data, info.size)
        except (OSError, tarfile.TarError) as exc:
            # A damaged tar keeps the members indexed before the damage (record mode).
            self._fail_or_record(on_bad_shard, f"image tar unreadable: {exc}")
        return members

    def _read_member(self, offset: int, size: int) -> bytes | None:
        """A member's bytes; None when the tar ends before them (truncated)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(offset)
                data = f.read(size)
        except OSError:
            return None
        return data if len(data) == size else None

    def get(self, image_name: str) -> bytes | None:
        """The image's bytes, or None when the source does not have it."""
        name = os.path.basename(image_name)
        if self._members is not None:
            where = self._members.get(name)
            return self._read_member(*where) if where else None
        try:
            return Path(self.path, name).read_bytes()
        except OSError:
            return None


def image_member(image_name: str) -> str:
    """The tar extension an image is written under: its own when an image format ingest reads,
    else ``jpg`` (ingest decodes by content, not by extension)."""
    ext = image_name.rsplit(".", 1)[-1].lower() if "." in image_name else ""
    return ext if ext in IMAGE_EXTS else "jpg"


def skip_sample(key: str, meta: dict, reason: str, error: str) -> dict:
    """A status row for ingest: the sample's json names the reason (``mmc4_skip``) and the error;
    it holds no image or caption."""
    meta = {**meta, CONVERTED_SKIP: reason, "error": error}
    return {"__key__": key, "json": json.dumps(meta, ensure_ascii=False, sort_keys=True).encode("utf-8")}


def image_samples(doc: dict, doc_id: str, source: ImageSource) -> Iterator[tuple[dict, str]]:
    """(webdataset sample, skip reason or "") of each image entry of a document, in order."""
    sentences = doc["text_list"]
    for j, entry in enumerate(doc["image_info"]):
        key = f"{doc_id}-{j:03d}"
        meta: dict[str, Any] = {"doc_id": doc_id, "doc_url": doc.get("url"), "image_name": entry["image_name"],
                                "text_index": entry.get("matched_text_index"),
                                "matched_sim": entry.get("matched_sim")}
        if "truth" in entry:
            meta["truth"] = entry["truth"]
        index = meta["text_index"]
        data = source.get(entry["image_name"])
        if data is None:
            why = f" ({source.missing})" if source.missing else ""
            error = f"image {entry['image_name']!r} not in {source.path}{why}"
            yield skip_sample(key, meta, IMAGE_FILE_MISSING, error), IMAGE_FILE_MISSING
        elif not (isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(sentences)
                  and isinstance(sentences[index], str)):
            error = f"matched_text_index {index!r} is not an index of text_list ({len(sentences)} sentences)"
            yield skip_sample(key, meta, TEXT_INDEX_OUT_OF_RANGE, error), TEXT_INDEX_OUT_OF_RANGE
        else:
            yield {"__key__": key, image_member(entry["image_name"]): data, "txt": sentences[index],
                   "json": json.dumps(meta, ensure_ascii=False, sort_keys=True).encode("utf-8")}, ""


@dataclass
class PartCounts:
    """The part's accounting, per document file, document and image entry."""

    doc_files: list[str]
    doc_files_missing: list[str] = field(default_factory=list)
    image_sources_missing: dict[str, str] = field(default_factory=dict)
    documents_in: int = 0
    documents_read: int = 0
    documents_skipped: Counter = field(default_factory=Counter)
    bad_lines: list[dict] = field(default_factory=list)
    images_in: int = 0
    images_written: int = 0
    images_skipped: Counter = field(default_factory=Counter)

    def skip_document(self, path: str, line: int, reason: str, error: str) -> None:
        self.documents_skipped[reason] += 1
        if len(self.bad_lines) < MAX_LISTED:
            self.bad_lines.append({"file": path, "line": line, "reason": reason, "error": error})

    def as_dict(self) -> dict:
        out = {
            "doc_files": self.doc_files,
            "doc_files_missing": self.doc_files_missing,
            "image_sources_missing": self.image_sources_missing,
            "documents_in": self.documents_in,
            "documents_read": self.documents_read,
            "documents_skipped": sum(self.documents_skipped.values()),
            "documents_skipped_by_reason": {r: int(self.documents_skipped.get(r, 0)) for r in DOCUMENT_SKIPS},
            "bad_lines": self.bad_lines,
            # Ingest reads images_in + documents_skipped samples: one per image entry, one per bad line.
            "images_in": self.images_in,
            "images_written": self.images_written,
            "images_skipped": sum(self.images_skipped.values()),
            "images_skipped_by_reason": {r: int(self.images_skipped.get(r, 0)) for r in IMAGE_SKIPS},
        }
        assert out["documents_in"] == out["documents_read"] + out["documents_skipped"], out
        assert out["images_in"] == out["images_written"] + out["images_skipped"], out
        return out


def iter_part_samples(doc_files: list[str], images: str, on_bad_shard: str, counts: PartCounts
                      ) -> Iterator[dict]:
    """Every image entry of the part's document files as a webdataset sample, counting as it goes."""
    check_mode(on_bad_shard)
    for path in doc_files:
        if not os.path.exists(path):
            if on_bad_shard == FAIL:
                raise MMC4Error(f"{path}: document file not found")
            log.warning("document file %s is missing: it holds no document", path)
            counts.doc_files_missing.append(path)
            continue
        source = ImageSource(images, path, on_bad_shard)
        if source.missing:
            counts.image_sources_missing[source.path] = source.missing
        stem = doc_stem(path)
        for line_no, line in enumerate(read_lines(path), start=1):
            if not line.strip():
                continue
            counts.documents_in += 1
            doc_id = f"{stem}-{line_no:07d}"
            doc, reason, error = parse_document(line)
            if doc is None:
                if on_bad_shard == FAIL:
                    raise MMC4Error(f"{path}:{line_no}: {reason}: {error}")
                counts.skip_document(path, line_no, reason, error)
                yield skip_sample(doc_id, {"doc_id": doc_id}, reason, f"{path}:{line_no}: {error}")
                continue
            counts.documents_read += 1
            for sample, skip in image_samples(doc, doc_id, source):
                counts.images_in += 1
                if skip:
                    counts.images_skipped[skip] += 1
                else:
                    counts.images_written += 1
                yield sample


def convert_part(doc_files: list[str], images: str, out_tar: str, out_counts: str,
                 on_bad_shard: str = RECORD) -> dict:
    """Write the part's image entries to ``out_tar`` (one sample each) and its counts to
    ``out_counts``, both atomically; return the counts."""
    counts = PartCounts(doc_files=list(doc_files))
    with atomic_path(out_tar, suffix=".tar") as tmp:
        with open(tmp, "wb") as fh:
            # mtime 0: the tar's bytes depend on the documents and images only.
            writer = wds.TarWriter(fh, mtime=0.0)
            try:
                for sample in tqdm(iter_part_samples(doc_files, images, on_bad_shard, counts), desc="mmc4",
                                   unit="image", file=sys.stderr, mininterval=10):
                    writer.write(sample)
            finally:
                writer.close()
    result = counts.as_dict()
    log.info("mmc4: %d documents (%d skipped), %d image entries: %d written, %d without image or caption %s",
             result["documents_in"], result["documents_skipped"], result["images_in"], result["images_written"],
             result["images_skipped"], result["images_skipped_by_reason"])
    write_json(result, out_counts)
    return result
