"""Stage ``inpaint``: remove spotted text from images, for the paper's RSA/RSC scores.

The paper (Sec. 3-4) scores each image with text against its caption three ways: raw, with all
spotted text removed (All-Emb., RSA = S(raw) - S(all removed)) and with only the words that also
appear in the caption removed (Co-Emb., RSC = S(raw) - S(co removed)). Removal is the fast
marching method of Telea (2004) inside the spotted polygons. Two controls inpaint regions taken
from *another* image's text ("random All-Emb." / "random Co-Emb."), to separate the effect of
losing the words from the effect of inpainting an area of that size at all.

Three parts:

* **Masks** (:func:`plan_masks`, :func:`build_masks`): one uint8 mask per image with text
  (255 = remove), of kind ``all``, ``co``, ``rand_all`` or ``rand_co``. Random kinds take the
  donor's polygons through a seeded derangement of the part's images with text (never an image's
  own text) and scale them from the donor's size to the target's size. Masks are rasterised
  lazily, one image at a time, so a part never holds all its masks in memory.
* **Inpainters** (:class:`Inpainter`, :data:`INPAINTERS`, :func:`make_inpainter`): ``telea``
  (the paper's method, OpenCV), ``lama`` (a local TorchScript big-lama file) and ``sd``
  (a diffusers Stable Diffusion inpainting pipeline from a local directory). Every inpainter
  changes pixels inside the mask only, so an image's score moves only because of what was removed.
* **Part driver** (:func:`run_inpaint`) writing one webdataset tar per part (inpainted image as
  lossless ``KEY.png``, mask as ``KEY.mask.png``, ``KEY.json`` metadata) plus a counts JSON, and
  :mod:`parrotscope.inpainted` to read it back (scoring, the training feed, the figures).

Nothing here downloads anything: model files come from configured local paths.
"""

from __future__ import annotations

import abc
import hashlib
import json
import os
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from .devices import resolve_device, set_torch_threads
from .io import KEY, atomic_path, read_parquet, write_json
from .match import Normalisation, normalise_word
from .inpainted import EMPTY_MASK, INPAINTED, NO_DONOR, SKIP_REASONS, encode_png
from .shards import ShardError, iter_images

MASK_KINDS = ("all", "co", "rand_all", "rand_co")


# ----------------------------------------------------------------------------------------------
# Masks


def word_polygons(spot_row: Mapping[str, Any]) -> list[np.ndarray]:
    """The spotted word polygons of one spot-table row, each a ``(k, 2)`` float array of (x, y).

    The spot table stores one flat ``[x1, y1, ..., xk, yk]`` list per word, aligned with ``words``.
    """
    polygons = spot_row.get("polygons")
    if polygons is None:
        return []
    out = []
    for flat in polygons:
        arr = np.asarray(flat, dtype=np.float64)
        if arr.size < 6 or arr.size % 2:
            raise ValueError(f"key {spot_row.get(KEY)!r}: polygon needs >= 3 (x, y) points, got {arr.tolist()}")
        out.append(arr.reshape(-1, 2))
    return out


def dilation_kernel(dilate_px: int) -> np.ndarray:
    """A disc of radius ``dilate_px``: grows a mask by that many pixels in every direction alike."""
    size = 2 * int(dilate_px) + 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def rasterise(polygons: Sequence[np.ndarray], h: int, w: int, dilate_px: int = 0) -> np.ndarray:
    """Fill ``polygons`` into an ``h x w`` uint8 mask (255 inside), then dilate by ``dilate_px``.

    Dilation covers the anti-aliased fringe of glyphs that tight word boxes leave outside, which
    otherwise stays readable after inpainting. Polygons reaching outside the image are clipped.
    """
    if dilate_px < 0:
        raise ValueError(f"dilate_px must be >= 0, got {dilate_px}")
    mask = np.zeros((int(h), int(w)), dtype=np.uint8)
    if len(polygons):
        pts = [np.round(np.asarray(p, dtype=np.float64)).astype(np.int32).reshape(-1, 1, 2) for p in polygons]
        cv2.fillPoly(mask, pts, 255)
        if dilate_px > 0:
            mask = cv2.dilate(mask, dilation_kernel(dilate_px))
    return mask


