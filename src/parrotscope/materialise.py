"""Stage ``materialise``: copying each subset's selected samples out of the source shards.

Selection (``curate_select``, ``filter_fix``, ``filter_baseline``) writes a subset's keys
(``keys.parquet``: ``__key__, part, shard``); this module copies the samples. A uniform subset of
LAION-2B touches nearly all of its ~230k shards, so copying one subset at a time reads the dataset
once per subset (19 times for Tables 3-6). Instead the work is split in two:

Map (one job per part and *pass*, a group of subsets)
    :func:`map_part` reads each of the part's source shards once, with
    :func:`parrotscope.shards.iter_shard` (truncated or broken shards behave as in every other
    stage), and writes each selected sample into the *piece* of every subset of the pass that
    chose it: ``results/{dataset}/pieces/{subset}/{part}.tar`` plus the piece's index
    ``{part}.parquet`` (``__key__``, ``uid``, ``n_bytes``, in piece order). A shard holding no
    selected key is not read. The part's counts (``results/{dataset}/materialise/{pass}/{part}.json``)
    reconcile: ``samples_in = samples_selected + samples_skipped`` (skipped: selected by no subset of
    the pass, or a repeated key), with samples, members and bytes per subset, shards and bytes read.

Reduce (one job per subset, reading only its own pieces)
    ``reshard`` (the default): :func:`reshard_subset` writes ``curate.n_shards`` tars that are
    byte-identical to what :func:`materialise_subset` (the one-subset path, which reads the source
    shards itself) writes for the same keys: samples in the dataset's order (parts, then shards,
    then tar order), each in output shard ``rank of its key among the sorted keys % n_shards``,
    members in their order, headers without time or owner; then OpenCLIP's ``sizes.json``.
    ``listing``: :func:`list_subset` copies nothing. It writes ``sizes.json`` beside the pieces
    (``pieces/{subset}/sizes.json``: piece file name -> samples, the layout OpenCLIP's own
    ``sizes.json`` has), and the trainer reads the pieces in place. Every piece must then hold a
    sample (a trainer worker whose shards are all empty never ends its epoch); piece sizes follow
    how the subset spreads over parts.
    Both check that the pieces hold exactly the subset's keys, and write ``materialised.json``
    (counts, the uid verdict) and, where it applies, ``uids.npy`` in the subset's directory.

Passes
    :func:`plan_passes` groups subsets into passes. Each pass is one map job per part; a pass
    waits for the selections of all its subsets, and fails if one of them does. ``table``
    (default): one pass per curation table (Table 3's run reads the shards once, waits for no
    scoring and no other table's selection), the filters' subsets in one pass, other subsets in use
    by what their selection reads (the text index or scores). ``dependency``: text-index subsets
    (Curation I-II), scored subsets (Curation III), filter subsets. ``single``: one pass for
    everything in use, for a cluster run of all tables that reads every source shard exactly once.
    A subset nothing uses is materialised alone, on request.

DataComp uids
    DataComp selects samples by uid: its resharder (``resharder.py --subset-file`` in
    github.com/mlfoundations/datacomp) loads a NumPy array of dtype ``np.dtype("u8,u8")``, one
    ``(high 64 bits, low 64 bits)`` pair per 128-bit uid (``divmod(int(uid, 16), 2**64)``, the uid
    being the hex string in each sample's ``json``), and looks samples up with ``np.searchsorted``,
    so the array must be sorted; DataComp's README asks for lexicographic order. Each entry copies
    every pool sample with that uid once, so entries are unique. :func:`uid_array` writes exactly
    that. A subset is written as ``uids.npy`` only when every one of its samples carries a valid
    uid; otherwise no file is written (a partial list would silently select fewer samples, an
    empty one nothing) and ``materialised.json`` says how many samples lacked one.

Completion protocol
    Every output is written under a temporary name and renamed into place when complete. A map
    job renames its pieces, then their indexes, and writes its counts last. A reduce writes
    ``uids.npy`` and ``materialised.json``, then its shards, and ``sizes.json`` last: present, it
    means what it lists is complete (see :func:`_publish`).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from .io import KEY, atomic_path, read_json, read_parquet, write_json, write_parquet
from .shards import IMAGE_EXTS, iter_shard

log = logging.getLogger(__name__)

# Members a trainer or a later stage can use; anything else in a source sample is left out.
KEEP_EXTS = (*IMAGE_EXTS, "txt", "json")
SIZES_FILE = "sizes.json"
SHARD_NAME = "{:05d}.tar"
SHARD_NAME_RE = re.compile(r"^\d{5}\.tar$")
UIDS_FILE = "uids.npy"
COUNTS_FILE = "materialised.json"
OUTPUTS = ("reshard", "listing")
PASS_MODES = ("table", "dependency", "single")
# DataComp's subset-file dtype: a 128-bit uid as (high, low) unsigned 64-bit halves.
UID_DTYPE = np.dtype("u8,u8")
UID_RE = re.compile(r"^[0-9a-fA-F]{1,32}$")
PIECE_INDEX_COLUMNS = [KEY, "uid", "n_bytes", "offset", "length"]


class MaterialiseError(ValueError):
    """Inputs of materialising do not fit together; the message says what to rebuild or change."""


class SampleNotFound(MaterialiseError, LookupError):
    """A selected key is not in the shard the index records for it."""


def not_found(shard: str, missing: list[str]) -> SampleNotFound:
    """The error for selected keys a source shard no longer holds (it changed after the index)."""
    more = f" ({len(missing)} selected keys missing, e.g. {missing[:3]})" if len(missing) > 1 else ""
    return SampleNotFound(f"shard {shard}: selected key {missing[0]} not found{more}; the shard changed since "
                          "the index was built: rebuild the index and the subsets")


# --- names and passes ----------------------------------------------------------------------------


def shard_names(n_shards: int) -> list[str]:
    """File names of a subset's shards, for rules that name them as outputs or inputs."""
    return [SHARD_NAME.format(i) for i in range(n_shards)]


