"""A deterministic, LAION-like demo dataset with ground truth: the embedded default input.

The pool is a miniature of the study's data. Every image shows one large visual concept (a coloured
shape over a photograph crop or a gradient); about ``text_fraction`` of the images also carry
rendered poster words. Captions of text images are exact parrots (the rendered words and nothing
else), mixed (a visual description plus some rendered words) or free of parroting, in proportions
chosen so the Table 1 statistics of the paper come out LAION-like: about half the images carry
text, about 60% of those have a caption with CoTR > 0, and their mean CoTR is about 0.3.

Shards follow img2dataset's webdataset layout (``KEY.jpg``, ``KEY.txt``, ``KEY.json``), with the
generator's ground truth under ``json["truth"]``. Held-out evaluation sets (zero-shot concept
classification and image-text retrieval, all text-free) follow clip-benchmark's local ``wds/``
layout. Everything is a pure function of the configuration: sample ``i`` of shard ``s`` is drawn
from ``numpy.random.default_rng([seed, s, i])``, so a shard is byte-identical on every rerun.

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
    caption_none_prob        text images: visual description only (the three sum to 1)
    mixed_all_words_prob     mixed captions: probability of quoting all rendered words (else some)
    textfree_generic_prob    text-free images: probability of a generic, uninformative caption
    eval_concepts_per_class  held-out concept classification images per class
    eval_retrieval_pairs     held-out image-caption pairs for retrieval
    eval_samples_per_shard   samples per evaluation tar
"""

from __future__ import annotations

import copy
import functools
import io
import json
import math
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from parrotscope.io import atomic_dir, atomic_path, write_text

FONT_DIR = "/usr/share/fonts/truetype"

#: Concept colours (RGB). Saturated and far apart, so a dimmed background never passes for one.
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "green": (35, 165, 55),
    "blue": (40, 80, 225),
    "yellow": (245, 210, 30),
    "purple": (140, 50, 190),
    "orange": (250, 130, 20),
}

SHAPE_NAMES = ("circle", "square", "triangle", "star", "diamond", "cross")

#: scikit-image sample photographs that load offline, with the word a caption would use for them.
#: ``text``, ``page``, ``logo``, ``clock`` and ``coins`` are left out: they show lettering.
PHOTO_CONTENT: dict[str, str] = {
    "astronaut": "astronaut",
    "coffee": "coffee",
    "chelsea": "cat",
    "rocket": "rocket",
    "hubble_deep_field": "space",
    "immunohistochemistry": "tissue",
    "retina": "retina",
    "stereo_motorcycle": "motorcycle",
    "camera": "camera",
    "moon": "moon",
    "brick": "brick",
    "grass": "grass",
    "gravel": "gravel",
}

#: Caption templates. Fields: {concept} "red circle", {color}, {shape}, {bg} e.g. "a cat photo",
#: {pos} e.g. "top left", {size} "small"/"large".
VISUAL_TEMPLATES = (
    "a {color} {shape}",
    "a {color} {shape} on {bg}",
    "a photo of a {color} {shape}",
    "a {size} {color} {shape} at the {pos}",
    "{color} {shape} icon",
    "a {color} {shape} shape on {bg}",
)
#: The retrieval set uses one detailed description, so captions tell images apart where possible.
RETRIEVAL_TEMPLATE = "a {size} {color} {shape} at the {pos} on {bg}"
#: Mixed parrot captions: {desc} is a visual description, {words} the quoted rendered words.
MIXED_TEMPLATES = (
    "{desc} with the text {words}",
    "{desc} and a sign that says {words}",
    "{words} poster with a {color} {shape}",
    "{words} {desc}",
    "{desc} {words}",
    "{words} banner and a {color} {shape}",
)
#: Uninformative web captions ({n} is a random number), as LAION has plenty of.
GENERIC_TEMPLATES = (
    "untitled",
    "image {n}",
    "img{n}",
    "photo {n}",
    "stock photo",
    "wallpaper",
    "background image",
    "click to enlarge",
    "product picture {n}",
    "dsc{n}",
)
ZEROSHOT_TEMPLATES = ("a {c}", "a photo of a {c}", "a {c} shape", "{c} icon", "a picture of a {c}")
BACKGROUND_GRADIENT_PHRASES = ("a gradient background", "a plain background")
POSITION_WORDS = ("top", "bottom", "left", "right", "center", "side", "corner")
SIZE_WORDS = ("small", "large")

