"""Reading webdataset shards (img2dataset layout) with every bad input recorded, never dropped.

A shard is a tar of samples ``KEY.jpg|png|webp`` + ``KEY.txt`` (caption) + ``KEY.json`` (metadata).
:func:`iter_part` yields one :class:`Sample` per tar group, in shard order; :func:`check_sample`
decides whether it is usable and why not.

Shards that real downloads leave behind (``ingest.on_bad_shard``):

- ``record`` (the readers' default): a shard that does not read to its end-of-archive block
  (truncated, a garbled member header mid-way, not a tar at all) yields the samples that were
  completely read before the cut; the tar group still open at the cut may lack members, so it is
  yielded as a Sample with ``cut`` set, which :func:`check_sample` turns into a
  ``truncated_shard`` skip (samples in = processed + skipped still holds). A local shard that does
  not exist yields nothing. Either way a :class:`ShardDamage` goes to the caller's ``damage``
  list (ingest writes it to the part's counts) and a warning to the log.
- ``fail``: such a shard raises :class:`ShardError` naming it, as before this mode existed.

Only ingest takes the mode from config (``params:``; the demo generator's own shards are always
read in ``fail`` mode, see ``bad_shard_mode`` in rules/common.smk). Every later stage (spot,
inpaint, score, embed, filters, curate's materialise) reads in ``record`` mode with no config
value of its own, because its behaviour follows from what ingest recorded: it asks for the ``ok``
keys of the samples table only, and a local shard cut at the same byte yields the same whole
samples, so it sees exactly the samples ingest saw; a cut sample is never ``ok`` and never an
image. In ``fail`` mode a damaged shard never gets past ingest. A shard that changed after ingest
(cut later, replaced, a ``pipe:`` download cut elsewhere this time) cannot lose a sample silently
either: :func:`iter_images` raises :class:`ShardError` when a key it was asked for is not found.
Readers of the workflow's own tars read in ``fail`` mode (inpainted tars; ``scan_shard`` for
subset shards): damage there is a corrupted intermediate, not a download.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import tarfile
import unicodedata
from dataclasses import dataclass, field
from typing import Container, Iterable, Iterator

import numpy as np
from braceexpand import braceexpand
from PIL import Image, ImageFile

from .io import read_json

# Pixel limits are enforced by check_sample with a configured bound and a recorded reason,
# rather than by PIL's global decompression-bomb error.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

log = logging.getLogger(__name__)

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
CAPTION_EXT = "txt"

# Status rows of a converted dataset (parrotscope.mmc4): a sample holding only its json, whose
# CONVERTED_SKIP field names one of these reasons and whose `error` says what was wrong.
CONVERTED_SKIP = "mmc4_skip"
CONVERTED_SKIPS = ("image_file_missing", "text_index_out_of_range", "bad_json", "not_a_document")
# Skip reasons, recorded in the `status`/`error` columns and counted per part.
OK = "ok"
SKIP_REASONS = (
    "missing_image",
    "empty_image",
    "corrupt_image",
    "image_too_large",
    "missing_caption",
    "empty_caption",
    "caption_not_utf8",
    "duplicate_key",
    "truncated_shard",
    *CONVERTED_SKIPS,
)

# What to do with a shard that is truncated, garbled or missing (see the module docstring).
RECORD, FAIL = "record", "fail"
ON_BAD_SHARD = (RECORD, FAIL)
# ShardDamage kinds, listed per part as `shards_truncated` / `shards_missing` in the counts.
TRUNCATED, MISSING = "truncated", "missing"


class ShardError(RuntimeError):
    """A shard cannot be read; the message names the shard and the problem."""


@dataclass
class Sample:
    """One tar group. ``cut`` is empty for a whole sample; for the group that was open where its
    shard was cut (record mode) it says why, as its members past the cut may be missing."""

    key: str
    shard: str
    files: dict[str, bytes] = field(default_factory=dict)
    cut: str = ""
    unread: bool = False  # its bytes were not read: the reader asked only for other keys (``only``)


@dataclass
class ShardDamage:
    """A shard that could not be read to its end (``truncated``) or does not exist (``missing``),
    with the reader's error and the number of whole samples read before the cut."""

    url: str
    kind: str
    error: str
    n_samples: int = 0


def check_mode(on_bad_shard: str) -> None:
    if on_bad_shard not in ON_BAD_SHARD:
        raise ValueError(f"on_bad_shard must be one of {list(ON_BAD_SHARD)}, got {on_bad_shard!r}")


