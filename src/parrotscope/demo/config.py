"""The demo generator's settings: defaults, validation, and the words captions may use.

Configuration keys (the ``demo`` section; defaults in :data:`DEFAULTS`):

    seed                     base seed of every random draw
    n_shards                 training-pool shards to write
    samples_per_shard        samples per training shard (at most 10,000: keys are 5+4 digits)
    image_size               side of the square images, pixels
    jpeg_quality             JPEG quality of saved images
    shapes                   shape names of the visual concepts (subset of SHAPE_NAMES)
    colors                   colour names of the visual concepts (subset of COLOR_RGB)
    shape_size               [min, max] diameter of the shape, as a fraction of the image side
    photo_background_prob    probability that the background is a photo crop (else a gradient)
    photos                   scikit-image photos used as backgrounds (names in PHOTO_CONTENT)
    photo_saturation         [min, max] saturation kept in photos (so shape colour stays clear)
    photo_contrast           [min, max] contrast kept in photo backgrounds
    noise_std                maximum std of the Gaussian noise added to backgrounds (0-255 units)
    text_fraction            probability that an image carries rendered text
    vocabulary               poster words that may be rendered (must not occur in caption templates)
    words_per_image_probs    probabilities of rendering 1, 2, 3, ... words
    two_line_prob            probability of breaking 2+ words over two lines
    fonts                    TrueType files (Debian fonts-liberation, fonts-dejavu-core)
    font_size                [min, max] font size, as a fraction of the image side
    rotation_deg             maximum absolute rotation of the text block, degrees
    uppercase_prob           probability that the words are rendered in upper case
    titlecase_prob           probability that the words are rendered in title case (else lower case)
    banner_prob              probability of a (possibly semi-transparent) banner behind the text
    outline_prob             probability of a thin contrasting outline around bannerless text
    max_shape_occlusion      largest share of the shape's box the text may cover (best effort)
    caption_exact_prob       text images: caption is exactly the rendered words
    caption_mixed_prob       text images: visual description plus some rendered words
    caption_none_prob        text images: visual description only
    caption_partial_prob     text images: the rendered words plus a few visual words, so CoTR
                             takes values in (0, 1) (the four caption probabilities sum to 1)
    partial_visual_words_probs  partial captions: one row per number of rendered words (1, 2, ...;
                             the last row for more), the probabilities of adding 1, 2, ... visual words
    mixed_all_words_prob     mixed captions: probability of quoting all rendered words (else some)
    textfree_generic_prob    text-free images: probability of a generic, uninformative caption
    eval_concepts_per_class  held-out concept classification images per class
    documents_per_shard      MMC4-like datasets (`format: mmc4`): documents per document file
    images_per_document      [min, max] images of a document
    filler_sentences         [min, max] sentences of a document besides its images' captions
    own_sentence_prob        probability that an image is assigned its own caption (else another
                             sentence of its document, as MMC4's similarity matching does)
"""

from __future__ import annotations

import copy

import numpy as np

from .backgrounds import BACKGROUND_GRADIENT_PHRASES, PHOTO_CONTENT
from .captions import (CAPTION_KINDS, FILLER_SENTENCES, GENERIC_TEMPLATES, MIXED_TEMPLATES, RETRIEVAL_TEMPLATE,
                       VISUAL_TEMPLATES)
from .concepts import COLOR_RGB, POSITION_WORDS, SHAPE_NAMES, SIZE_WORDS
from .fonts import FONT_DIR

