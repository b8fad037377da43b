"""The inpaint stage's output, one webdataset tar per part: its format and its reader.

Each image with text is ``KEY.png`` (the text-removed image, lossless), ``KEY.mask.png`` (the mask,
255 = removed) and ``KEY.json`` (metadata with a ``status``); an image skipped for a reason in
:data:`SKIP_REASONS` is its ``KEY.json`` alone. :mod:`parrotscope.inpaint` writes these tars;
scoring, the training feed and the figures read them through this module, which needs neither
torch nor an inpainting model.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import cv2
import numpy as np

from .shards import FAIL, ShardError, iter_shard

# Per-image statuses, written to KEY.json and counted in the counts JSON.
INPAINTED = "inpainted"
EMPTY_MASK = "empty_mask"  # nothing of this kind to remove (e.g. no spotted word is in the caption)
NO_DONOR = "no_donor"      # a random control needs another image with text, and the part has none
SKIP_REASONS = (EMPTY_MASK, NO_DONOR)


def encode_png(array: np.ndarray, rgb: bool) -> bytes:
    """Lossless PNG bytes of an RGB image (``rgb=True``) or a single-channel mask."""
    data = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if rgb else array
    ok, buf = cv2.imencode(".png", data, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise ValueError(f"cannot encode array of shape {array.shape} as PNG")
    return buf.tobytes()


def decode_png(data: bytes, rgb: bool) -> np.ndarray:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR if rgb else cv2.IMREAD_GRAYSCALE)
    if arr is None:
        raise ValueError("cannot decode PNG member")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB) if rgb else arr


def iter_inpainted_encoded(tar_path: str, include_skipped: bool = False
                           ) -> Iterator[tuple[str, bytes | None, bytes | None, dict[str, Any]]]:
    """Yield ``(key, image PNG bytes, mask PNG bytes, meta)`` from a tar written by
    :func:`parrotscope.inpaint.run_inpaint`, undecoded (:func:`decode_inpainted` decodes, in this process or a worker).

    Skipped images (meta ``status`` other than ``inpainted``) come only with ``include_skipped``,
    with image and mask None.
    """
    # The workflow's own tar: damage is a corrupted intermediate to refuse, not a download to record.
    for sample in iter_shard(str(tar_path), on_bad_shard=FAIL):
        if "json" not in sample.files:
            raise ShardError(f"{tar_path}: key {sample.key} has no json member")
        try:
            meta = json.loads(sample.files["json"].decode("utf-8"))
            status = meta["status"]
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise ShardError(f"{tar_path}: key {sample.key}: unreadable json member ({exc}); delete the "
                             f"file and rerun to rebuild it") from exc
        if status != INPAINTED:
            if include_skipped:
                yield sample.key, None, None, meta
            continue
        if "png" not in sample.files or "mask.png" not in sample.files:
            raise ShardError(f"{tar_path}: key {sample.key} lacks its png or mask.png member")
        yield sample.key, sample.files["png"], sample.files["mask.png"], meta


def decode_inpainted(tar_path: str, key: str, data: bytes, rgb: bool) -> np.ndarray:
    """One PNG member of an inpainted tar: RGB (the image) or greyscale (the mask)."""
    try:
        return decode_png(data, rgb=rgb)
    except ValueError as exc:  # PNG's CRCs catch garbled bytes; name the file that has them
        raise ShardError(f"{tar_path}: key {key}: {exc}; delete the file and rerun to rebuild it") from exc


def read_inpainted(tar_path: str, include_skipped: bool = False
                   ) -> Iterator[tuple[str, np.ndarray | None, np.ndarray | None, dict[str, Any]]]:
    """Yield ``(key, image RGB uint8, mask uint8, meta)`` from a tar written by :func:`parrotscope.inpaint.run_inpaint`
    (:func:`iter_inpainted_encoded`, decoded)."""
    for key, png, mask, meta in iter_inpainted_encoded(tar_path, include_skipped):
        if png is None:
            yield key, None, None, meta
        else:
            yield key, decode_inpainted(tar_path, key, png, True), decode_inpainted(tar_path, key, mask, False), meta
