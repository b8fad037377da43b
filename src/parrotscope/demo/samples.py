"""One demo sample (image, caption, ground truth) and how samples are written into a tar."""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
from typing import Iterator

import numpy as np
from PIL import Image

from parrotscope.io import atomic_path

from .backgrounds import make_background
from .captions import RETRIEVAL_TEMPLATE, generic_caption, text_caption, visual_description
from .concepts import Concept, draw_concept, sample_concept
from .text import TextBlock, render_text

TAR_MTIME = 946684800  # 2000-01-01: a fixed member time keeps tars byte-identical across reruns
# Sample i of rng stream k is drawn from default_rng([seed, k, i]). Training shard s is stream s;
# held-out images (eval sets, STR word crops) take streams from here on, beyond any shard index.
EVAL_SEED_OFFSET = 1_000_000


def encode_jpeg(img: Image.Image, quality: int) -> bytes:
    """The image as JPEG bytes."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def make_sample(
    rng: np.random.Generator,
    cfg: dict,
    key: str,
    url: str,
    *,
    with_text: bool,
    label: int | None = None,
    retrieval_caption: bool = False,
) -> dict:
    """One sample, ``{"jpg": bytes, "txt": str, "json": dict}``; ground truth in json["truth"]."""
    size = int(cfg["image_size"])
    background, bg_phrase = make_background(rng, cfg)
    img = Image.fromarray(background.astype(np.uint8), "RGB")
    concept = sample_concept(rng, cfg, label)
    draw_concept(img, rng, concept)
    block = render_text(img, rng, cfg, concept) if with_text else None
    caption, kind, parrot = _caption(rng, cfg, concept, bg_phrase, block, retrieval_caption)
    truth = {
        "concept": concept.name,
        "label": cfg["shapes"].index(concept.shape) * len(cfg["colors"])
        + cfg["colors"].index(concept.color),
        "shape": concept.shape,
        "color": concept.color,
        "shape_box": [round(v, 2) for v in concept.box()],
        "background": bg_phrase,
        "has_text": block is not None,
        "words": block.words if block else [],
        "word_polygons": block.polygons if block else [],
        "caption_kind": kind,
        "parrot_words": parrot,
        "font": block.font if block else None,
        "font_px": block.font_px if block else None,
    }
    meta = {
        "key": key,
        "url": url,
        "caption": caption,
        "status": "success",
        "error_message": None,
        "width": size,
        "height": size,
        "original_width": size,
        "original_height": size,
        "truth": truth,
    }
    return {"jpg": encode_jpeg(img, cfg["jpeg_quality"]), "txt": caption, "json": meta}


def _caption(
    rng: np.random.Generator,
    cfg: dict,
    concept: Concept,
    bg_phrase: str,
    block: TextBlock | None,
    retrieval_caption: bool,
) -> tuple[str, str, list[str]]:
    """(caption, caption_kind, parrot_words): a text image's caption may parrot its words; a
    text-free one is a visual description (the retrieval set's detailed one) or a generic one."""
    if block is not None:
        return text_caption(rng, cfg, concept, bg_phrase, block.words)
    if retrieval_caption:
        return visual_description(rng, concept, bg_phrase, cfg, RETRIEVAL_TEMPLATE), "visual", []
    if rng.random() < cfg["textfree_generic_prob"]:
        return generic_caption(rng), "generic", []
    return visual_description(rng, concept, bg_phrase, cfg), "visual", []


@contextlib.contextmanager
def sample_tar(path) -> Iterator[tarfile.TarFile]:
    """A tar to write samples into (:func:`write_sample`), renamed to ``path`` once complete."""
    with atomic_path(path, suffix=".tar") as tmp:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            yield tar


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """One tar member, with a fixed time, mode and owner: a tar's bytes depend on its data alone."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = TAR_MTIME
    info.mode = 0o444
    info.uname = info.gname = "demo"
    tar.addfile(info, io.BytesIO(data))


def write_sample(tar: tarfile.TarFile, key: str, sample: dict) -> None:
    """A sample's members ``KEY.ext``: text as UTF-8, json as sorted-key JSON, bytes as given."""
    # Extensions in sorted order, as webdataset's TarWriter (and so img2dataset) writes them.
    for ext in sorted(sample):
        value = sample[ext]
        if ext == "json":
            data = json.dumps(value, ensure_ascii=False, sort_keys=True).encode("utf-8")
        elif isinstance(value, str):
            data = value.encode("utf-8")
        else:
            data = value
        _add_member(tar, f"{key}.{ext}", data)