def is_local(url: str) -> bool:
    """A path on this machine's file system, not a ``pipe:`` command or a URL."""
    return not (url.startswith("pipe:") or "://" in url)


def _note(damage: list[ShardDamage] | None, found: ShardDamage) -> None:
    if found.kind == MISSING:
        log.warning("shard %s is missing (%s): it holds no sample", found.url, found.error)
    else:
        log.warning("shard %s is truncated (%s): %d whole sample(s) read before the cut", found.url,
                    found.error, found.n_samples)
    if damage is not None:
        damage.append(found)


@dataclass
class Checked:
    """The verdict on one sample: ``status`` is ``ok`` or a skip reason from SKIP_REASONS."""

    key: str
    shard: str
    status: str
    error: str
    caption: str
    width: int
    height: int
    mode: str
    format: str
    n_bytes: int
    meta: str

    def as_row(self) -> dict:
        return {
            "__key__": self.key,
            "shard": self.shard,
            "status": self.status,
            "error": self.error,
            "caption": self.caption,
            "width": self.width,
            "height": self.height,
            "mode": self.mode,
            "format": self.format,
            "n_bytes": self.n_bytes,
            "meta": self.meta,
        }


def expand_shards(spec: str | Iterable[str]) -> list[str]:
    """Expand a shard spec (a path, a brace pattern like ``{00000..00099}.tar``, a ``pipe:`` URL,
    or a list of those) into the ordered list of shard URLs."""
    specs = [spec] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for s in specs:
        out.extend(braceexpand(s))
    return out


def _header_watch() -> tuple[type[tarfile.TarInfo], dict]:
    """A TarInfo class that records why reading headers stopped, and the dict it records into.

    tarfile ends iteration *silently* on an invalid (garbled) header or at end of data without
    the end-of-archive zero block, i.e. a tar truncated exactly at a member boundary: every sample
    after that point would vanish uncounted. Only a zero block (``EOFHeaderError``) is a proper end.
    """
    state: dict = {}

    class WatchedTarInfo(tarfile.TarInfo):
        @classmethod
        def fromtarfile(cls, tf):
            try:
                return super().fromtarfile(tf)
            except tarfile.HeaderError as exc:
                state["end"] = exc
                raise

    return WatchedTarInfo, state


# A plain ustar member header: regular file ("0", or NUL in old tars) or directory ("5"). Anything
# else (PAX and GNU extension headers, links, sparse files) is left to tarfile.
_PLAIN_FILE, _DIRECTORY = (b"0", b"\0"), b"5"
_ZERO_BLOCK = bytes(tarfile.BLOCKSIZE)


def _plain_members(fd: int, length: int) -> list[tuple[str, int, int]] | None:
    """``(name, data offset, size)`` of every regular file of a local tar, reading headers only;
    None unless the tar is a plain one that ``tarfile`` reads whole.

    Plain means: ustar headers with valid checksums and octal sizes, no name prefix, only regular
    files and directories, every member complete, and an end-of-archive block. That is what
    webdataset writers and img2dataset produce; for anything else (PAX or GNU headers, gzip, a cut
    or garbled tar) the caller uses ``tarfile``, whose reading (and the damage it records) this
    function must never replace. Names decode as ``tarfile`` decodes them (UTF-8, surrogateescape).
    """
    offset, headers, members = 0, [], []
    while True:
        header = os.pread(fd, tarfile.BLOCKSIZE, offset)
        if len(header) < tarfile.BLOCKSIZE:
            return None  # cut before the end-of-archive block
        if header == _ZERO_BLOCK:
            break
        kind = header[156:157]
        if kind not in _PLAIN_FILE and kind != _DIRECTORY or header[345] or header[124] & 0x80:
            return None
        try:
            size = _octal(header[124:136])
        except ValueError:
            return None
        headers.append(header)
        data = offset + tarfile.BLOCKSIZE
        offset = data + -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        if offset > length:
            return None  # the last member's data is cut
        end = header.find(b"\0", 0, 100)
        name = header[:end if end >= 0 else 100].decode(tarfile.ENCODING, "surrogateescape")
        directory = kind == _DIRECTORY or kind == b"\0" and name.endswith("/")  # tarfile's rule
        if directory and size:
            return None  # tarfile does not skip a directory's data; such a tar is not plain
        if not directory and not name.endswith("/"):
            members.append((name, data, size))
    if not headers or not _checksums_hold(headers):
        return None  # an all-zero first block or a garbled header: tarfile's rules apply
    return members