DEFAULTS: dict = {
    "seed": 0,
    "n_shards": 8,
    "samples_per_shard": 500,
    "image_size": 128,
    "jpeg_quality": 90,
    "shapes": ["circle", "square", "triangle", "star"],
    "colors": ["red", "green", "blue", "yellow"],
    "shape_size": [0.35, 0.6],
    "photo_background_prob": 0.5,
    "photos": list(PHOTO_CONTENT),
    "photo_saturation": [0.15, 0.5],
    "photo_contrast": [0.45, 0.75],
    "noise_std": 8.0,
    "text_fraction": 0.5,
    # 24 short poster words; none is a caption-template word, so a caption word equal to a
    # rendered word is always a parroted one.
    "vocabulary": [
        "sale",
        "open",
        "free",
        "new",
        "hot",
        "best",
        "love",
        "cafe",
        "menu",
        "shop",
        "deal",
        "news",
        "food",
        "park",
        "exit",
        "stop",
        "cool",
        "happy",
        "music",
        "party",
        "hello",
        "world",
        "super",
        "city",
    ],
    "words_per_image_probs": [0.5, 0.3, 0.2],
    "two_line_prob": 0.3,
    "fonts": [
        f"{FONT_DIR}/liberation/LiberationSans-Bold.ttf",
        f"{FONT_DIR}/liberation/LiberationSans-Regular.ttf",
        f"{FONT_DIR}/liberation/LiberationSerif-Bold.ttf",
        f"{FONT_DIR}/liberation/LiberationSerif-Regular.ttf",
        f"{FONT_DIR}/liberation/LiberationMono-Bold.ttf",
        f"{FONT_DIR}/dejavu/DejaVuSans-Bold.ttf",
        f"{FONT_DIR}/dejavu/DejaVuSans.ttf",
        f"{FONT_DIR}/dejavu/DejaVuSerif-Bold.ttf",
    ],
    "font_size": [0.13, 0.21],
    "rotation_deg": 10.0,
    "uppercase_prob": 0.3,
    "titlecase_prob": 0.2,
    "banner_prob": 0.4,
    "outline_prob": 0.3,
    "max_shape_occlusion": 0.35,
    "caption_exact_prob": 0.2,
    "caption_mixed_prob": 0.4,
    "caption_none_prob": 0.4,
    "caption_partial_prob": 0.0,
    "partial_visual_words_probs": [[0.4, 0.3, 0.2, 0.1]],
    "mixed_all_words_prob": 0.5,
    "textfree_generic_prob": 0.2,
    "eval_concepts_per_class": 30,
    "eval_retrieval_pairs": 300,
    "eval_samples_per_shard": 1000,
    # MMC4-like documents (a dataset with `format: mmc4`): n_shards document files of
    # documents_per_shard documents, each with some images and sentences.
    "documents_per_shard": 40,
    "images_per_document": [1, 4],
    "filler_sentences": [1, 4],
    "own_sentence_prob": 0.8,
}

_PROBABILITY_KEYS = (
    "photo_background_prob",
    "text_fraction",
    "two_line_prob",
    "uppercase_prob",
    "titlecase_prob",
    "banner_prob",
    "outline_prob",
    "max_shape_occlusion",
    "caption_exact_prob",
    "caption_mixed_prob",
    "caption_none_prob",
    "caption_partial_prob",
    "mixed_all_words_prob",
    "textfree_generic_prob",
    "own_sentence_prob",
)
_RANGE_KEYS = ("shape_size", "photo_saturation", "photo_contrast", "font_size")
_POSITIVE_INT_KEYS = (
    "n_shards",
    "samples_per_shard",
    "eval_concepts_per_class",
    "eval_retrieval_pairs",
    "eval_samples_per_shard",
    "documents_per_shard",
)