def piece_path(dataset: str, subset: str, part: str, ext: str = "tar") -> str:
    """Where the map writes a subset's samples of one part (``ext`` ``parquet``: their index)."""
    return f"results/{dataset}/pieces/{subset}/{part}.{ext}"


def index_path_of(piece: str | os.PathLike) -> Path:
    """The index (parquet) written beside a piece tar."""
    return Path(piece).with_suffix(".parquet")


def plan_passes(tables: Mapping[str, Sequence[str]], curated: Sequence[str], scored: Iterable[str],
                filters: Sequence[str], mode: str = "table", used: Iterable[str] = ()) -> dict[str, list[str]]:
    """Subsets per pass (pass name -> subset names, each subset in exactly one pass).

    ``tables``: curation table -> its subsets; ``curated``: every subset of ``curate.subsets``;
    ``scored``: those whose selection reads scores; ``filters``: the filters' subsets; ``used``:
    other subsets something trains on (``str.sources``, ``filters.references``). See the module
    docstring for the modes. A curated subset that no table lists and nothing uses gets a pass of
    its own (``subset_<name>``), run only when asked for: its criteria may not even be satisfiable
    on the data (the demo's RSC < 0), and a pass needs every one of its selections. Pass names are
    made of letters, digits and ``_`` (they name rules); empty passes are left out.
    """
    if mode not in PASS_MODES:
        raise MaterialiseError(f"config materialise.passes: {mode!r} is not one of {list(PASS_MODES)}")
    scored = set(scored)
    tabled = list(dict.fromkeys(s for names in tables.values() for s in names if s in curated))
    in_use = list(dict.fromkeys([*tabled, *(s for s in used if s in curated)]))
    groups: list[tuple[str, list[str]]] = []
    if mode == "single":
        groups.append(("all", [*in_use, *filters]))
    else:
        rest = in_use
        if mode == "table":
            placed: set[str] = set()
            for table, names in tables.items():
                mine = [s for s in dict.fromkeys(names) if s in curated and s not in placed]
                placed.update(mine)
                groups.append((table, mine))
            rest = [s for s in in_use if s not in placed]
        groups += [("text", [s for s in rest if s not in scored]), ("scored", [s for s in rest if s in scored]),
                   ("filters", list(filters))]
    groups += [(f"subset_{s}", [s]) for s in curated if s not in in_use]
    passes: dict[str, list[str]] = {}
    for name, subsets in groups:
        if not subsets:
            continue
        safe = re.sub(r"\W", "_", name)
        while safe in passes:
            safe += "_"
        passes[safe] = subsets
    return passes