def derangement(n: int, seed: int) -> np.ndarray:
    """A uniformly random permutation of ``range(n)`` without fixed points, determined by ``seed``.

    ``result[i]`` is the donor of image ``i``. Rejection sampling keeps the draw uniform over all
    derangements (about e tries on average). ``n == 1`` has no derangement: ValueError.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n == 1:
        raise ValueError("a single image has no other image to take text regions from")
    rng = np.random.default_rng(seed)
    idx = np.arange(n)
    while True:
        perm = rng.permutation(n)
        if not np.any(perm == idx):
            return perm


def co_donors(has_regions: Sequence[bool], seed: int) -> np.ndarray:
    """Donor index of every image for the random Co-Emb. control, drawn uniformly (seeded) among
    the *other* images that have co-embedded regions; -1 where there is none to take."""
    pool = np.flatnonzero(np.asarray(has_regions, dtype=bool))
    rng = np.random.default_rng(seed)
    donors = np.full(len(has_regions), -1, dtype=np.int64)
    for i in range(len(has_regions)):
        others = len(pool) - (1 if has_regions[i] else 0)
        if others <= 0:
            continue
        pick = int(rng.integers(others))
        if has_regions[i] and pick >= int(np.searchsorted(pool, i)):
            pick += 1  # skip the image itself
        donors[i] = pool[pick]
    return donors


def scale_polygons(polys: Sequence[np.ndarray], from_hw: tuple[int, int],
                   to_hw: tuple[int, int]) -> list[np.ndarray]:
    """Rescale polygons from an image of size ``from_hw`` (h, w) to one of size ``to_hw``.

    Each axis is scaled separately, so a donor region keeps its relative position and extent.
    """
    (fh, fw), (th, tw) = from_hw, to_hw
    if min(fh, fw, th, tw) <= 0:
        raise ValueError(f"image sizes must be positive, got {from_hw} -> {to_hw}")
    factor = np.array([tw / fw, th / fh])
    return [np.asarray(p, dtype=np.float64) * factor for p in polys]


@dataclass(frozen=True)
class MaskPlan:
    """What to remove from one image with text, before rasterising.

    ``polygons`` are in this image's pixel coordinates (already scaled for random controls);
    ``words`` are the spotted words they came from (the donor's, for random controls);
    ``donor`` is the key the regions were taken from (random kinds only); ``status`` is
    :data:`INPAINTED` when there is something to remove, otherwise a reason from SKIP_REASONS.
    """

    key: str
    height: int
    width: int
    kind: str
    polygons: tuple[np.ndarray, ...] = ()
    words: tuple[str, ...] = ()
    donor: str | None = None
    status: str = INPAINTED

    def mask(self, dilate_px: int) -> np.ndarray:
        return rasterise(self.polygons, self.height, self.width, dilate_px)


def _as_normalisation(norm: Normalisation | Mapping[str, Any]) -> Normalisation:
    return norm if isinstance(norm, Normalisation) else Normalisation.from_config(dict(norm))


def _own_regions(spot_row: Mapping[str, Any], co_words: Iterable[str], co_only: bool,
                 norm: Normalisation) -> tuple[list[np.ndarray], list[str]]:
    """An image's own word polygons: all of them, or those whose normalised word is co-embedded."""
    words = [str(w) for w in spot_row["words"]]
    polys = word_polygons(spot_row)
    if len(words) != len(polys):
        raise ValueError(f"key {spot_row[KEY]!r}: {len(words)} words but {len(polys)} polygons in the spot table")
    if not co_only:
        return polys, words
    co = set(co_words)
    keep = [i for i, w in enumerate(words) if normalise_word(w, norm) in co]
    return [polys[i] for i in keep], [words[i] for i in keep]


def text_rows(spot: pd.DataFrame, match: pd.DataFrame) -> pd.DataFrame:
    """The part's images with text (match ``has_text`` and both stages ``ok``), sorted by key.

    Sorting by key makes the random pairing independent of shard or table order.
    """
    m = match[[KEY, "status", "has_text", "co_words"]].rename(columns={"status": "match_status"})
    joined = spot.merge(m, on=KEY, how="inner", validate="one_to_one")
    ok = (joined["status"] == "ok") & (joined["match_status"] == "ok") & joined["has_text"].eq(True)
    return joined[ok].sort_values(KEY, kind="stable").reset_index(drop=True)


def plan_masks(spot: pd.DataFrame, match: pd.DataFrame, kind: str, seed: int,
               norm: Normalisation | Mapping[str, Any]) -> dict[str, MaskPlan]:
    """One :class:`MaskPlan` per image with text in the part, keyed and ordered by key.

    ``all``: every spotted word. ``co``: the spotted words whose normalised form is among the
    match table's exact ``co_words`` (none: status ``empty_mask``). ``rand_all`` / ``rand_co``:
    the same selection from a donor image, scaled to this image's size. ``rand_all``'s donor is
    given by ``derangement(n, seed)`` over the sorted keys. ``rand_co``'s donor is drawn only
    among the images that have co-embedded regions (:func:`co_donors`), because the paper's control
    samples "other image's text areas": a donor without co-embedded words would give an empty mask
    and drop the image from Table 2's random Co-Emb. row. Without any possible donor the status is
    ``no_donor``.
    """
    if kind not in MASK_KINDS:
        raise ValueError(f"mask kind must be one of {MASK_KINDS}, got {kind!r}")
    norm = _as_normalisation(norm)
    rows = text_rows(spot, match).to_dict("records")
    co_only = kind in ("co", "rand_co")
    regions = [_own_regions(r, r["co_words"] if r["co_words"] is not None else (), co_only, norm) for r in rows]
    plans: dict[str, MaskPlan] = {}
    if kind == "rand_all":
        donors = derangement(len(rows), seed) if len(rows) > 1 else np.array([-1] * len(rows))
    elif kind == "rand_co":
        donors = co_donors([bool(polys) for polys, _ in regions], seed)
    else:
        donors = np.arange(len(rows))
    for i, r in enumerate(rows):
        d = int(donors[i])
        hw = (int(r["height"]), int(r["width"]))
        if d < 0:
            plans[r[KEY]] = MaskPlan(r[KEY], hw[0], hw[1], kind, status=NO_DONOR)
            continue
        polys, words = regions[d]
        donor = None
        if d != i:
            donor = rows[d][KEY]
            polys = scale_polygons(polys, (int(rows[d]["height"]), int(rows[d]["width"])), hw)
        status = INPAINTED if polys else EMPTY_MASK
        plans[r[KEY]] = MaskPlan(r[KEY], hw[0], hw[1], kind, tuple(polys), tuple(words), donor, status)
    return plans


def build_masks(spot: pd.DataFrame, match: pd.DataFrame, kind: str, seed: int, dilate_px: int,
                norm: Normalisation | Mapping[str, Any]) -> Iterator[tuple[str, np.ndarray, MaskPlan]]:
    """Yield ``(key, mask, plan)`` for every image with text, in key order, rasterising lazily.

    A skipped image (``plan.status != "inpainted"``) yields an all-zero mask.
    """
    for key, plan in plan_masks(spot, match, kind, seed, norm).items():
        yield key, plan.mask(dilate_px), plan


# ----------------------------------------------------------------------------------------------
# Inpainters


class Inpainter(abc.ABC):
    """Fills the masked pixels of RGB uint8 images; pixels outside the mask are returned unchanged."""

    name: str = ""

    @abc.abstractmethod
    def inpaint_batch(self, images: list[np.ndarray], masks: list[np.ndarray],
                      keys: list[str]) -> list[np.ndarray]:
        """Inpaint ``images[i]`` (HxWx3 uint8 RGB) inside ``masks[i]`` (HxW uint8, >0 = fill).

        ``keys`` identify the samples, for inpainters whose randomness is seeded per sample.
        """


def check_batch(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], keys: Sequence[str]) -> None:
    if not (len(images) == len(masks) == len(keys)):
        raise ValueError(f"batch lengths differ: {len(images)} images, {len(masks)} masks, {len(keys)} keys")
    for img, mask, key in zip(images, masks, keys):
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"key {key}: image must be HxWx3 uint8 RGB, got {img.dtype} {img.shape}")
        if mask.shape != img.shape[:2]:
            raise ValueError(f"key {key}: mask {mask.shape} does not match image {img.shape[:2]}")


