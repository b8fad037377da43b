"""Feeding image-caption pairs to a CLIP as a trainer is fed: read, decode, preprocess and tokenise
in ``torch.utils.data.DataLoader`` worker processes, in batches whose makeup does not depend on the
worker count.

A *pair source* is a picklable object that iterates ``(key, payload, caption)`` in a fixed order
and turns a payload into RGB pixels (a uint8 array or an RGB PIL image) with ``decode(key, payload)``: :class:`ArrayPairs` (pixels
in memory), :class:`ShardPairs` (encoded images of a part's shards), :class:`InpaintedPairs` (the
PNGs of an inpainted tar), :class:`PngImages` (a tar's PNGs without captions). Reading is cheap next to decoding and preprocessing, so every worker
reads the whole stream and decodes only its own batches: batch ``b`` (items ``b * batch_size`` to
``(b + 1) * batch_size - 1`` of the stream) belongs to worker ``b % workers``, and the DataLoader,
which takes one batch from each worker in turn, hands them over in stream order. So the batches
are the same with 0, 1 or 8 workers, and so are the scores, to the bit, on CPU. The repeated
reads of a part's tars are served by the OS page cache; the bytes are read from disk once.

A worker that fails (a key not found, an image that no longer decodes) raises in the main process
with its message, as the single-process loop would.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class ArrayPairs:
    """``(key, RGB array, caption)`` items already in memory (greyscale H x W arrays accepted)."""

    items: tuple

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, str]]:
        return iter(self.items)

    def decode(self, key: str, payload: np.ndarray) -> np.ndarray:
        return payload

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class ShardPairs:
    """The images of ``captions``' keys in a part's shards (first occurrence, shard order), each with
    its caption; ``transform(key, pixels)`` (picklable) makes the image to score from the decoded one."""

    shards: tuple[str, ...]
    captions: dict = field(hash=False)
    max_pixels: int
    transform: Callable[[str, np.ndarray], np.ndarray] | None = None

    def __iter__(self) -> Iterator[tuple[str, tuple[str, bytes], str]]:
        from .shards import iter_encoded

        for key, shard, data in iter_encoded(self.shards, set(self.captions)):
            yield key, (shard, data), self.captions[key]

    def decode(self, key: str, payload: tuple[str, bytes]) -> np.ndarray | Image.Image:
        from .shards import decode_image, decode_rgb_image

        if self.transform is None:  # the eval transform takes PIL: no round trip through an array
            return decode_rgb_image(key, payload[0], payload[1], self.max_pixels)
        return self.transform(key, decode_image(key, payload[0], payload[1], self.max_pixels))

    def __len__(self) -> int:
        return len(self.captions)


@dataclass(frozen=True)
class InpaintedPairs:
    """The inpainted images of a tar written by the inpaint stage, each with its caption."""

    tar: str
    captions: dict = field(hash=False)

    def __iter__(self) -> Iterator[tuple[str, bytes, str]]:
        from .inpainted import iter_inpainted_encoded
        from .shards import ShardError

        for key, png, _, _ in iter_inpainted_encoded(self.tar):
            if key not in self.captions:
                raise ShardError(f"{self.tar}: key {key} is not among the part's usable samples")
            yield key, png, self.captions[key]

    def decode(self, key: str, payload: bytes) -> np.ndarray:
        from .inpainted import decode_inpainted

        return decode_inpainted(self.tar, key, payload, rgb=True)


def to_pil(image: np.ndarray | Image.Image) -> Image.Image:
    """RGB PIL image of an RGB(A) or greyscale uint8 array (an RGB PIL image as it is)."""
    if isinstance(image, Image.Image):
        return image
    if image.ndim == 2:
        return Image.fromarray(image).convert("RGB")
    return Image.fromarray(image[..., :3])


@dataclass(frozen=True)
class PngImages:
    """The PNG members of a tar, keyed by member name without extension, in file order, with no
    caption (the synthetic benchmark's images: its texts are embedded once, apart)."""

    tar: str

    def __iter__(self) -> Iterator[tuple[str, bytes, str]]:
        from .shards import FAIL, ShardError, iter_shard

        for sample in iter_shard(self.tar, on_bad_shard=FAIL):
            if "png" not in sample.files:
                raise ShardError(f"{self.tar}: key {sample.key} has no png member")
            yield sample.key, sample.files["png"], ""

    def decode(self, key: str, payload: bytes) -> np.ndarray:
        from .inpainted import decode_inpainted

        return decode_inpainted(self.tar, key, payload, rgb=True)


class PairBatches(IterableDataset):
    """``(keys, pixels, tokens)`` batches of a pair source: this worker's share (see the module
    docstring), preprocessed by the CLIP's eval transform and tokenised by its tokenizer (None:
    images only, tokens None)."""

    def __init__(self, source, preprocess: Callable, tokenizer: Callable | None, batch_size: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.source, self.preprocess, self.tokenizer, self.batch_size = source, preprocess, tokenizer, batch_size

    def __iter__(self) -> Iterator[tuple[list[str], torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        n_workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        keys: list[str] = []
        pixels: list[torch.Tensor] = []
        captions: list[str] = []
        current = -1
        for i, (key, payload, caption) in enumerate(self.source):
            batch = i // self.batch_size
            if batch % n_workers != worker:
                continue
            if keys and batch != current:
                yield self._collate(keys, pixels, captions)
                keys, pixels, captions = [], [], []
            current = batch
            keys.append(key)
            pixels.append(self.preprocess(to_pil(self.source.decode(key, payload))))
            captions.append(caption)
        if keys:
            yield self._collate(keys, pixels, captions)

    def _collate(self, keys: list[str], pixels: list[torch.Tensor], captions: list[str]):
        return keys, torch.stack(pixels), self.tokenizer(captions) if self.tokenizer is not None else None


def _one_thread(_worker_id: int) -> None:
    # A worker preprocesses one image at a time: torch's intra-op threads would only compete with
    # the other workers and the forward for the job's cores.
    torch.set_num_threads(1)


def resolve_workers(workers: int | None, threads: int | None) -> int:
    """DataLoader workers: as configured, or (None) one per job thread beyond the first, which the
    main process keeps for the forward and for handing batches over."""
    if workers is not None:
        if workers < 0:
            raise ValueError(f"score.workers must be 0 or more, got {workers}")
        return int(workers)
    return max(int(threads or 1) - 1, 0)


def pair_loader(source, preprocess: Callable, tokenizer: Callable | None, batch_size: int, workers: int = 0,
                device: str = "cpu") -> DataLoader:
    """A DataLoader of :class:`PairBatches`: ``workers`` processes (0: in this process), pinned
    memory on CUDA so that copies to the GPU can be non-blocking."""
    return DataLoader(PairBatches(source, preprocess, tokenizer, batch_size), batch_size=None,
                      num_workers=workers, pin_memory=str(device).startswith("cuda"),
                      worker_init_fn=_one_thread if workers else None,
                      prefetch_factor=2 if workers else None, persistent_workers=False)


def resolve_precision(precision: str | None, device: str) -> str:
    """``auto`` (or None): bf16 on CUDA, fp32 elsewhere; otherwise as given."""
    if precision in (None, "auto"):
        return "bf16" if str(device).startswith("cuda") else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: one of {PRECISIONS}")
    return precision


def autocast(device: str, precision: str):
    """The forward's autocast context: none for fp32, torch.autocast in bf16 or fp16 otherwise."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