# --- tar writing ---------------------------------------------------------------------------------


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    """A member header without time or owner, so the same selection gives byte-identical tars."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _slow_header(name: str, size: int) -> bytes:
    return _tarinfo(name, size).tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")


# tarfile's own header for a short ASCII name: the fast path below changes only its name, size and
# checksum fields, so it stays what this Python's tarfile writes (tests compare the two).
_HEADER_TEMPLATE = _slow_header("x", 0)
assert len(_HEADER_TEMPLATE) == tarfile.BLOCKSIZE
_SPACES = b" " * 8


def member_header(name: str, size: int) -> bytes:
    """The header block(s) ``tarfile`` writes for :func:`_tarinfo` in a PAX-format archive.

    Building it with ``TarInfo.tobuf`` costs about as much as parsing a member; a name of at most
    100 ASCII bytes and a size below 8 GiB need no PAX record, so their header is the template with
    name, size and checksum filled in, as ``tarfile`` fills them."""
    encoded = name.encode("ascii", "surrogateescape") if name.isascii() else None
    if encoded is None or len(encoded) > 100 or size >= 8 ** 11:
        return _slow_header(name, size)
    buf = bytearray(_HEADER_TEMPLATE)
    buf[0:100] = encoded.ljust(100, tarfile.NUL)
    buf[124:136] = b"%011o\0" % size
    buf[148:156] = _SPACES
    buf[148:155] = b"%06o\0" % sum(buf)
    return bytes(buf)


class TarWriter:
    """Writes exactly the bytes of ``tarfile.open(mode="w", format=PAX_FORMAT)`` + ``addfile``,
    but takes a ready header, so a sample going to several pieces has its headers built once."""

    def __init__(self, fh):
        self.fh = fh
        self.offset = 0

    def add(self, header: bytes, data: bytes) -> None:
        pad = -len(data) % tarfile.BLOCKSIZE
        self.fh.write(header)
        self.fh.write(data)
        if pad:
            self.fh.write(tarfile.NUL * pad)
        self.offset += len(header) + len(data) + pad

    def add_raw(self, blocks: bytes) -> None:
        """Members already laid out (headers, data, padding), e.g. one sample copied from a piece."""
        self.fh.write(blocks)
        self.offset += len(blocks)

    def close(self) -> None:
        """The end-of-archive blocks, padded to a whole record, as ``TarFile.close`` writes them."""
        self.fh.write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
        self.offset += 2 * tarfile.BLOCKSIZE
        rest = self.offset % tarfile.RECORDSIZE
        if rest:
            self.fh.write(tarfile.NUL * (tarfile.RECORDSIZE - rest))


def training_members(files: Mapping[str, bytes]) -> tuple[dict[str, bytes], bool]:
    """The members to copy, and whether the caption came from the ``json`` member.

    A sample whose caption is only in its ``json`` (ingest accepts that) gets a ``txt`` with that
    caption, because OpenCLIP's trainer reads captions from ``txt`` only.
    """
    members = {ext: data for ext, data in files.items() if ext in KEEP_EXTS}
    if "txt" in members:
        return members, False
    try:
        caption = json.loads(members.get("json", b"{}").decode("utf-8")).get("caption")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        caption = None
    if not isinstance(caption, str):
        return members, False
    members["txt"] = caption.encode("utf-8")
    return members, True


def sample_uid(members: Mapping[str, bytes]) -> str | None:
    """The ``uid`` of a sample's ``json`` member as written there, or None without one.

    A value that is not a string is returned as its JSON text, so it is counted as invalid rather
    than as missing."""
    raw = members.get("json")
    if not raw or b'"uid"' not in raw:
        return None
    try:
        uid = json.loads(raw.decode("utf-8")).get("uid")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    if uid is None or isinstance(uid, str):
        return uid
    return json.dumps(uid)


def uid_array(uids: Iterable[str]) -> np.ndarray:
    """DataComp's subset array: sorted unique ``(high, low)`` 64-bit halves of 128-bit hex uids."""
    pairs = [divmod(int(u, 16), 1 << 64) for u in uids]
    return np.unique(np.array(pairs, dtype=UID_DTYPE))


def _fsync(fh) -> None:
    fh.flush()
    os.fsync(fh.fileno())


# --- map -----------------------------------------------------------------------------------------


def _check_keys(name: str, table: pd.DataFrame) -> pd.DataFrame:
    for col in (KEY, "shard"):
        if col not in table.columns:
            raise MaterialiseError(f"subset {name!r}: the keys table has no {col!r} column")
    dup = table[KEY].duplicated()
    if dup.any():
        raise MaterialiseError(f"subset {name!r}: the keys table repeats keys, "
                               f"e.g. {table.loc[dup, KEY].head(3).tolist()}")
    return table


def _wanted(keys: Mapping[str, pd.DataFrame], names: Sequence[str], shards: Sequence[str],
            part: str) -> dict[str, dict[str, list[int]]]:
    """Source shard -> selected key -> positions (in ``names``) of the subsets that chose it."""
    known = set(shards)
    wanted: dict[str, dict[str, list[int]]] = {}
    for i, name in enumerate(names):
        table = _check_keys(name, keys[name])
        unknown = sorted(set(table["shard"]) - known)
        if unknown:
            raise MaterialiseError(
                f"subset {name!r}: keys of {part} come from shard(s) {unknown[:3]} that are not among the "
                f"part's {len(known)} shards; the index is stale: rebuild it (and the subset's keys)")
        for key, shard in zip(table[KEY].tolist(), table["shard"].tolist()):
            wanted.setdefault(shard, {}).setdefault(key, []).append(i)
    return wanted