def paste_inside(original: np.ndarray, filled: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``filled`` inside the mask, ``original`` (bit-exact) everywhere else."""
    out = original.copy()
    inside = mask > 0
    out[inside] = filled[inside]
    return out


def torch_placement(options: dict) -> str:
    """Take the torch backends' shared options out of ``options``: apply ``threads`` (torch CPU
    threads; 0 = torch's default) and return the resolved ``device`` (auto = CUDA when present)."""
    device = resolve_device(options.pop("device", "auto"))
    set_torch_threads(options.pop("threads", 0))
    return device


def refuse_unknown(options: dict, method: str) -> None:
    """Options left after a backend took its own are typos: say which, naming the config section."""
    if options:
        raise ValueError(f"inpaint.{method}: unknown options {sorted(options)}")


class TeleaInpainter(Inpainter):
    """OpenCV's fast marching method (Telea 2004): the paper's text removal.

    Options: ``radius`` (pixels around each filled point that contribute to it; default 3).
    """

    name = "telea"

    def __init__(self, options: Mapping[str, Any] | None = None):
        options = dict(options or {})
        self.radius = float(options.pop("radius", 3))
        refuse_unknown(options, "telea")
        if self.radius <= 0:
            raise ValueError(f"inpaint.telea.radius must be > 0, got {self.radius}")

    def inpaint_one(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if not mask.any():
            return image.copy()
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        filled = cv2.inpaint(bgr, (mask > 0).astype(np.uint8) * 255, self.radius, cv2.INPAINT_TELEA)
        return cv2.cvtColor(filled, cv2.COLOR_BGR2RGB)

    def inpaint_batch(self, images, masks, keys):
        check_batch(images, masks, keys)
        return [self.inpaint_one(img, mask) for img, mask in zip(images, masks)]


def pad_to_multiple(x, multiple: int):
    """Pad a NCHW tensor on the bottom/right to sides divisible by ``multiple``.

    Reflection continues the image's texture into the border (what LaMa was trained to see);
    a side too short to reflect that far is padded by replicating its edge instead.
    """
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


class LamaInpainter(Inpainter):
    """LaMa (big-lama) as the TorchScript file from a configured local path.

    Options: ``checkpoint`` (path to ``big-lama.pt``, required), ``device`` (``auto``: CUDA when
    available), ``threads`` (torch CPU threads; 0 = torch's default). The model is called as
    ``model(image, mask)``: image float [0, 1] Nx3xHxW, mask float binary Nx1xHxW, sides padded to
    multiples of 8; images of equal size in a batch run together.
    """

    name = "lama"
    multiple = 8

    def __init__(self, options: Mapping[str, Any] | None = None):
        import torch

        options = dict(options or {})
        checkpoint = options.pop("checkpoint", None)
        self.device = torch_placement(options)
        refuse_unknown(options, "lama")
        if not checkpoint:
            raise ValueError("inpaint.lama.checkpoint is not set: give the path to a TorchScript "
                             "big-lama.pt file (this workflow never downloads models)")
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"inpaint.lama.checkpoint: no file at {checkpoint!r}; point it at a "
                                    f"local TorchScript big-lama.pt (this workflow never downloads models)")
        with warnings.catch_warnings():
            # TorchScript is the only published form of big-lama; its deprecation notice is noise here.
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.* is deprecated", category=FutureWarning)
            try:
                self.model = torch.jit.load(str(checkpoint), map_location=self.device)
            except RuntimeError as exc:  # a pickle or another zip is refused, never unpickled
                raise ValueError(f"inpaint.lama.checkpoint: {checkpoint} is not a TorchScript archive "
                                 f"({str(exc).splitlines()[0]}); give big-lama.pt in TorchScript form") from exc
        self.model.eval()

    def _run_same_size(self, images: list[np.ndarray], masks: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        h, w = images[0].shape[:2]
        img = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255)
        msk = torch.from_numpy((np.stack(masks) > 0).astype(np.float32))[:, None]
        img = pad_to_multiple(img, self.multiple).to(self.device)
        msk = pad_to_multiple(msk, self.multiple).to(self.device)
        with torch.inference_mode():
            out = self.model(img, msk)
        out = out[:, :, :h, :w].clamp(0, 1).mul(255).round().byte()
        return list(out.permute(0, 2, 3, 1).cpu().numpy())

    def inpaint_batch(self, images, masks, keys):
        check_batch(images, masks, keys)
        results: list[np.ndarray | None] = [None] * len(images)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(images):
            by_size.setdefault(img.shape[:2], []).append(i)
        for idx in by_size.values():
            filled = self._run_same_size([images[i] for i in idx], [masks[i] for i in idx])
            for i, f in zip(idx, filled):
                results[i] = paste_inside(images[i], f, masks[i])
        return results


def key_seed(seed: int, key: str) -> int:
    """A per-sample seed from the configured seed and the key, so results ignore batch order."""
    digest = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little")
    return (int(seed) + digest) % (2**63)


class StableDiffusionInpainter(Inpainter):
    """A diffusers ``StableDiffusionInpaintPipeline`` loaded from a local directory (or a cached id).

    Options (defaults): ``model`` (required), ``prompt`` (""), ``negative_prompt`` (""),
    ``steps`` (25), ``guidance`` (7.5), ``resolution`` (512: images are resized to a square of this
    side, a multiple of 8, and back), ``seed`` (0; each image's generator is seeded from it and the
    key), ``device`` (auto), ``dtype`` (auto: float16 on CUDA, float32 on CPU), ``threads`` (torch
    CPU threads; 0 = torch's default).
    """

    name = "sd"

    def __init__(self, options: Mapping[str, Any] | None = None):
        import torch

        options = dict(options or {})
        model = options.pop("model", None)
        self.prompt = str(options.pop("prompt", ""))
        self.negative_prompt = str(options.pop("negative_prompt", ""))
        self.steps = int(options.pop("steps", 25))
        self.guidance = float(options.pop("guidance", 7.5))
        self.resolution = int(options.pop("resolution", 512))
        self.seed = int(options.pop("seed", 0))
        dtype = options.pop("dtype", "auto")
        self.device = torch_placement(options)
        refuse_unknown(options, "sd")
        if not model:
            raise ValueError("inpaint.sd.model is not set: give a local directory holding a "
                             "StableDiffusionInpaintPipeline (save_pretrained layout)")
        if self.resolution <= 0 or self.resolution % 8:
            raise ValueError(f"inpaint.sd.resolution must be a positive multiple of 8, got {self.resolution}")
        if dtype in (None, "auto"):
            dtype = "float16" if self.device.startswith("cuda") else "float32"
        self.dtype = getattr(torch, str(dtype))
        self.pipe = self._load(str(model))

    def _load(self, model: str):
        from diffusers import StableDiffusionInpaintPipeline

        local = os.path.isdir(model)
        try:
            pipe = StableDiffusionInpaintPipeline.from_pretrained(
                model, safety_checker=None, requires_safety_checker=False, dtype=self.dtype)
        except Exception as exc:
            if local:
                raise RuntimeError(f"inpaint.sd.model: cannot load a StableDiffusionInpaintPipeline "
                                   f"from directory {model!r}: {exc}") from exc
            raise RuntimeError(f"inpaint.sd.model {model!r} is not a local directory and could not be "
                               f"loaded ({type(exc).__name__}: {exc}). This machine has no model hub: "
                               f"point inpaint.sd.model at a local directory holding the pipeline "
                               f"(save_pretrained layout).") from exc
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(self.device)

    def inpaint_batch(self, images, masks, keys):
        import torch
        from PIL import Image

        check_batch(images, masks, keys)
        if not images:
            return []
        side = self.resolution
        work_images = [Image.fromarray(img).resize((side, side), Image.Resampling.BICUBIC) for img in images]
        # Nearest keeps the working mask binary; every pixel to be filled stays covered.
        work_masks = [Image.fromarray((m > 0).astype(np.uint8) * 255).resize((side, side), Image.Resampling.NEAREST)
                      for m in masks]
        # CPU generators give the same noise on any device, so results do not depend on hardware.
        generators = [torch.Generator("cpu").manual_seed(key_seed(self.seed, k)) for k in keys]
        with torch.inference_mode():
            result = self.pipe(
                prompt=[self.prompt] * len(images), negative_prompt=[self.negative_prompt] * len(images),
                image=work_images, mask_image=work_masks, height=side, width=side,
                num_inference_steps=self.steps, guidance_scale=self.guidance, generator=generators,
                output_type="np")
        out = []
        for img, mask, filled in zip(images, masks, result.images):
            filled = np.clip(np.asarray(filled, dtype=np.float32) * 255, 0, 255).round().astype(np.uint8)
            h, w = img.shape[:2]
            interp = cv2.INTER_AREA if (h < side or w < side) else cv2.INTER_CUBIC
            back = cv2.resize(filled, (w, h), interpolation=interp)
            out.append(paste_inside(img, back, mask))
        return out


INPAINTERS: dict[str, type[Inpainter]] = {
    "telea": TeleaInpainter,
    "lama": LamaInpainter,
    "sd": StableDiffusionInpainter,
}


def make_inpainter(method: str, options: Mapping[str, Any] | None) -> Inpainter:
    """The inpainter registered as ``method``, built from its ``inpaint.<method>`` options."""
    if method not in INPAINTERS:
        raise ValueError(f"inpaint.method must be one of {sorted(INPAINTERS)}, got {method!r}")
    return INPAINTERS[method](options or {})


# ----------------------------------------------------------------------------------------------
# Part driver


def sample_meta(plan: MaskPlan, method: str, dilate_px: int, n_mask_px: int) -> dict[str, Any]:
    return {
        "mask_kind": plan.kind,
        "method": method,
        "status": plan.status,
        "donor": plan.donor,
        "n_mask_px": int(n_mask_px),
        "mask_fraction": n_mask_px / float(plan.height * plan.width),
        "mask_words": list(plan.words),
        "dilate_px": int(dilate_px),
        "width": plan.width,
        "height": plan.height,
    }


@dataclass
class _Batch:
    keys: list[str] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)