#: Neutral text and banner colours: text never takes a concept colour, so it cannot be read as one.
DARK_INKS = ((15, 15, 15), (25, 30, 80), (80, 20, 20), (20, 55, 25), (50, 50, 50))
LIGHT_INKS = ((250, 250, 250), (255, 242, 205), (225, 225, 225), (205, 240, 255))

TAR_MTIME = 946684800  # 2000-01-01: a fixed member time keeps tars byte-identical across reruns
EVAL_SEED_OFFSET = 1_000_000  # eval rng streams start here, beyond any training shard index
EVAL_KINDS = ("concepts", "retrieval")

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
    "mixed_all_words_prob": 0.5,
    "textfree_generic_prob": 0.2,
    "eval_concepts_per_class": 30,
    "eval_retrieval_pairs": 300,
    "eval_samples_per_shard": 1000,
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
    "mixed_all_words_prob",
    "textfree_generic_prob",
)
_RANGE_KEYS = ("shape_size", "photo_saturation", "photo_contrast", "font_size")
_POSITIVE_INT_KEYS = (
    "n_shards",
    "samples_per_shard",
    "eval_concepts_per_class",
    "eval_retrieval_pairs",
    "eval_samples_per_shard",
)


# --------------------------------------------------------------------------------------------
# Configuration


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
    def fail(key, why):
        raise ValueError(f"demo config {key!r} = {cfg[key]!r}: {why}")

    for key in _PROBABILITY_KEYS:
        if not 0.0 <= float(cfg[key]) <= 1.0:
            fail(key, "must be a probability in [0, 1]")
    for key in _RANGE_KEYS:
        lo, hi = cfg[key]
        if not 0.0 <= lo <= hi <= 1.0:
            fail(key, "must be [min, max] with 0 <= min <= max <= 1")
    for key in _POSITIVE_INT_KEYS:
        if int(cfg[key]) < 1:
            fail(key, "must be a positive integer")
    if int(cfg["samples_per_shard"]) > 10_000:
        fail("samples_per_shard", "at most 10,000 (keys are shard*10^4 + index)")
    if int(cfg["n_shards"]) > 99_999:
        fail("n_shards", "at most 99,999 (five-digit shard numbers in keys)")
    if not 32 <= int(cfg["image_size"]) <= 1024:
        fail("image_size", "must be between 32 and 1024")
    if not 1 <= int(cfg["jpeg_quality"]) <= 100:
        fail("jpeg_quality", "must be between 1 and 100")
    if float(cfg["noise_std"]) < 0:
        fail("noise_std", "must be >= 0")
    if not 0 <= float(cfg["rotation_deg"]) <= 45:
        fail("rotation_deg", "must be between 0 and 45")
    if cfg["uppercase_prob"] + cfg["titlecase_prob"] > 1 + 1e-9:
        fail("titlecase_prob", "uppercase_prob + titlecase_prob must not exceed 1")
    kinds = cfg["caption_exact_prob"] + cfg["caption_mixed_prob"] + cfg["caption_none_prob"]
    if abs(kinds - 1.0) > 1e-6:
        fail(
            "caption_none_prob",
            "caption_exact_prob + caption_mixed_prob + caption_none_prob must be 1",
        )
    probs = np.asarray(cfg["words_per_image_probs"], dtype=float)
    if probs.size == 0 or (probs < 0).any() or abs(probs.sum() - 1.0) > 1e-6:
        fail(
            "words_per_image_probs",
            "must be non-negative probabilities of 1, 2, ... words summing to 1",
        )
    if (
        not cfg["shapes"]
        or not set(cfg["shapes"]) <= set(SHAPE_NAMES)
        or len(set(cfg["shapes"])) < len(cfg["shapes"])
    ):
        fail("shapes", f"must be distinct names from {list(SHAPE_NAMES)}")
    if (
        not cfg["colors"]
        or not set(cfg["colors"]) <= set(COLOR_RGB)
        or len(set(cfg["colors"])) < len(cfg["colors"])
    ):
        fail("colors", f"must be distinct names from {list(COLOR_RGB)}")
    if not cfg["photos"] or not set(cfg["photos"]) <= set(PHOTO_CONTENT):
        fail("photos", f"must be names from {list(PHOTO_CONTENT)}")
    if not cfg["fonts"]:
        fail("fonts", "needs at least one TrueType file")
    _validate_vocabulary(cfg)


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