def map_part(shards: Sequence[str], keys: Mapping[str, pd.DataFrame], pieces: Mapping[str, str | os.PathLike],
             counts_path: str | os.PathLike | None = None, part: str = "part", pass_name: str = "pass") -> dict:
    """Read the part's ``shards`` once; write each subset's selected samples as its piece.

    ``keys``: subset -> its keys in this part (``__key__`` and ``shard``); ``pieces``: subset ->
    the piece tar to write (its index goes beside it, :func:`index_path_of`). Every subset gets a
    piece, an empty one when it chose nothing here. A selected key missing from its shard raises
    :class:`SampleNotFound`; then nothing is renamed into place. Returns the counts (also written
    to ``counts_path``, last).
    """
    started = time.perf_counter()
    names = list(pieces)
    if set(names) != set(keys):
        raise MaterialiseError(f"map of {part}: keys for {sorted(keys)} but pieces for {sorted(names)}")
    shards = list(dict.fromkeys(shards))
    wanted = _wanted(keys, names, shards, part)
    subsets = {name: {"selected": int(len(keys[name])), "samples": 0, "bytes": 0, "members": {},
                      "caption_from_json": 0, "members_dropped": 0} for name in names}
    counts = {"part": part, "pass": pass_name, "subsets_in_pass": len(names), "shards": len(shards),
              "shards_read": 0, "shards_without_selected_keys": 0, "bytes_read": 0, "samples_in": 0,
              "samples_selected": 0, "samples_skipped": 0,
              "skipped_by_reason": {"not_selected": 0, "duplicate_key": 0, "truncated_shard": 0}, "subsets": subsets}
    rows: list[list[tuple[str, str | None, int, int, int]]] = [[] for _ in names]
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(atomic_path(pieces[name], suffix=".tar")) for name in names]
        files = [stack.enter_context(open(tmp, "wb")) for tmp in tmps]
        writers = [TarWriter(fh) for fh in files]
        for shard in tqdm(shards, desc=f"map {part} ({pass_name})", unit="shard", file=sys.stderr,
                          mininterval=10):
            want = wanted.get(shard)
            if not want:
                counts["shards_without_selected_keys"] += 1
                continue
            counts["shards_read"] += 1
            seen: set[str] = set()
            found = 0
            local = os.path.isfile(shard)
            payload = 0
            for sample in iter_shard(shard, only=want):
                counts["samples_in"] += 1
                if not local:
                    payload += sum(len(d) for d in sample.files.values())
                if sample.key in seen:  # ingest's `duplicate_key`: the first one is the sample
                    counts["skipped_by_reason"]["duplicate_key"] += 1
                    continue
                seen.add(sample.key)
                if sample.cut:  # the group open where the shard was cut: never selectable (ingest)
                    counts["skipped_by_reason"]["truncated_shard"] += 1
                    continue
                targets = want.get(sample.key)
                if targets is None:
                    counts["skipped_by_reason"]["not_selected"] += 1
                    continue
                found += 1
                counts["samples_selected"] += 1
                members, from_json = training_members(sample.files)
                dropped = len(set(sample.files) - set(members))
                uid = sample_uid(members)
                blocks = [(member_header(f"{sample.key}.{ext}", len(data)), data) for ext, data in members.items()]
                n_bytes = sum(len(data) for data in members.values())
                for i in targets:
                    start = writers[i].offset
                    for header, data in blocks:
                        writers[i].add(header, data)
                    stats = subsets[names[i]]
                    stats["samples"] += 1
                    stats["bytes"] += n_bytes
                    stats["caption_from_json"] += from_json
                    stats["members_dropped"] += dropped
                    for ext in members:
                        stats["members"][ext] = stats["members"].get(ext, 0) + 1
                    rows[i].append((sample.key, uid, n_bytes, start, writers[i].offset - start))
            counts["bytes_read"] += os.path.getsize(shard) if local else payload
            if found < len(want):
                raise not_found(shard, sorted(set(want) - seen))
        for writer, fh in zip(writers, files):
            writer.close()
            fh.close()  # atomic_path fsyncs and renames each piece when the stack unwinds
    for name, table in zip(names, rows):
        columns = list(zip(*table)) if table else [()] * len(PIECE_INDEX_COLUMNS)
        index = pd.DataFrame({KEY: pd.Series(columns[0], dtype=object), "uid": pd.Series(columns[1], dtype=object),
                              **{col: np.asarray(values, dtype=np.int64)
                                 for col, values in zip(PIECE_INDEX_COLUMNS[2:], columns[2:])}})
        write_parquet(index, index_path_of(pieces[name]))
    counts["samples_skipped"] = sum(counts["skipped_by_reason"].values())
    counts["seconds"] = round(time.perf_counter() - started, 3)
    if counts_path is not None:
        write_json(counts, counts_path)
    return counts