def demo_config(user: dict | None = None) -> dict:
    """Merge ``user`` over :data:`DEFAULTS` and validate (``ValueError`` names a bad key)."""
    user = dict(user or {})
    unknown = sorted(set(user) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown demo config keys {unknown}; known keys: {sorted(DEFAULTS)}")
    cfg = copy.deepcopy(DEFAULTS)
    cfg.update(copy.deepcopy(user))
    _validate(cfg)
    return cfg


def _validate(cfg: dict) -> None:
    """Raise ``ValueError`` naming the first bad key; keys are checked in a fixed order, so the
    same config always gets the same message."""
    _validate_numbers(cfg)
    _validate_names(cfg)
    _validate_vocabulary(cfg)


def _fail(cfg: dict, key: str, why: str) -> None:
    raise ValueError(f"demo config {key!r} = {cfg[key]!r}: {why}")


def _validate_numbers(cfg: dict) -> None:
    """Probabilities, ranges, counts and sizes."""
    for key in _PROBABILITY_KEYS:
        if not 0.0 <= float(cfg[key]) <= 1.0:
            _fail(cfg, key, "must be a probability in [0, 1]")
    for key in _RANGE_KEYS:
        lo, hi = cfg[key]
        if not 0.0 <= lo <= hi <= 1.0:
            _fail(cfg, key, "must be [min, max] with 0 <= min <= max <= 1")
    for key in _POSITIVE_INT_KEYS:
        if int(cfg[key]) < 1:
            _fail(cfg, key, "must be a positive integer")
    if int(cfg["samples_per_shard"]) > 10_000:
        _fail(cfg, "samples_per_shard", "at most 10,000 (keys are shard*10^4 + index)")
    if int(cfg["n_shards"]) > 99_999:
        _fail(cfg, "n_shards", "at most 99,999 (five-digit shard numbers in keys)")
    if not 32 <= int(cfg["image_size"]) <= 1024:
        _fail(cfg, "image_size", "must be between 32 and 1024")
    if not 1 <= int(cfg["jpeg_quality"]) <= 100:
        _fail(cfg, "jpeg_quality", "must be between 1 and 100")
    if float(cfg["noise_std"]) < 0:
        _fail(cfg, "noise_std", "must be >= 0")
    if not 0 <= float(cfg["rotation_deg"]) <= 45:
        _fail(cfg, "rotation_deg", "must be between 0 and 45")
    for key, low in (("images_per_document", 1), ("filler_sentences", 0)):
        lo, hi = cfg[key]
        if not low <= int(lo) <= int(hi) <= 999:
            _fail(cfg, key, f"must be [min, max] with {low} <= min <= max <= 999")
    if int(cfg["documents_per_shard"]) > 9_999_999:
        _fail(cfg, "documents_per_shard", "at most 9,999,999 (seven-digit line numbers in keys)")
    if cfg["uppercase_prob"] + cfg["titlecase_prob"] > 1 + 1e-9:
        _fail(cfg, "titlecase_prob", "uppercase_prob + titlecase_prob must not exceed 1")
    kinds = sum(cfg[k] for k in CAPTION_KINDS.values())
    if abs(kinds - 1.0) > 1e-6:
        _fail(cfg, "caption_none_prob", f"{' + '.join(CAPTION_KINDS.values())} must be 1")
    if not _is_distribution(cfg["words_per_image_probs"]):
        _fail(cfg, "words_per_image_probs", "must be non-negative probabilities of 1, 2, ... words summing to 1")
    rows = cfg["partial_visual_words_probs"]
    if not rows or not all(isinstance(r, (list, tuple)) and _is_distribution(r) for r in rows):
        _fail(cfg, "partial_visual_words_probs", "must be rows (one per number of rendered words) of "
              "non-negative probabilities of 1, 2, ... visual words, each summing to 1")


def _is_distribution(values) -> bool:
    """Non-empty, non-negative, summing to 1."""
    probs = np.asarray(values, dtype=float)
    return probs.ndim == 1 and probs.size > 0 and not (probs < 0).any() and abs(probs.sum() - 1.0) <= 1e-6


def _validate_names(cfg: dict) -> None:
    """Shapes, colours and photos among the known ones; at least one font."""
    if (
        not cfg["shapes"]
        or not set(cfg["shapes"]) <= set(SHAPE_NAMES)
        or len(set(cfg["shapes"])) < len(cfg["shapes"])
    ):
        _fail(cfg, "shapes", f"must be distinct names from {list(SHAPE_NAMES)}")
    if (
        not cfg["colors"]
        or not set(cfg["colors"]) <= set(COLOR_RGB)
        or len(set(cfg["colors"])) < len(cfg["colors"])
    ):
        _fail(cfg, "colors", f"must be distinct names from {list(COLOR_RGB)}")
    if not cfg["photos"] or not set(cfg["photos"]) <= set(PHOTO_CONTENT):
        _fail(cfg, "photos", f"must be names from {list(PHOTO_CONTENT)}")
    if not cfg["fonts"]:
        _fail(cfg, "fonts", "needs at least one TrueType file")


def _validate_vocabulary(cfg: dict) -> None:
    """Refuse vocabularies that caption templates could produce by themselves.

    Ground truth says which caption words are parroted by comparing them with the rendered
    words; that is only sound if no template word, colour, shape or photo word is also a
    vocabulary word.
    """
    vocab = [str(w) for w in cfg["vocabulary"]]
    if len(vocab) < len(cfg["words_per_image_probs"]):
        raise ValueError(
            "demo config 'vocabulary' needs at least as many words as words_per_image_probs allows"
        )
    bad = [w for w in vocab if not w or any(ch.isspace() for ch in w)]
    if bad:
        raise ValueError(f"demo config 'vocabulary' entries must be single words, got {bad}")
    lowered = [w.lower() for w in vocab]
    if len(set(lowered)) < len(lowered):
        raise ValueError("demo config 'vocabulary' has duplicate words (case-insensitively)")
    clash = sorted(set(lowered) & template_words(cfg))
    if clash:
        raise ValueError(f"demo config 'vocabulary' words also used by caption templates: {clash}")


def template_words(cfg: dict) -> set[str]:
    """Every lowercase word a non-parrot caption can contain (templates, colours, shapes...)."""
    texts = [
        *VISUAL_TEMPLATES,
        RETRIEVAL_TEMPLATE,
        *MIXED_TEMPLATES,
        *GENERIC_TEMPLATES,
        *FILLER_SENTENCES,
        *BACKGROUND_GRADIENT_PHRASES,
        *POSITION_WORDS,
        *SIZE_WORDS,
        "a photo",
    ]
    texts += list(COLOR_RGB) + list(SHAPE_NAMES) + list(PHOTO_CONTENT.values())
    words = set()
    for text in texts:
        for word in text.split():
            if not (word.startswith("{") and word.endswith("}")):
                words.add(word.split("{")[0].lower())
    words.discard("")
    return words


def concept_classes(cfg: dict) -> list[str]:
    """Class names of the visual concepts, e.g. ``"red circle"``; the index is the class label."""
    cfg = demo_config(cfg)
    return [f"{color} {shape}" for shape in cfg["shapes"] for color in cfg["colors"]]