def _octal(field: bytes) -> int:
    """A header's octal number as ``tarfile`` reads it (up to the first NUL, spaces stripped);
    the common ``%011o\\0`` form parses in one step."""
    if field[-1:] == b"\0":
        try:
            return int(field[:-1], 8)
        except ValueError:
            pass
    return int(field.split(b"\0", 1)[0].strip() or b"0", 8)


def _checksums_hold(headers: list[bytes]) -> bool:
    """Every header's checksum field equals the unsigned sum of its bytes, the field counted as
    spaces (computed for all headers at once: summing in Python cost half the walk)."""
    blocks = np.frombuffer(b"".join(headers), dtype=np.uint8).reshape(len(headers), tarfile.BLOCKSIZE)
    expected = blocks.sum(axis=1, dtype=np.int64) - blocks[:, 148:156].sum(axis=1, dtype=np.int64) + 8 * 32
    try:
        stored = [int(h[148:156].split(b"\0", 1)[0].strip() or b"0", 8) for h in headers]
    except ValueError:
        return False
    return bool(np.array_equal(expected, np.asarray(stored, dtype=np.int64)))


# webdataset's base_plus_ext (key, then every extension), compiled once: tests check they agree.
_BASE_PLUS_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


def _iter_plain_shard(url: str, fd: int, members: list[tuple[str, int, int]],
                      only: Container[str] | None = None) -> Iterator[Sample]:
    """The samples of a plain local tar (:func:`_plain_members`), grouped exactly as
    :func:`iter_shard` groups tarfile's members, each member's bytes read with one ``pread``
    (only for keys in ``only``, when given)."""
    current: Sample | None = None
    exts: set[str] = set()
    for name, data, size in members:
        parsed = _BASE_PLUS_EXT.match(name)
        if parsed is None:
            continue
        key, ext = parsed.groups()
        if key.startswith("__") or "/__" in key:
            continue
        ext = ext.lower()
        if current is None or current.key != key or ext in exts:
            if current is not None:
                yield current
            current, exts = Sample(key=key, shard=url, unread=only is not None and key not in only), set()
        exts.add(ext)
        if not current.unread:
            current.files[ext] = os.pread(fd, size, data)
    if current is not None:
        yield current


def _iter_local_fast(url: str, only: Container[str] | None = None) -> Iterator[Sample] | None:
    """The samples of a local plain tar read with ``pread`` (about 5x faster than tarfile's
    stream, which copies every block through its buffers), or None when the tar is not plain."""
    try:
        fd = os.open(url, os.O_RDONLY)
    except OSError:
        return None
    try:
        # Reading only headers jumps from member to member, which the kernel's readahead does not
        # take for a sequential read: ask for the whole file up front, read as one stream.
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        members = _plain_members(fd, os.fstat(fd).st_size)
    except OSError:
        members = None
    if members is None:
        os.close(fd)
        return None

    def samples() -> Iterator[Sample]:
        try:
            yield from _iter_plain_shard(url, fd, members, only)
        finally:
            os.close(fd)

    return samples()