# --------------------------------------------------------------------------------------------
# Resources (fonts and photographs are loaded once per process)


def check_fonts(cfg: dict) -> None:
    """Fail early, naming the Debian packages, if a configured font file is missing."""
    missing = [f for f in cfg["fonts"] if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(
            f"demo fonts not found: {missing}. Install Debian's fonts-liberation and "
            "fonts-dejavu-core, or set demo.fonts to TrueType files that exist."
        )


@functools.lru_cache(maxsize=512)
def _font(path: str, px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, px)


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> Image.Image:
    """A scikit-image sample photograph as an RGB PIL image."""
    import skimage.data

    arr = getattr(skimage.data, name)()
    if isinstance(arr, tuple):  # stereo pairs: keep the left view
        arr = arr[0]
    arr = np.asarray(arr)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return Image.fromarray(arr[..., :3].astype(np.uint8), "RGB")


# --------------------------------------------------------------------------------------------
# Images: background and concept


def _luminance(rgb) -> np.ndarray:
    rgb = np.asarray(rgb, dtype=np.float32)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def photo_background(rng: np.random.Generator, cfg: dict, name: str) -> np.ndarray:
    """A random crop of a sample photo, flipped at random, desaturated and flattened.

    Desaturation and reduced contrast keep the photo from competing with the shape's colour.
    """
    size = int(cfg["image_size"])
    photo = _photo(name)
    w, h = photo.size
    side = min(w, h) * rng.uniform(0.3, 1.0)
    x0 = rng.uniform(0, w - side)
    y0 = rng.uniform(0, h - side)
    crop = photo.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + side, y0 + side))
    if rng.random() < 0.5:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    arr = np.asarray(crop, dtype=np.float32)
    gray = _luminance(arr)[..., None]
    arr = gray + rng.uniform(*cfg["photo_saturation"]) * (arr - gray)
    target_mean = rng.uniform(70, 190)
    arr = target_mean + rng.uniform(*cfg["photo_contrast"]) * (arr - arr.mean())
    return arr