def _flush(batch: _Batch, inpainter: Inpainter, plans: dict[str, MaskPlan], writer, method: str,
           dilate_px: int) -> int:
    """Inpaint and write one batch; returns how many samples were written."""
    outputs = inpainter.inpaint_batch(batch.images, batch.masks, batch.keys)
    if len(outputs) != len(batch):
        raise RuntimeError(f"inpainter {method} returned {len(outputs)} images for {len(batch)} inputs")
    for key, image, mask, out in zip(batch.keys, batch.images, batch.masks, outputs):
        if out.shape != image.shape or out.dtype != np.uint8:
            raise RuntimeError(f"inpainter {method}, key {key}: output {out.dtype} {out.shape} "
                               f"differs from input {image.shape}")
        meta = sample_meta(plans[key], method, dilate_px, int(np.count_nonzero(mask)))
        writer.write({KEY: key, "png": encode_png(out, rgb=True), "mask.png": encode_png(mask, rgb=False),
                      "json": json.dumps(meta).encode("utf-8")})
    n = len(batch)
    batch.keys.clear()
    batch.images.clear()
    batch.masks.clear()
    return n


def run_inpaint(spot_path: str, match_path: str, shards: Sequence[str], out_tar: str, out_counts: str,
                method: str, options: Mapping[str, Any] | None, mask_kind: str, seed: int, dilate_px: int,
                normalisation: Normalisation | Mapping[str, Any], max_pixels: int,
                batch_size: int) -> dict[str, Any]:
    """Inpaint one part's images with text; write the tar and the counts JSON; return the counts.

    The tar holds, per image with text that has something to remove, ``KEY.png`` (inpainted, RGB,
    lossless), ``KEY.mask.png`` (the mask used, 255 = filled) and ``KEY.json``
    (:func:`sample_meta`), in shard order; then, per skipped image, ``KEY.json`` alone with its
    skip status. Images without text are not written. Both outputs are written atomically.
    """
    import webdataset as wds

    if batch_size < 1:
        raise ValueError(f"inpaint batch_size must be >= 1, got {batch_size}")
    spot = read_parquet(spot_path)
    match = read_parquet(match_path)
    plans = plan_masks(spot, match, mask_kind, seed, normalisation)
    todo = {k for k, p in plans.items() if p.status == INPAINTED}
    skipped = [p for p in plans.values() if p.status != INPAINTED]
    # Built even when nothing needs inpainting, so a configuration error shows on every part.
    inpainter = make_inpainter(method, options)

    n_done = 0
    with atomic_path(out_tar, suffix=".tar") as tmp:
        with open(tmp, "wb") as fh:
            # mtime 0 makes the tar's bytes depend on its content only.
            writer = wds.TarWriter(fh, mtime=0.0)
            try:
                batch = _Batch()
                with tqdm(total=len(todo), desc=f"inpaint {method}/{mask_kind}", file=sys.stderr,
                          mininterval=10) as progress:
                    for key, image in iter_images(list(shards), todo, max_pixels):
                        plan = plans[key]
                        if image.shape[:2] != (plan.height, plan.width):
                            raise ShardError(f"key {key}: image is {image.shape[1]}x{image.shape[0]} but "
                                             f"the spot table says {plan.width}x{plan.height}")
                        batch.keys.append(key)
                        batch.images.append(image)
                        batch.masks.append(plan.mask(dilate_px))
                        if len(batch) >= batch_size:
                            n = _flush(batch, inpainter, plans, writer, method, dilate_px)
                            n_done += n
                            progress.update(n)
                    if len(batch):
                        n = _flush(batch, inpainter, plans, writer, method, dilate_px)
                        n_done += n
                        progress.update(n)
                if n_done != len(todo):
                    raise ShardError(f"{len(todo) - n_done} images with text were not found in the part's "
                                     f"shards {list(shards)}; the spot table and the shards disagree")
                for plan in skipped:
                    meta = sample_meta(plan, method, dilate_px, 0)
                    writer.write({KEY: plan.key, "json": json.dumps(meta).encode("utf-8")})
            finally:
                writer.close()
    counts = inpaint_counts(len(match), plans, n_done, method, mask_kind)
    write_json(counts, out_counts)
    return counts


def inpaint_counts(n_samples: int, plans: Mapping[str, MaskPlan], n_inpainted: int, method: str,
                   mask_kind: str) -> dict[str, Any]:
    """The part's accounting: every image with text is either inpainted or skipped for a reason."""
    reasons = Counter(p.status for p in plans.values() if p.status != INPAINTED)
    counts = {
        "method": method,
        "mask_kind": mask_kind,
        "n_samples": int(n_samples),
        "n_with_text": len(plans),
        "n_inpainted": int(n_inpainted),
        "n_skipped": int(sum(reasons.values())),
        "skipped": {r: int(reasons.get(r, 0)) for r in SKIP_REASONS},
    }
    assert counts["n_with_text"] == counts["n_inpainted"] + counts["n_skipped"], counts
    return counts