def iter_shard(url: str, on_bad_shard: str = RECORD, damage: list[ShardDamage] | None = None,
               only: Container[str] | None = None) -> Iterator[Sample]:
    """Group the members of one tar into samples by key (consecutive members, webdataset's rule).

    A key that reappears later in the same shard yields a second Sample with that key; the caller
    records it as a duplicate. A tar that does not end with its end-of-archive block (truncated,
    a garbled member header) or cannot be opened: in ``fail`` mode :class:`ShardError` after its
    readable samples; in ``record`` mode the whole samples, then the group open at the cut with
    ``cut`` set, and a :class:`ShardDamage` appended to ``damage`` (see the module docstring).

    A plain local tar (ustar headers only, read whole: what img2dataset and webdataset write) is
    read with ``pread``, member by member, about 4x faster than ``tarfile``; anything else goes
    through ``tarfile``, with the same samples either way. ``only``: the caller needs the bytes of
    these keys only; from a plain local tar, other samples come with ``unread`` set and no bytes
    (their keys and order as always), so a pass that picks a few samples reads little more than the
    headers. From any other source every sample is read.
    """
    # webdataset imports torch: imported here, not at module level, because the Snakefile imports
    # this module while parsing (every snakemake start and every Slurm job).
    from webdataset import gopen
    from webdataset.tariterators import base_plus_ext

    check_mode(on_bad_shard)
    strict = on_bad_shard == FAIL
    fast = _iter_local_fast(url, only) if is_local(url) else None
    if fast is not None:  # a whole plain tar: no damage to record, same samples as below
        yield from fast
        return
    if not strict and is_local(url) and not os.path.exists(url):
        _note(damage, ShardDamage(url, MISSING, "no such file"))
        return
    current: Sample | None = None
    n_whole = 0
    tarinfo, state = _header_watch()
    try:
        stream = gopen(url, "rb")
    except Exception as exc:
        if strict:
            raise ShardError(f"shard {url}: cannot open ({exc})") from exc
        _note(damage, ShardDamage(url, TRUNCATED, f"cannot open ({exc})"))
        return
    problem: BaseException | None = None
    try:
        with tarfile.open(fileobj=stream, mode="r|*", tarinfo=tarinfo) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                parsed = base_plus_ext(member.name)
                if parsed[0] is None:
                    continue  # a file without an extension is not part of any sample
                key, ext = parsed
                if key.startswith("__") or "/__" in key:
                    continue  # webdataset's reserved metadata members
                ext = ext.lower()
                if current is None or current.key != key or ext in current.files:
                    # A new group starts, so the previous one is whole: yielded before this
                    # member's data is read, which is where a cut shows.
                    if current is not None:
                        n_whole += 1
                        yield current
                    current = Sample(key=key, shard=url)
                current.files[ext] = tar.extractfile(member).read()
            end = state.get("end")
            if end is not None and not isinstance(end, tarfile.EOFHeaderError):
                raise tarfile.ReadError(f"{end or type(end).__name__} where the next member header or the "
                                        f"end-of-archive block should be")
    except (tarfile.TarError, EOFError, OSError) as exc:
        problem = exc
        if strict:
            raise ShardError(
                f"shard {url}: unreadable tar after {'key ' + current.key if current else 'no sample'} "
                f"({type(exc).__name__}: {exc}). The shard is truncated or not a tar: re-download "
                f"or regenerate it, set `ingest.on_bad_shard: record` to keep its whole samples, "
                f"or remove it from the dataset's `shards` list."
            ) from exc
    finally:
        try:
            stream.close()
        except OSError as exc:
            # A pipe whose reader stopped at a cut ends with SIGPIPE or the download's own error:
            # in record mode that is part of the damage already found, not a second failure.
            if strict or problem is None:
                raise
            problem = OSError(f"{problem}; then {exc}")
    if problem is None:
        if current is not None:
            yield current
        return
    error = f"{type(problem).__name__}: {problem}"
    if current is not None:
        # The open group may have had members past the cut: it is no whole sample.
        current.cut = (f"shard cut inside this sample ({error}); members read: "
                       f"{', '.join(sorted(current.files)) or 'none'}")
        yield current
    _note(damage, ShardDamage(url, TRUNCATED, error, n_whole))


# Member extensions that webdataset's default decoders (used by OpenCLIP's trainer and by
# clip-benchmark) unpickle: `pyd`/`pickle` with pickle.loads, `pth` with torch.load. parrotscope
# itself reads only images, `txt` and `json`.
UNPICKLED_EXTS = ("pyd", "pickle", "pth")


@dataclass
class ShardScan:
    """What a header-only scan of a local tar found."""

    n_samples: int
    unpickled_members: list[str]
    cut: str = ""  # record mode: why the tar ended before its end-of-archive block


def scan_shard(path: str, on_bad_shard: str = FAIL) -> ShardScan:
    """Samples in a local tar (grouped as :func:`iter_shard` groups them) and its members that
    webdataset would unpickle, reading member headers only (data is seeked over). Raises
    :class:`ShardError` naming the tar when it does not read to its end-of-archive block, so a
    truncated or garbled shard is not taken as a smaller one; in ``record`` mode (for a shard
    that ingest recorded as truncated) returns what was read before the cut, with ``cut`` set."""
    from webdataset.tariterators import base_plus_ext  # lazily: see iter_shard

    check_mode(on_bad_shard)
    tarinfo, state = _header_watch()
    n, key, exts, unpickled = 0, None, set(), []
    try:
        with tarfile.open(path, mode="r:*", tarinfo=tarinfo) as tar:
            for member in tar:
                parsed = base_plus_ext(member.name) if member.isfile() else (None, None)
                if parsed[0] is None or parsed[0].startswith("__") or "/__" in parsed[0]:
                    continue
                if parsed[0] != key or parsed[1].lower() in exts:
                    n, key, exts = n + 1, parsed[0], set()
                exts.add(parsed[1].lower())
                if parsed[1].lower().rsplit(".", 1)[-1] in UNPICKLED_EXTS:
                    unpickled.append(member.name)
            end = state.get("end")
            if end is not None and not isinstance(end, tarfile.EOFHeaderError):
                raise tarfile.ReadError(f"{end or type(end).__name__} where the next member header or the "
                                        f"end-of-archive block should be")
    except (tarfile.TarError, EOFError, OSError) as exc:
        if on_bad_shard == RECORD:
            return ShardScan(n_samples=n, unpickled_members=unpickled, cut=f"{type(exc).__name__}: {exc}")
        raise ShardError(f"shard {path}: unreadable tar after {n} sample(s) ({type(exc).__name__}: {exc}); "
                         f"the shard is truncated or garbled: rebuild it") from exc
    return ShardScan(n_samples=n, unpickled_members=unpickled)