def read_part_keys(keys_path: str | os.PathLike, part: str) -> pd.DataFrame:
    """A subset's keys in one part (``keys.parquet`` filtered on ``part``, only the needed columns)."""
    try:
        return pd.read_parquet(keys_path, columns=[KEY, "part", "shard"], filters=[("part", "==", part)],
                               page_checksum_verification=True)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise MaterialiseError(f"cannot read {keys_path}: {exc}. Delete it and rerun to rebuild it.") from exc


def part_shards(parts_json: str | os.PathLike, part: str) -> list[str]:
    """The shard URLs of one part, as ``parts.json`` (ingest's record) lists them."""
    parts = read_json(parts_json)["parts"]
    if part not in parts:
        raise MaterialiseError(f"{parts_json} has no part {part!r}: the dataset's parts changed; rerun ingest")
    return list(parts[part]["shards"])


def run_map(parts_json: str, part: str, keys_paths: Mapping[str, str], pieces: Mapping[str, str],
            counts_path: str, pass_name: str) -> dict:
    """:func:`map_part` for one part of a dataset, reading each subset's keys in that part."""
    keys = {name: read_part_keys(path, part) for name, path in keys_paths.items()}
    counts = map_part(part_shards(parts_json, part), keys, pieces, counts_path, part=part, pass_name=pass_name)
    log.info("map %s (%s): %d samples in %d of %d shards (%.1f MB), %d selected; %s", part, pass_name,
             counts["samples_in"], counts["shards_read"], counts["shards"], counts["bytes_read"] / 1e6,
             counts["samples_selected"], {k: v["samples"] for k, v in counts["subsets"].items()})
    return counts


# --- reduce --------------------------------------------------------------------------------------


def _read_indexes(keys: pd.DataFrame, pieces: Sequence[str | os.PathLike], subset: str) -> list[pd.DataFrame]:
    """The pieces' indexes, checked to hold exactly the subset's keys, each once."""
    _check_keys(subset, keys)
    indexes = [read_parquet(index_path_of(p), columns=PIECE_INDEX_COLUMNS) for p in pieces]
    listed = pd.concat([ix[KEY] for ix in indexes], ignore_index=True) if indexes else pd.Series([], dtype=object)
    expected = set(keys[KEY])
    dup = listed[listed.duplicated()]
    extra = sorted(set(listed) - expected)
    missing = sorted(expected - set(listed))
    if len(dup) or extra or missing:
        raise MaterialiseError(
            f"subset {subset!r}: its pieces do not hold exactly its {len(expected)} keys "
            f"({len(missing)} missing, e.g. {missing[:3]}; {len(extra)} not selected, e.g. {extra[:3]}; "
            f"{len(dup)} repeated). A key's `part` column must name the part of its shard, and pieces must "
            f"come from the same selection: rerun the subset's selection and its materialise pass")
    return indexes


def uid_verdict(uids: Sequence[str | None]) -> tuple[np.ndarray | None, dict]:
    """DataComp's uid array for the samples when every one has a valid uid, and the counts."""
    n = len(uids)
    present = [u for u in uids if u is not None]
    valid = [u for u in present if UID_RE.match(u)]
    info = {"file": None, "n_samples": n, "n_with_uid": len(present), "n_invalid_uid": len(present) - len(valid),
            "n_without_uid": n - len(present), "n_unique": None, "format": "numpy u8,u8 (DataComp resharder)"}
    if n and len(valid) == n:
        array = uid_array(valid)
        info.update(file=UIDS_FILE, n_unique=int(len(array)))
        if len(array) < n:
            info["note"] = f"{n - len(array)} samples share a uid with another sample of the subset"
        return array, info
    if not present:
        info["note"] = "no sample's json has a `uid`: no uids.npy written (not a DataComp pool)"
    else:
        info["note"] = ("not every sample has a valid 128-bit hex uid: no uids.npy written, since a partial "
                        "list would select fewer samples in DataComp's resharder")
    return None, info