def gradient_background(rng: np.random.Generator, cfg: dict) -> np.ndarray:
    """A linear gradient between two muted colours along a random direction."""
    size = int(cfg["image_size"])

    def muted():
        return rng.uniform(40, 215) + rng.uniform(-30, 30, size=3)

    c0, c1 = muted(), muted()
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    t = (xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    return c0 + t[..., None] * (c1 - c0)


def make_background(rng: np.random.Generator, cfg: dict) -> tuple[np.ndarray, str]:
    """Background pixels (float, 0-255, not yet clipped) and its caption phrase."""
    if rng.random() < cfg["photo_background_prob"]:
        name = cfg["photos"][rng.integers(len(cfg["photos"]))]
        arr = photo_background(rng, cfg, name)
        phrase = f"a {PHOTO_CONTENT[name]} photo"
    else:
        arr = gradient_background(rng, cfg)
        phrase = BACKGROUND_GRADIENT_PHRASES[rng.integers(len(BACKGROUND_GRADIENT_PHRASES))]
    std = rng.uniform(0, cfg["noise_std"])
    arr = arr + rng.normal(0, std, size=arr.shape) if std > 0 else arr
    return np.clip(arr, 0, 255), phrase


@dataclass
class Concept:
    shape: str
    color: str
    center: tuple[float, float]
    diameter: float  # pixels
    angle: float  # degrees

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    def box(self) -> tuple[float, float, float, float]:
        r = self.diameter / 2
        cx, cy = self.center
        return cx - r, cy - r, cx + r, cy + r


def sample_concept(rng: np.random.Generator, cfg: dict, label: int | None = None) -> Concept:
    """Draw a concept (uniform over classes unless ``label`` is given) and its placement."""
    size = int(cfg["image_size"])
    n_colors = len(cfg["colors"])
    if label is None:
        label = int(rng.integers(len(cfg["shapes"]) * n_colors))
    shape, color = cfg["shapes"][label // n_colors], cfg["colors"][label % n_colors]
    diameter = rng.uniform(*cfg["shape_size"]) * size
    r = diameter / 2
    cx = rng.uniform(r + 1, size - r - 1)
    cy = rng.uniform(r + 1, size - r - 1)
    return Concept(shape, color, (cx, cy), diameter, float(rng.uniform(-20, 20)))


def _shape_polygon(
    shape: str, cx: float, cy: float, r: float, angle: float
) -> list[tuple[float, float]]:
    """Vertices of a polygonal shape inscribed in the circle (cx, cy, r), rotated by ``angle``."""
    if shape == "cross":
        k = r * 0.35
        pts = [
            (-k, -r),
            (k, -r),
            (k, -k),
            (r, -k),
            (r, k),
            (k, k),
            (k, r),
            (-k, r),
            (-k, k),
            (-r, k),
            (-r, -k),
            (-k, -k),
        ]
        return _rotate_points([(cx + x, cy + y) for x, y in pts], angle, (cx, cy))
    # (radius, polar angle in degrees) of each vertex, counter-clockwise from the x axis.
    polar = {
        "square": [(r * 0.92, 45 + 90 * i) for i in range(4)],
        "diamond": [(r if i % 2 == 0 else r * 0.7, 90 + 90 * i) for i in range(4)],
        "triangle": [(r, 90 + 120 * i) for i in range(3)],
        "star": [(r if i % 2 == 0 else r * 0.45, 90 + 36 * i) for i in range(10)],
    }
    if shape not in polar:
        raise ValueError(f"no polygon for shape {shape!r}")
    pts = [
        (cx + rad * math.cos(math.radians(a)), cy - rad * math.sin(math.radians(a)))
        for rad, a in polar[shape]
    ]
    if shape == "triangle":
        # An equilateral triangle's centroid sits low in its box; shift it so the box is centred.
        pts = [(x, y + r * 0.25) for x, y in pts]
    return _rotate_points(pts, angle, (cx, cy))


def draw_concept(img: Image.Image, rng: np.random.Generator, concept: Concept) -> None:
    """Paint the concept's shape in place, antialiased by drawing at 4x and reducing."""
    size = img.size[0]
    ss = 4
    mask = Image.new("L", (size * ss, size * ss), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy = concept.center[0] * ss, concept.center[1] * ss
    r = concept.diameter / 2 * ss
    if concept.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    else:
        draw.polygon(_shape_polygon(concept.shape, cx, cy, r, concept.angle), fill=255)
    mask = mask.reduce(ss)
    rgb = np.clip(
        np.asarray(COLOR_RGB[concept.color], dtype=np.float32) + rng.uniform(-18, 18, size=3),
        0,
        255,
    )
    fill = Image.new("RGB", img.size, tuple(int(v) for v in rgb))
    img.paste(fill, (0, 0), mask)


def position_phrase(concept: Concept, size: int) -> str:
    """Where the shape sits, in words ("top left", "center", ...), by thirds of the image."""
    cx, cy = concept.center
    col = ("left", None, "right")[min(int(3 * cx / size), 2)]
    row = ("top", None, "bottom")[min(int(3 * cy / size), 2)]
    if row and col:
        return f"{row} {col} corner"
    if col:
        return f"{col} side"
    return row or "center"


def size_word(concept: Concept, cfg: dict) -> str:
    lo, hi = cfg["shape_size"]
    return "small" if concept.diameter / cfg["image_size"] < (lo + hi) / 2 else "large"


# --------------------------------------------------------------------------------------------
# Text


@dataclass
class TextBlock:
    """Rendered words and where they went: the ground truth of one image's embedded text."""

    words: list[str]
    polygons: list[list[list[float]]]
    font: str
    font_px: int


def _rotate_points(points, angle_deg: float, center) -> list[tuple[float, float]]:
    """Rotate points counter-clockwise (on screen) about ``center``, as ``Image.rotate`` does."""
    t = math.radians(angle_deg)
    c, s = math.cos(t), math.sin(t)
    cx, cy = center
    return [(cx + (x - cx) * c + (y - cy) * s, cy - (x - cx) * s + (y - cy) * c) for x, y in points]


def _case_words(rng: np.random.Generator, cfg: dict, words: list[str]) -> list[str]:
    u = rng.random()
    if u < cfg["uppercase_prob"]:
        return [w.upper() for w in words]
    if u < cfg["uppercase_prob"] + cfg["titlecase_prob"]:
        return [w[:1].upper() + w[1:].lower() for w in words]
    return [w.lower() for w in words]


def _layout_lines(words: list[str], two_lines: bool) -> list[list[str]]:
    if two_lines and len(words) >= 2:
        cut = (len(words) + 1) // 2
        return [words[:cut], words[cut:]]
    return [words]


def _measure(lines: list[list[str]], font: ImageFont.FreeTypeFont, stroke: int):
    """Word origins (relative to the block's top-left) and the block's (width, height)."""
    space = font.getlength(" ")
    ascent, descent = font.getmetrics()
    line_h = ascent + descent
    origins, width = [], 0.0
    for li, line in enumerate(lines):
        x = 0.0
        for word in line:
            origins.append((x, li * line_h * 1.05))
            x += font.getlength(word) + space
        width = max(width, x - space)
    height = line_h * (1.05 * (len(lines) - 1) + 1)
    return origins, width + 2 * stroke, height + 2 * stroke


def _rotated_extent(w: float, h: float, angle: float) -> tuple[float, float]:
    t = math.radians(abs(angle))
    return w * math.cos(t) + h * math.sin(t), w * math.sin(t) + h * math.cos(t)


def _centre_within(rng: np.random.Generator, extent: float, size: int) -> float:
    """A random centre that keeps an object of ``extent`` px inside ``size`` px (1 px margin)."""
    margin = min(1.0, max((size - extent) / 2, 0.0))
    lo, hi = extent / 2 + margin, size - extent / 2 - margin
    return float(rng.uniform(lo, hi)) if hi > lo else size / 2


def _box_overlap(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(w, 0.0) * max(h, 0.0)


def _pick_ink(
    rng: np.random.Generator, background_luma: float
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """A text colour contrasting with the background, and an outline colour contrasting with it."""
    if background_luma > 125:
        ink, other = DARK_INKS, LIGHT_INKS
    else:
        ink, other = LIGHT_INKS, DARK_INKS
    return ink[rng.integers(len(ink))], other[rng.integers(len(other))]


def render_text(
    img: Image.Image, rng: np.random.Generator, cfg: dict, concept: Concept
) -> TextBlock:
    """Render 1-3 vocabulary words on the image, in place, and return their ground truth.

    The block is fitted inside the image (splitting over two lines, shrinking the font, and as a
    last resort dropping words), then placed where it covers at most ``max_shape_occlusion`` of
    the shape's box when such a place is found among random candidates.
    """
    size = img.size[0]
    vocab = cfg["vocabulary"]
    n_words = 1 + int(rng.choice(len(cfg["words_per_image_probs"]), p=cfg["words_per_image_probs"]))
    picks = rng.choice(len(vocab), size=n_words, replace=False)
    words = _case_words(rng, cfg, [str(vocab[i]) for i in picks])
    font_path = cfg["fonts"][rng.integers(len(cfg["fonts"]))]
    px = int(round(rng.uniform(*cfg["font_size"]) * size))
    min_px = max(8, int(round(cfg["font_size"][0] * size * 0.8)))
    angle = float(rng.uniform(-cfg["rotation_deg"], cfg["rotation_deg"]))
    two_lines = rng.random() < cfg["two_line_prob"]
    banner = rng.random() < cfg["banner_prob"]
    outline = (not banner) and rng.random() < cfg["outline_prob"]
    stroke = max(1, px // 14) if outline else 0
    pad = 0.22 * px if banner else 1.0

    # Fit the block: the rotated block plus padding must fit in 94% of the side.
    while True:
        font = _font(font_path, px)
        lines = _layout_lines(words, two_lines)
        origins, bw, bh = _measure(lines, font, stroke)
        ew, eh = _rotated_extent(bw + 2 * pad, bh + 2 * pad, angle)
        if ew <= 0.94 * size and eh <= 0.94 * size:
            break
        if not two_lines and len(words) >= 2:
            two_lines = True
        elif px > min_px:
            px = max(min_px, int(px * 0.9))
        elif len(words) > 1:
            words, two_lines = words[:-1], False
        elif px > 4:
            # One word still too wide: straighten and shrink below the configured minimum.
            angle *= 0.5
            px = min_px = max(4, int(px * 0.9))
        else:
            raise ValueError(f"cannot fit {words} in a {size} px image; lower demo.font_size")

    # Place it: random candidates, keep the first that leaves the shape visible enough.
    shape_box = concept.box()
    shape_area = max((shape_box[2] - shape_box[0]) * (shape_box[3] - shape_box[1]), 1.0)
    best = None
    for _ in range(40):
        cx = _centre_within(rng, ew, size)
        cy = _centre_within(rng, eh, size)
        occlusion = (
            _box_overlap((cx - ew / 2, cy - eh / 2, cx + ew / 2, cy + eh / 2), shape_box)
            / shape_area
        )
        if best is None or occlusion < best[0]:
            best = (occlusion, cx, cy)
        if occlusion <= cfg["max_shape_occlusion"]:
            break
    _, cx, cy = best
    x0, y0 = cx - bw / 2, cy - bh / 2  # top-left of the unrotated text block

    # Colours from the local background (after the shape is drawn).
    arr = np.asarray(img, dtype=np.float32)
    bx0, by0 = int(max(cx - ew / 2, 0)), int(max(cy - eh / 2, 0))
    bx1, by1 = int(min(cx + ew / 2, size)) + 1, int(min(cy + eh / 2, size)) + 1
    local_luma = float(_luminance(arr[by0:by1, bx0:bx1]).mean())

    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    if banner:
        banner_rgb = (DARK_INKS + LIGHT_INKS)[rng.integers(len(DARK_INKS) + len(LIGHT_INKS))]
        alpha = int(rng.integers(170, 256))
        draw.rounded_rectangle(
            (x0 - pad, y0 - pad, x0 + bw + pad, y0 + bh + pad),
            radius=int(rng.uniform(0, pad)),
            fill=(*banner_rgb, alpha),
        )
        # Under a semi-transparent banner the eye sees a blend; pick ink against that blend.
        seen = (alpha * float(_luminance(banner_rgb)) + (255 - alpha) * local_luma) / 255
        ink, outline_rgb = _pick_ink(rng, seen)
    else:
        ink, outline_rgb = _pick_ink(rng, local_luma)

    polygons = []
    for word, (ox, oy) in zip(_flatten(lines), origins, strict=True):
        x, y = x0 + stroke + ox, y0 + stroke + oy
        draw.text(
            (x, y),
            word,
            font=font,
            fill=(*ink, 255),
            stroke_width=stroke,
            stroke_fill=(*outline_rgb, 255),
        )
        left, top, right, bottom = font.getbbox(word, stroke_width=stroke)
        corners = [
            (x + left, y + top),
            (x + right, y + top),
            (x + right, y + bottom),
            (x + left, y + bottom),
        ]
        polygons.append(
            [
                [round(px_, 2), round(py_, 2)]
                for px_, py_ in _rotate_points(corners, angle, (cx, cy))
            ]
        )
    if angle:
        layer = layer.rotate(angle, resample=Image.BICUBIC, center=(cx, cy))
    img.paste(layer, (0, 0), layer)
    return TextBlock(_flatten(lines), polygons, os.path.basename(font_path), px)


def _flatten(lines: list[list[str]]) -> list[str]:
    return [w for line in lines for w in line]


# --------------------------------------------------------------------------------------------
# Captions


def visual_description(
    rng: np.random.Generator,
    concept: Concept,
    bg_phrase: str,
    cfg: dict,
    template: str | None = None,
) -> str:
    """A caption describing only what is drawn (no rendered words)."""
    if template is None:
        template = VISUAL_TEMPLATES[rng.integers(len(VISUAL_TEMPLATES))]
    return template.format(
        concept=concept.name,
        color=concept.color,
        shape=concept.shape,
        bg=bg_phrase,
        pos=position_phrase(concept, cfg["image_size"]),
        size=size_word(concept, cfg),
    )


def generic_caption(rng: np.random.Generator) -> str:
    return GENERIC_TEMPLATES[rng.integers(len(GENERIC_TEMPLATES))].format(
        n=int(rng.integers(100, 10000))
    )


def text_caption(
    rng: np.random.Generator, cfg: dict, concept: Concept, bg_phrase: str, words: list[str]
) -> tuple[str, str, list[str]]:
    """(caption, caption_kind, parrot_words) for an image whose rendered words are ``words``."""
    kind = ("exact", "mixed", "none")[
        int(
            rng.choice(
                3,
                p=[cfg["caption_exact_prob"], cfg["caption_mixed_prob"], cfg["caption_none_prob"]],
            )
        )
    ]
    if kind == "exact":
        return " ".join(words), kind, list(words)
    desc = visual_description(rng, concept, bg_phrase, cfg)
    if kind == "none":
        return desc, kind, []
    if len(words) == 1 or rng.random() < cfg["mixed_all_words_prob"]:
        quoted = list(words)
    else:
        k = int(rng.integers(1, len(words)))
        keep = sorted(rng.choice(len(words), size=k, replace=False))
        quoted = [words[i] for i in keep]
    template = MIXED_TEMPLATES[rng.integers(len(MIXED_TEMPLATES))]
    caption = template.format(
        desc=desc, words=" ".join(quoted), color=concept.color, shape=concept.shape
    )
    return caption, kind, quoted


# --------------------------------------------------------------------------------------------
# Samples


def encode_jpeg(img: Image.Image, quality: int) -> bytes:
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
    if block is not None:
        caption, kind, parrot = text_caption(rng, cfg, concept, bg_phrase, block.words)
    elif retrieval_caption:
        caption, kind, parrot = (
            visual_description(rng, concept, bg_phrase, cfg, RETRIEVAL_TEMPLATE),
            "visual",
            [],
        )
    elif rng.random() < cfg["textfree_generic_prob"]:
        caption, kind, parrot = generic_caption(rng), "generic", []
    else:
        caption, kind, parrot = visual_description(rng, concept, bg_phrase, cfg), "visual", []
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


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = TAR_MTIME
    info.mode = 0o444
    info.uname = info.gname = "demo"
    tar.addfile(info, io.BytesIO(data))


def _write_sample(tar: tarfile.TarFile, key: str, sample: dict) -> None:
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


def cotr(caption: str, words: list[str]) -> float:
    """Co-Embedded Text Rate of Algorithm 1, case-insensitive: |caption ∩ words| / |caption|."""
    cap = {w.lower() for w in caption.split()}
    if not cap:
        return 0.0
    return len(cap & {w.lower() for w in words}) / len(cap)


def write_demo_shard(cfg: dict, shard_index: int, out_path: str) -> dict:
    """Write training shard ``shard_index`` as an img2dataset-style webdataset tar, atomically.

    Sample ``i`` is drawn from ``default_rng([seed, shard_index, i])``, so the tar depends on the
    seed and the shard index only (and each sample's content is independent of the shard size).
    Returns counts: samples, text images, caption kinds, and the ground-truth CoTR statistics.
    """
    cfg = demo_config(cfg)
    check_fonts(cfg)
    shard_index = int(shard_index)
    if not 0 <= shard_index < EVAL_SEED_OFFSET:
        raise ValueError(f"shard_index must be in [0, {EVAL_SEED_OFFSET}), got {shard_index}")
    seed = int(cfg["seed"])
    kinds: dict[str, int] = {}
    n_text, cotrs = 0, []
    with atomic_path(out_path, suffix=".tar") as tmp:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(int(cfg["samples_per_shard"])):
                rng = np.random.default_rng([seed, shard_index, i])
                key = f"{shard_index:05d}{i:04d}"
                with_text = bool(rng.random() < cfg["text_fraction"])
                sample = make_sample(
                    rng, cfg, key, f"demo://seed{seed}/{key}.jpg", with_text=with_text
                )
                _write_sample(tar, key, sample)
                truth = sample["json"]["truth"]
                kinds[truth["caption_kind"]] = kinds.get(truth["caption_kind"], 0) + 1
                if with_text:
                    n_text += 1
                    cotrs.append(cotr(sample["txt"], truth["words"]))
    return {
        "shard": shard_index,
        "path": str(out_path),
        "n_samples": int(cfg["samples_per_shard"]),
        "n_text": n_text,
        "caption_kinds": kinds,
        "truth_mean_cotr_text": float(np.mean(cotrs)) if cotrs else 0.0,
        "truth_parrot_rate_text": float(np.mean([c > 0 for c in cotrs])) if cotrs else 0.0,
    }


# --------------------------------------------------------------------------------------------
# Held-out evaluation sets (clip-benchmark's local wds layout)


def write_eval_set(cfg: dict, kind: str, out_dir: str) -> dict:
    """Write a text-free held-out set for clip-benchmark (`--dataset wds/NAME --dataset_root DIR`).

    ``concepts``: ``KEY.jpg`` + ``KEY.cls``, ``eval_concepts_per_class`` images of every class,
    for zero-shot classification. ``retrieval``: ``KEY.jpg`` + ``KEY.txt`` (one detailed visual
    caption), ``eval_retrieval_pairs`` pairs; clip-benchmark must be told
    ``--task zeroshot_retrieval`` (its ``auto`` task picks classification for wds datasets).
    Both carry ``KEY.json`` with ground truth, which clip-benchmark ignores. The directory is
    built beside ``out_dir`` and renamed into place when complete.
    """
    cfg = demo_config(cfg)
    check_fonts(cfg)
    if kind not in EVAL_KINDS:
        raise ValueError(f"eval set kind must be one of {EVAL_KINDS}, got {kind!r}")
    classes = concept_classes(cfg)
    seed = int(cfg["seed"])
    stream = EVAL_SEED_OFFSET + EVAL_KINDS.index(kind)
    if kind == "concepts":
        labels = np.repeat(np.arange(len(classes)), int(cfg["eval_concepts_per_class"]))
        labels = np.random.default_rng([seed, stream]).permutation(labels)
    else:
        labels = [None] * int(cfg["eval_retrieval_pairs"])
    per_shard = int(cfg["eval_samples_per_shard"])
    n_shards = max(1, math.ceil(len(labels) / per_shard))

    with atomic_dir(out_dir) as tmp_dir:
        (tmp_dir / "test").mkdir()
        for s in range(n_shards):
            with atomic_path(tmp_dir / "test" / f"{s}.tar", suffix=".tar") as tmp:
                with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
                    for i in range(s * per_shard, min((s + 1) * per_shard, len(labels))):
                        rng = np.random.default_rng([seed, stream, i])
                        key = f"{i:06d}"
                        label = None if labels[i] is None else int(labels[i])
                        sample = make_sample(
                            rng,
                            cfg,
                            key,
                            f"demo://seed{seed}/{kind}/{key}.jpg",
                            with_text=False,
                            label=label,
                            retrieval_caption=kind == "retrieval",
                        )
                        if kind == "concepts":
                            del sample["txt"]
                            sample["cls"] = str(label)
                        _write_sample(tar, key, sample)
        write_text(f"{n_shards}\n", tmp_dir / "test" / "nshards.txt")
        write_text("".join(f"{c}\n" for c in classes), tmp_dir / "classnames.txt")
        write_text(
            "".join(f"{t}\n" for t in ZEROSHOT_TEMPLATES),
            tmp_dir / "zeroshot_classification_templates.txt",
        )
        write_text(
            "classification\n" if kind == "concepts" else "retrieval\n",
            tmp_dir / "dataset_type.txt",
        )
    return {
        "kind": kind,
        "path": str(out_dir),
        "n_samples": len(labels),
        "n_shards": n_shards,
        "n_classes": len(classes),
    }