def count_training_samples(counts_json: str) -> int:
    """Samples in the training shards: ``ok`` of a dataset's ``parts.json`` (skipped samples are in
    the raw shards too; the trainer's decoder skips them) or the sum of OpenCLIP's ``sizes.json``.

    The trainer's sample count, and Table 10's data sizes: here, not in :mod:`parrotscope.train`,
    so that the tables read it without importing the trainer (the tables' environment has no
    torch)."""
    counts = read_json(counts_json)
    if "ok" in counts and "parts" in counts:
        return int(counts["ok"])
    return int(sum(counts.values()))


def iter_part(shards: Iterable[str], on_bad_shard: str = RECORD, damage: list[ShardDamage] | None = None
              ) -> Iterator[Sample]:
    """The samples of a part's shards in order (:func:`iter_shard` on each)."""
    for url in shards:
        yield from iter_shard(url, on_bad_shard, damage)


def _image_member(files: dict[str, bytes]) -> tuple[str, bytes] | tuple[None, None]:
    for ext in IMAGE_EXTS:
        if ext in files:
            return ext, files[ext]
    return None, None


def decode_caption(files: dict[str, bytes]) -> tuple[str, str, str]:
    """Return (status, error, caption) for a sample's caption.

    Text is NFC-normalised so that visually equal words compare equal; nothing else is changed
    here (matching applies its own configured normalisation).
    """
    raw = files.get(CAPTION_EXT)
    if raw is None:
        meta = _parse_meta(files)
        cap = meta.get("caption") if isinstance(meta, dict) else None
        if not isinstance(cap, str):
            return "missing_caption", "no .txt member and no caption in .json", ""
        raw = cap.encode("utf-8")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return "caption_not_utf8", f"caption is not UTF-8: {exc.reason} at byte {exc.start}", ""
    text = unicodedata.normalize("NFC", text).strip()
    if not text:
        return "empty_caption", "caption is empty or whitespace", ""
    return OK, "", text


def _parse_meta(files: dict[str, bytes]) -> dict | None:
    raw = files.get("json")
    if not raw:
        return None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


def open_image(data: bytes, max_pixels: int) -> tuple[str, str, Image.Image | None]:
    """Decode image bytes fully; return (status, error, image). Size is checked before decoding."""
    if not data:
        return "empty_image", "image file has 0 bytes", None
    try:
        img = Image.open(io.BytesIO(data))
        w, h = img.size
        if w * h > max_pixels:
            return "image_too_large", f"{w}x{h} = {w * h} px exceeds max_pixels {max_pixels}", None
        img.load()
    except Exception as exc:  # PIL raises many types for corrupt data
        return "corrupt_image", f"{type(exc).__name__}: {exc}", None
    if w == 0 or h == 0:
        return "corrupt_image", f"image has zero size {w}x{h}", None
    return OK, "", img


def to_rgb(img: Image.Image) -> np.ndarray:
    """Convert any PIL mode to RGB uint8; transparent pixels become white (as a browser shows them)."""
    return np.asarray(rgb_image(img), dtype=np.uint8)