def _write_uids(array: np.ndarray | None, subset_dir: Path) -> None:
    """Write ``uids.npy``, or remove one an earlier run left when there is nothing to write."""
    path = subset_dir / UIDS_FILE
    if array is None:
        path.unlink(missing_ok=True)
        return
    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)


def _publish(tmp_dir: Path, out_dir: Path, names: Sequence[str]) -> None:
    """Move finished shards into ``out_dir``, ``sizes.json`` last (the completion marker).

    The old marker goes first and shards of an earlier run with more shards are removed, so the
    directory never pairs a marker with shards it does not describe.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SIZES_FILE).unlink(missing_ok=True)
    for stale in out_dir.iterdir():
        if SHARD_NAME_RE.match(stale.name) and stale.name not in names:
            stale.unlink()
    for name in names:
        os.replace(tmp_dir / name, out_dir / name)
    os.replace(tmp_dir / SIZES_FILE, out_dir / SIZES_FILE)


def _write_sizes(sizes: Mapping[str, int], path: Path) -> None:
    with open(path, "w") as fh:
        json.dump(dict(sizes), fh, indent=2)
        fh.write("\n")
        _fsync(fh)


def _check_n_shards(n: int, n_shards: int) -> None:
    if n_shards < 1:
        raise MaterialiseError(f"curate.n_shards must be at least 1, got {n_shards}")
    if n < n_shards:
        raise MaterialiseError(f"{n} selected samples cannot fill {n_shards} non-empty shards; "
                               f"lower config `curate.n_shards` or raise `curate.size`")


def assign_shards(keys: Sequence[str], n_shards: int) -> dict[str, int]:
    """Output shard of each key: round-robin over the sorted keys, so sizes differ by at most one
    and every output shard mixes all source shards (keys usually start with their shard's id)."""
    return {key: i % n_shards for i, key in enumerate(sorted(keys))}


def tar_size(data_bytes: int) -> int:
    """Size of a tar whose members take ``data_bytes`` (headers and padding included)."""
    end = data_bytes + 2 * tarfile.BLOCKSIZE
    return end + (-end % tarfile.RECORDSIZE)


def _starts_with_member_of(block: bytes, key: str) -> bool:
    """Whether ``block`` starts with a tar header of one of ``key``'s members (a PAX record first
    when the name needed one)."""
    name = f"{key}.".encode("utf-8", "surrogateescape")
    if block[257:262] != b"ustar":
        return False
    if block[156:157] == tarfile.XHDTYPE:
        return b" path=" + name in block[tarfile.BLOCKSIZE:4 * tarfile.BLOCKSIZE]
    return block.startswith(name)


def piece_samples(piece: str | os.PathLike, index: pd.DataFrame) -> Iterator[tuple[str, bytes]]:
    """Each sample of a piece as the map laid it out (its members' headers, data and padding),
    read by the offsets in its index, which must describe the file exactly."""
    keys = index[KEY].tolist()
    offsets, lengths = index["offset"].to_numpy(np.int64), index["length"].to_numpy(np.int64)
    expected = np.concatenate([[0], np.cumsum(lengths)])
    size = os.path.getsize(piece)
    if not np.array_equal(offsets, expected[:-1]) or size != tar_size(int(expected[-1])):
        raise MaterialiseError(f"piece {piece} ({size} bytes) is not what its index describes: "
                               f"rerun the materialise pass of its part")
    with open(piece, "rb") as fh:
        for key, length in zip(keys, lengths.tolist()):
            block = fh.read(length)
            if len(block) != length or not _starts_with_member_of(block, key):
                raise MaterialiseError(f"piece {piece}: the sample at offset {fh.tell() - len(block)} is not "
                                       f"{key!r} as its index says: rerun the materialise pass of its part")
            yield key, block


def reshard_subset(keys: pd.DataFrame, pieces: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                   n_shards: int, subset: str = "subset") -> dict:
    """Write the subset's pieces (in the dataset's part order) into ``n_shards`` tars in ``out_dir``
    plus ``sizes.json``, byte-identical to :func:`materialise_subset` for the same keys.

    Samples are copied as the map laid them out (headers included: the same bytes the one-subset
    path writes), not parsed again. Also writes ``materialised.json`` and ``uids.npy`` (when every
    sample has a uid) into ``out_dir``'s parent, the subset's directory, before the shards.
    Returns the counts.
    """
    _check_n_shards(len(keys), n_shards)
    indexes = _read_indexes(keys, pieces, subset)
    assignment = assign_shards(keys[KEY].tolist(), n_shards)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    sizes = [0] * n_shards
    n_in = 0
    try:
        with contextlib.ExitStack() as stack:
            files = [stack.enter_context(open(tmp_dir / name, "wb")) for name in shard_names(n_shards)]
            writers = [TarWriter(fh) for fh in files]
            for piece, index in tqdm(list(zip(pieces, indexes)), desc=f"reshard {subset}", unit="piece",
                                     file=sys.stderr, mininterval=10):
                for key, block in piece_samples(piece, index):
                    out = assignment[key]  # _read_indexes checked every key is the subset's
                    writers[out].add_raw(block)
                    sizes[out] += 1
                    n_in += 1
            for writer, fh in zip(writers, files):
                writer.close()
                _fsync(fh)
        sizes_map = dict(zip(shard_names(n_shards), sizes))
        _write_sizes(sizes_map, tmp_dir / SIZES_FILE)
        counts = _subset_counts(subset, "reshard", keys, pieces, indexes, n_in, out_dir.parent)
        counts.update(n_shards=n_shards, sizes=sizes_map)
        write_json(counts, out_dir.parent / COUNTS_FILE)
        _publish(tmp_dir, out_dir, shard_names(n_shards))
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return counts


def _subset_counts(subset: str, output: str, keys: pd.DataFrame, pieces: Sequence, indexes: Sequence[pd.DataFrame],
                   n_in: int, subset_dir: Path) -> dict:
    """``materialised.json``: samples in (the pieces) = written + skipped (none), uids; writes uids.npy."""
    uids = [u for ix in indexes for u in ix["uid"].tolist()]
    uids = [None if (u is None or (isinstance(u, float) and np.isnan(u))) else u for u in uids]
    array, uid_info = uid_verdict(uids)
    _write_uids(array, subset_dir)
    return {"subset": subset, "output": output, "n_keys": int(len(keys)), "pieces": len(pieces),
            "pieces_empty": sum(1 for ix in indexes if len(ix) == 0), "samples_in": int(n_in),
            "samples_written": int(n_in), "samples_skipped": 0,
            "bytes": int(sum(int(ix["n_bytes"].sum()) for ix in indexes)), "uids": uid_info}


def list_subset(keys: pd.DataFrame, pieces: Sequence[str | os.PathLike], sizes_path: str | os.PathLike,
                subset_dir: str | os.PathLike, subset: str = "subset") -> dict:
    """Write OpenCLIP's ``sizes.json`` for the pieces themselves (file name -> samples), beside them.

    Nothing is copied: the trainer reads the pieces. Every piece must hold a sample, and pieces
    must share one directory with distinct names. Also writes ``materialised.json`` and
    ``uids.npy`` into ``subset_dir``. Returns the counts.
    """
    indexes = _read_indexes(keys, pieces, subset)
    sizes_path = Path(sizes_path)
    names = [Path(p).name for p in pieces]
    if {Path(p).parent.resolve() for p in pieces} - {sizes_path.parent.resolve()} or len(set(names)) < len(names):
        raise MaterialiseError(f"subset {subset!r}: a listing needs its pieces beside {sizes_path}, "
                               f"with distinct names")
    empty = [str(p) for p, ix in zip(pieces, indexes) if len(ix) == 0]
    if empty:
        raise MaterialiseError(
            f"subset {subset!r}: {len(empty)} of its {len(pieces)} pieces hold no sample (e.g. {empty[:3]}); "
            f"trained in place, an empty piece can leave a data-loader worker without samples. Use "
            f"`materialise.output: reshard`, or parts large enough that every part holds some of every subset")
    sizes = {name: int(len(ix)) for name, ix in zip(names, indexes)}
    counts = _subset_counts(subset, "listing", keys, pieces, indexes, sum(sizes.values()), Path(subset_dir))
    counts.update(sizes_file=str(sizes_path), sizes=sizes)
    write_json(counts, Path(subset_dir) / COUNTS_FILE)
    sizes_path.unlink(missing_ok=True)
    with atomic_path(sizes_path, suffix=".json") as tmp:
        _write_sizes(sizes, tmp)
    return counts


def _drop_listing(directory: Path, shards_too: bool) -> None:
    """Remove a listing's marker (and shard tars) the other output mode left in ``directory``."""
    (directory / SIZES_FILE).unlink(missing_ok=True)
    if shards_too and directory.is_dir():
        for stale in directory.iterdir():
            if SHARD_NAME_RE.match(stale.name):
                stale.unlink()


def run_reduce(keys_path: str, pieces: Sequence[str], output: str, subset: str, n_shards: int,
               shards_dir: str, listing_path: str) -> dict:
    """The reduce step of one subset: :func:`reshard_subset` into ``shards_dir`` or
    :func:`list_subset` into ``listing_path``; the other mode's marker is removed."""
    if output not in OUTPUTS:
        raise MaterialiseError(f"config materialise.output: {output!r} is not one of {list(OUTPUTS)}")
    keys = read_parquet(keys_path, columns=[KEY, "part", "shard"])
    shards_dir, listing_path = Path(shards_dir), Path(listing_path)
    if output == "reshard":
        _drop_listing(listing_path.parent, shards_too=False)
        counts = reshard_subset(keys, pieces, shards_dir, n_shards, subset)
    else:
        _drop_listing(shards_dir, shards_too=True)
        counts = list_subset(keys, pieces, listing_path, shards_dir.parent, subset)
    log.info("subset %s (%s): %d samples from %d pieces; uids: %s", subset, output, counts["samples_written"],
             counts["pieces"], counts["uids"].get("file") or counts["uids"].get("note"))
    return counts


# --- one subset straight from the source shards ----------------------------------------------------


def _check_sources(keys: pd.DataFrame, shards: Sequence[str]) -> dict[str, set[str]]:
    """Selected keys grouped by source shard; every shard must be one of the dataset's."""
    _check_keys("subset", keys)
    known = set(shards)
    unknown = sorted(set(keys["shard"]) - known)
    if unknown:
        raise MaterialiseError(f"selected keys come from shard(s) {unknown[:3]} that are not among the dataset's "
                               f"{len(known)} shards; the index is stale: rebuild it (and the subset's keys)")
    return {shard: set(group[KEY]) for shard, group in keys.groupby("shard", sort=False)}


def _write_shards(tmp_dir: Path, by_shard: dict[str, set[str]], shards: Sequence[str],
                  assignment: dict[str, int], n_shards: int) -> dict:
    """Stream every source shard once, writing each selected sample to its output tar."""
    counts = {"members": {}, "n_caption_from_json": 0, "n_members_dropped": 0, "n_source_shards_read": 0}
    sizes = [0] * n_shards
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(open(tmp_dir / name, "wb")) for name in shard_names(n_shards)]
        tars = [stack.enter_context(tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT))
                for fh in files]
        for shard in dict.fromkeys(shards):  # the dataset's order, each shard once
            wanted = by_shard.get(shard)
            if not wanted:
                continue
            counts["n_source_shards_read"] += 1
            found: set[str] = set()
            for sample in iter_shard(shard):
                if sample.key not in wanted or sample.key in found or sample.cut:
                    continue  # a repeated key is ingest's `duplicate_key`; a cut group was never selectable
                found.add(sample.key)
                members, from_json = training_members(sample.files)
                counts["n_caption_from_json"] += from_json
                counts["n_members_dropped"] += len(set(sample.files) - set(members))
                out = assignment[sample.key]
                for ext, data in members.items():
                    tars[out].addfile(_tarinfo(f"{sample.key}.{ext}", len(data)), io.BytesIO(data))
                    counts["members"][ext] = counts["members"].get(ext, 0) + 1
                sizes[out] += 1
            missing = sorted(wanted - found)
            if missing:
                raise not_found(shard, missing)
        for tar, fh in zip(tars, files):
            tar.close()
            _fsync(fh)
    counts["sizes"] = {name: n for name, n in zip(shard_names(n_shards), sizes)}
    return counts


def materialise_subset(keys: pd.DataFrame, shards: Sequence[str], out_dir: str | os.PathLike,
                       n_shards: int) -> dict:
    """One subset straight from the source shards into ``n_shards`` equal-size tars in ``out_dir``
    plus ``sizes.json`` (the workflow uses map + reduce; this is the one-subset path, and the
    reference :func:`reshard_subset` is byte-identical to).

    ``keys`` has ``__key__`` and ``shard`` (the source shard URL as the index records it);
    ``shards`` is the dataset's shard list, read in that order, each shard at most once.
    Returns the sample count, the shard sizes and member counts. A key missing from its shard
    raises :class:`SampleNotFound`; an error while reading or writing leaves the output directory
    as it was (only the final renames touch it, ``sizes.json`` last).
    """
    _check_n_shards(len(keys), n_shards)
    by_shard = _check_sources(keys, shards)
    assignment = assign_shards(keys[KEY].tolist(), n_shards)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        result = _write_shards(tmp_dir, by_shard, shards, assignment, n_shards)
        _write_sizes(result["sizes"], tmp_dir / SIZES_FILE)
        _publish(tmp_dir, out_dir, shard_names(n_shards))
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    result.update(n_samples=len(keys), n_shards=n_shards)
    return result