def rgb_image(img: Image.Image) -> Image.Image:
    """:func:`to_rgb` as a PIL image (what a CLIP's eval transform takes, without an array copy)."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba)
    elif img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(scaled.astype(np.uint8), "L")
    return img.convert("RGB")


def check_sample(sample: Sample, max_pixels: int) -> tuple[Checked, Image.Image | None]:
    """Validate one sample: image present and decodable within the size bound, caption usable.
    A sample cut by the end of its shard is ``truncated_shard`` whatever its members hold."""
    ext, data = _image_member(sample.files)
    meta_raw = sample.files.get("json", b"")
    meta = meta_raw.decode("utf-8", errors="replace") if meta_raw else ""
    if sample.cut:
        # Not decoded: a member may be cut short, and members past the cut are unknown.
        return Checked(key=sample.key, shard=sample.shard, status="truncated_shard", error=sample.cut,
                       caption="", width=0, height=0, mode="", format=ext or "",
                       n_bytes=len(data or b""), meta=meta), None
    cap_status, cap_error, caption = decode_caption(sample.files)
    base = dict(key=sample.key, shard=sample.shard, caption=caption, meta=meta)
    converted = _parse_meta(sample.files) if ext is None else None
    if isinstance(converted, dict) and converted.get(CONVERTED_SKIP) in CONVERTED_SKIPS:
        return Checked(**base, status=converted[CONVERTED_SKIP], error=str(converted.get("error", "")),
                       width=0, height=0, mode="", format="", n_bytes=0), None
    if ext is None:
        return Checked(**base, status="missing_image", error="no jpg/jpeg/png/webp member",
                       width=0, height=0, mode="", format="", n_bytes=0), None
    status, error, img = open_image(data, max_pixels)
    width, height = (img.size if img is not None else (0, 0))
    info = dict(width=width, height=height, mode=img.mode if img else "",
                format=(img.format or ext) if img else ext, n_bytes=len(data))
    if status == OK and cap_status != OK:
        status, error = cap_status, cap_error
    return Checked(**base, status=status, error=error, **info), img if status == OK else None


def iter_checked(shards: Iterable[str], max_pixels: int, on_bad_shard: str = RECORD,
                 damage: list[ShardDamage] | None = None) -> Iterator[tuple[Checked, Image.Image | None]]:
    """Every sample of a part, checked; repeated keys after the first are ``duplicate_key``.
    Damaged shards are handled by ``on_bad_shard`` and listed in ``damage`` (:func:`iter_shard`)."""
    seen: set[str] = set()
    for sample in iter_part(shards, on_bad_shard, damage):
        if sample.key in seen:
            yield Checked(key=sample.key, shard=sample.shard, status="duplicate_key",
                          error="key already seen earlier in this part", caption="", width=0,
                          height=0, mode="", format="", n_bytes=0, meta=""), None
            continue
        seen.add(sample.key)
        yield check_sample(sample, max_pixels)


def iter_encoded(shards: Iterable[str], keys: set[str]) -> Iterator[tuple[str, str, bytes]]:
    """``(key, shard, encoded image bytes)`` of the given keys (first occurrence of each), in shard
    order, undecoded: what :func:`decode_image` turns into pixels, in this process or a worker.

    Damaged shards are read in ``record`` mode, so a stage sees the whole samples ingest saw. A
    key that is not found (its shard was cut or changed after ingest) raises :class:`ShardError`
    once the shards are read: a later stage never loses a sample silently.
    """
    shards = list(shards)
    done: set[str] = set()
    for sample in iter_part(shards, RECORD):
        if sample.key not in keys or sample.key in done or sample.cut:
            continue
        done.add(sample.key)
        yield sample.key, sample.shard, _image_member(sample.files)[1]
    missing = set(keys) - done
    if missing:
        raise ShardError(f"{len(missing)} sample(s) ok at ingest not found in the shards {shards[:3]}"
                         f"{'...' if len(shards) > 3 else ''}, e.g. {sorted(missing)[:3]}: the shards "
                         f"changed since ingest; rerun ingest for this part")


def decode_image(key: str, shard: str, data: bytes, max_pixels: int) -> np.ndarray:
    """RGB uint8 pixels of an image that decoded at ingest; :class:`ShardError` if it no longer does."""
    return np.asarray(decode_rgb_image(key, shard, data, max_pixels), dtype=np.uint8)


def decode_rgb_image(key: str, shard: str, data: bytes, max_pixels: int) -> Image.Image:
    """:func:`decode_image` as an RGB PIL image."""
    _, error, img = open_image(data, max_pixels)
    if img is None:
        raise ShardError(f"shard {shard}: key {key} decoded at ingest but not now ({error})")
    return rgb_image(img)


def iter_images(shards: Iterable[str], keys: set[str], max_pixels: int) -> Iterator[tuple[str, np.ndarray]]:
    """Decoded RGB images of the given keys (first occurrence of each), in shard order
    (:func:`iter_encoded`, then :func:`decode_image`)."""
    for key, shard, data in iter_encoded(shards, keys):
        yield key, decode_image(key, shard, data, max_pixels)
