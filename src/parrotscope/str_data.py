"""Scene-text-recognition data for the ``str`` stage: word images, STR LMDBs and word accuracy.

Word images
    :func:`render_word` draws one word the way synthetic STR training sets (MJSynth, SynthText)
    vary it: a font from the Debian TrueType families (Liberation, DejaVu: regular, bold, italic,
    condensed, mono, serif), upper/title/lower case, a text colour contrasting with a background
    that is a flat colour, a gradient, noise or a crop of a scikit-image sample photograph, an
    optional outline or drop shadow, a rotation, a Gaussian blur and JPEG compression. Words come
    from a lexicon (the whole words of CLIP's BPE vocabulary, most frequent first; it ships with
    open_clip, so this works offline) and, with ``random_word_prob``, are random alphanumeric
    strings, so a recogniser cannot lean on the lexicon alone.

Benchmarks
    The standard STR benchmark layout (IIIT5K, SVT, IC13, IC15, SVTP, CUTE80 as distributed with
    PARSeq and CLIP4STR) is an LMDB environment with ``num-samples`` and, for i = 1..n (one-based),
    ``image-%09d`` (encoded image bytes) and ``label-%09d`` (UTF-8 text). :func:`write_lmdb` writes
    it (the rendered training and test sets, the demo crops) and :class:`LmdbWords` reads it.
    Demo crops (:func:`demo_word_crops`) are the words of held-out demo images, cut out along the
    ground-truth polygons the demo generator records in every sample's json (``truth.words`` and
    ``truth.word_polygons``: one quadrilateral per rendered word, in reading order).

Scoring
    Benchmarks score case-insensitive alphanumerics: both strings are lower-cased, accents are
    removed (NFKD), every character outside ``0-9a-z`` is dropped, and a word counts as correct
    when the results are equal (:func:`benchmark_label`, :func:`word_accuracy`). A label that is
    empty after this, or longer than the model's maximum label length, is skipped and counted.
"""

from __future__ import annotations

import functools
import gzip
import io
import math
import os
import string
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from tqdm import tqdm

from .io import atomic_dir

CHARSET_36 = string.digits + string.ascii_lowercase
FONT_ROOTS = ("/usr/share/fonts/truetype/liberation", "/usr/share/fonts/truetype/dejavu")
# Not a text face (math symbols) or too thin to stay legible once blurred at 32 px.
_EXCLUDED_FONTS = ("DejaVuMathTeXGyre", "ExtraLight")
# Stream of the demo generator's rng that held-out crop images are drawn from: beyond the pool
# shards (< EVAL_SEED_OFFSET) and the demo's own evaluation sets (EVAL_SEED_OFFSET + 0, 1).
DEMO_CROP_STREAM = 100
LMDB_MAP_SIZE = 1 << 36  # the largest the file may grow; Linux allocates only what is written


# ----------------------------------------------------------------------------------------------
# Labels and accuracy


def strip_accents(text: str) -> str:
    """Decompose (NFKD) and drop combining marks: "Café" -> "Cafe"."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def charset_label(text: str, charset: str) -> str:
    """``text`` as a model with ``charset`` can spell it: accents removed, lower-cased when the
    charset has no upper-case letters, every character outside the charset dropped."""
    text = strip_accents(text)
    if not any(c.isupper() for c in charset):
        text = text.lower()
    allowed = set(charset)
    return "".join(c for c in text if c in allowed)


def benchmark_label(text: str) -> str:
    """The 36-character lowercase alphanumeric form benchmarks compare (``"Café-2!"`` -> ``"cafe2"``)."""
    return charset_label(text, CHARSET_36)


def is_correct(prediction: str, label: str) -> bool:
    return benchmark_label(prediction) == benchmark_label(label)


def word_accuracy(predictions: Sequence[str], labels: Sequence[str]) -> float:
    """Share of words read correctly under benchmark normalisation; NaN for no words."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels")
    if not labels:
        return float("nan")
    return sum(is_correct(p, t) for p, t in zip(predictions, labels)) / len(labels)


def skip_reason(label: str, charset: str, max_length: int) -> str | None:
    """Why a labelled word cannot be used (None if it can): no charset characters, or too long."""
    text = charset_label(label, charset)
    if not text:
        return "empty_label"
    if len(text) > max_length:
        return "label_too_long"
    return None


# ----------------------------------------------------------------------------------------------
# Lexicon and fonts


@functools.lru_cache(maxsize=4)
def bpe_lexicon(max_length: int, size: int, min_length: int = 1) -> tuple[str, ...]:
    """Whole words of CLIP's BPE vocabulary (merges ending a word), in merge order, which follows
    frequency in CLIP's training text: the ``size`` most frequent alphanumeric ASCII words of
    ``min_length``..``max_length`` characters."""
    import open_clip

    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    words: list[str] = []
    seen: set[str] = set()
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        next(fh)  # version header
        for line in fh:
            parts = line.split()
            if len(parts) != 2:
                continue
            token = parts[0] + parts[1]
            if not token.endswith("</w>"):
                continue
            word = token[:-4]
            if (word.isascii() and word.isalnum() and min_length <= len(word) <= max_length
                    and word not in seen):
                seen.add(word)
                words.append(word)
                if len(words) >= size:
                    break
    return tuple(words)


def default_fonts() -> list[str]:
    """Every usable TrueType file of Debian's fonts-liberation and fonts-dejavu-core."""
    fonts = []
    for root in FONT_ROOTS:
        if os.path.isdir(root):
            fonts += [str(p) for p in sorted(Path(root).glob("*.ttf"))
                      if not any(x in p.name for x in _EXCLUDED_FONTS)]
    return fonts


def resolve_fonts(fonts: Sequence[str] | None) -> list[str]:
    """The configured fonts, or the Debian defaults; fails naming the missing files or packages."""
    resolved = list(fonts) if fonts else default_fonts()
    if not resolved:
        raise FileNotFoundError(f"no TrueType fonts under {FONT_ROOTS}: install Debian's fonts-liberation "
                                "and fonts-dejavu-core, or set str.data.fonts")
    missing = [f for f in resolved if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(f"fonts not found: {missing}")
    return resolved


@functools.lru_cache(maxsize=1024)
def _font(path: str, px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, px)


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    import skimage.data

    arr = np.asarray(getattr(skimage.data, name)())
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return arr[..., :3].astype(np.uint8)


# Sample photographs without lettering of their own (text/page/logo would add foreign words).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "moon", "brick", "grass", "gravel",
          "hubble_deep_field", "immunohistochemistry", "retina")


# ----------------------------------------------------------------------------------------------
# Rendering


@dataclass
class RenderConfig:
    """How synthetic words vary (see the module docstring); every field is a config key."""

    fonts: list[str] | None = None
    font_px: tuple[int, int] = (22, 40)
    rotation_deg: float = 6.0
    blur_prob: float = 0.4
    blur_radius: tuple[float, float] = (0.3, 1.3)
    photo_prob: float = 0.35
    outline_prob: float = 0.15
    shadow_prob: float = 0.15
    noise_std: tuple[float, float] = (0.0, 10.0)
    jpeg_quality: tuple[int, int] = (45, 95)
    uppercase_prob: float = 0.3
    titlecase_prob: float = 0.2
    random_word_prob: float = 0.25
    lexicon_size: int = 20000
    min_contrast: float = 70.0
    _fonts: list[str] = field(default_factory=list, repr=False)

    def __post_init__(self):
        self._fonts = resolve_fonts(self.fonts)

    @classmethod
    def from_dict(cls, cfg: dict | None) -> "RenderConfig":
        cfg = dict(cfg or {})
        known = {f for f in cls.__dataclass_fields__ if not f.startswith("_")}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"unknown word-rendering keys {unknown}; known: {sorted(known)}")
        for key in ("font_px", "blur_radius", "noise_std", "jpeg_quality"):
            if key in cfg:
                cfg[key] = tuple(cfg[key])
        return cls(**cfg)


def _luma(rgb) -> np.ndarray:
    rgb = np.asarray(rgb, dtype=np.float32)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _background(rng: np.random.Generator, cfg: RenderConfig, w: int, h: int) -> np.ndarray:
    """Float RGB pixels: a photo crop, a gradient, or a flat colour, plus Gaussian noise."""
    if rng.random() < cfg.photo_prob:
        photo = _photo(PHOTOS[rng.integers(len(PHOTOS))])
        ph, pw = photo.shape[:2]
        scale = rng.uniform(0.15, 0.6) * min(ph / h, pw / w)
        cw, ch = max(2, int(w * scale)), max(2, int(h * scale))
        x0, y0 = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
        crop = Image.fromarray(photo[y0:y0 + ch, x0:x0 + cw]).resize((w, h), Image.BILINEAR)
        arr = np.asarray(crop, dtype=np.float32)
        # Flatten the photo's contrast so the word stays the most salient thing.
        arr = arr.mean() + rng.uniform(0.3, 0.7) * (arr - arr.mean())
    elif rng.random() < 0.5:
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        t = np.linspace(0, 1, w if rng.random() < 0.7 else h, dtype=np.float32)
        t = t[None, :, None] if t.size == w else t[:, None, None]
        arr = np.broadcast_to(c0 + t * (c1 - c0), (h, w, 3)).astype(np.float32)
    else:
        arr = np.broadcast_to(rng.uniform(0, 255, 3), (h, w, 3)).astype(np.float32)
    std = rng.uniform(*cfg.noise_std)
    if std > 0:
        arr = arr + rng.normal(0, std, size=arr.shape)
    return np.clip(arr, 0, 255)


def _contrasting_colour(rng: np.random.Generator, luma: float, min_contrast: float) -> tuple[int, int, int]:
    """A random colour whose luminance differs from ``luma`` by at least ``min_contrast``."""
    for _ in range(50):
        rgb = rng.integers(0, 256, 3)
        if abs(float(_luma(rgb)) - luma) >= min_contrast:
            return tuple(int(v) for v in rgb)
    return (0, 0, 0) if luma > 127 else (255, 255, 255)


def case_variant(rng: np.random.Generator, word: str, cfg: RenderConfig) -> str:
    u = rng.random()
    if u < cfg.uppercase_prob:
        return word.upper()
    if u < cfg.uppercase_prob + cfg.titlecase_prob:
        return word[:1].upper() + word[1:].lower()
    return word.lower()


def random_word(rng: np.random.Generator, max_length: int, alphabet: str = CHARSET_36) -> str:
    """A random alphanumeric string: digits only (numbers) a quarter of the time."""
    length = int(rng.integers(1, max(2, min(max_length, 10)) + 1))
    chars = string.digits if rng.random() < 0.25 else alphabet
    return "".join(chars[i] for i in rng.integers(0, len(chars), length))


def draw_word(rng: np.random.Generator, word: str, cfg: RenderConfig) -> Image.Image:
    """Render ``word`` (as given: no case change) into a tight RGB word image with margins."""
    font_path = cfg._fonts[rng.integers(len(cfg._fonts))]
    px = int(rng.integers(cfg.font_px[0], cfg.font_px[1] + 1))
    font = _font(font_path, px)
    outline = rng.random() < cfg.outline_prob
    shadow = (not outline) and rng.random() < cfg.shadow_prob
    stroke = max(1, px // 16) if outline else 0
    left, top, right, bottom = font.getbbox(word, stroke_width=stroke)
    tw, th = max(1, right - left), max(1, bottom - top)
    margin = int(math.ceil(0.25 * px)) + stroke + 2
    layer = Image.new("RGBA", (tw + 2 * margin, th + 2 * margin), (0, 0, 0, 0))
    origin = (margin - left, margin - top)

    angle = float(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))
    # Size the canvas for the rotated text block, then pad by a random amount (tight or loose crops).
    rad = math.radians(abs(angle))
    rw = int(math.ceil(tw * math.cos(rad) + th * math.sin(rad)))
    rh = int(math.ceil(tw * math.sin(rad) + th * math.cos(rad)))
    pad_x = int(rng.integers(1, max(2, int(0.3 * th)) + 1))
    pad_y = int(rng.integers(1, max(2, int(0.35 * th)) + 1))
    w, h = rw + 2 * pad_x, rh + 2 * pad_y
    background = _background(rng, cfg, w, h)
    luma = float(_luma(background).mean())
    ink = _contrasting_colour(rng, luma, cfg.min_contrast)

    draw = ImageDraw.Draw(layer)
    if shadow:
        off = max(1, px // 15)
        shade = (0, 0, 0, 160) if luma > 100 else (255, 255, 255, 140)
        draw.text((origin[0] + off, origin[1] + off), word, font=font, fill=shade)
    outline_rgb = _contrasting_colour(rng, float(_luma(ink)), cfg.min_contrast) if outline else None
    draw.text(origin, word, font=font, fill=(*ink, 255), stroke_width=stroke,
              stroke_fill=(*outline_rgb, 255) if outline_rgb else None)
    if angle:
        layer = layer.rotate(angle, resample=Image.BICUBIC, expand=True)
    # Centre the (rotated) glyph box on the canvas: crop the layer to its ink first.
    bbox = layer.getbbox() or (0, 0, layer.width, layer.height)
    layer = layer.crop(bbox)
    canvas = Image.fromarray(background.astype(np.uint8), "RGB")
    canvas.paste(layer, ((w - layer.width) // 2, (h - layer.height) // 2), layer)
    if rng.random() < cfg.blur_prob:
        canvas = canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(*cfg.blur_radius))))
    return canvas


def render_word(rng: np.random.Generator, cfg: RenderConfig, lexicon: Sequence[str],
                max_length: int) -> tuple[bytes, str]:
    """One synthetic training/test word: ``(jpeg_bytes, label)``, label as rendered (with case)."""
    if rng.random() < cfg.random_word_prob or not lexicon:
        word = random_word(rng, max_length)
    else:
        word = lexicon[int(rng.integers(len(lexicon)))]
    word = case_variant(rng, word, cfg)
    image = draw_word(rng, word, cfg)
    return encode_jpeg(image, int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))), word


def encode_jpeg(image: Image.Image, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def synthetic_words(n: int, seed: int, stream: int, cfg: RenderConfig, max_length: int,
                    exclude: Iterable[str] = ()) -> Iterator[tuple[bytes, str]]:
    """``n`` rendered words; word ``i`` is drawn from ``default_rng([seed, stream, i])``, so a set
    is reproducible and a test set (another ``stream``) never repeats a training image.
    ``exclude``: lexicon words (case-insensitive) that must not be rendered, e.g. a benchmark's."""
    banned = {w.lower() for w in exclude}
    lexicon = [w for w in bpe_lexicon(max_length, cfg.lexicon_size) if w.lower() not in banned]
    for i in range(int(n)):
        rng = np.random.default_rng([int(seed), int(stream), i])
        yield render_word(rng, cfg, lexicon, max_length)


# ----------------------------------------------------------------------------------------------
# Demo crops


def polygon_crop_box(polygon: Sequence[Sequence[float]], width: int, height: int,
                     pad: float = 0.12) -> tuple[int, int, int, int] | None:
    """Axis-aligned crop box around a word polygon, padded by ``pad`` x its height on every side
    (benchmark crops keep a little context), clipped to the image; None when nothing is left."""
    pts = np.asarray(polygon, dtype=np.float64)
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    margin = pad * (y1 - y0)
    box = (max(0, int(math.floor(x0 - margin))), max(0, int(math.floor(y0 - margin))),
           min(width, int(math.ceil(x1 + margin))), min(height, int(math.ceil(y1 + margin))))
    if box[2] - box[0] < 2 or box[3] - box[1] < 2:
        return None
    return box


def crops_from_sample(image: Image.Image, truth: dict) -> list[tuple[Image.Image, str]]:
    """The ground-truth word crops of one demo sample: ``(crop, word)`` in reading order."""
    words, polygons = truth.get("words") or [], truth.get("word_polygons") or []
    if len(words) != len(polygons):
        raise ValueError(f"{len(words)} words but {len(polygons)} polygons in a demo sample's truth")
    out = []
    for word, poly in zip(words, polygons):
        box = polygon_crop_box(poly, image.width, image.height)
        if box is not None:
            out.append((image.crop(box), word))
    return out


def demo_word_crops(generator: dict, n_images: int, stream: int = DEMO_CROP_STREAM
                    ) -> Iterator[tuple[bytes, str]]:
    """Word crops of ``n_images`` held-out demo images with text, made by the demo generator with
    the dataset's own settings (same fonts, sizes, banners, rotation as the pool the CLIPs were
    trained on) from rng stream ``EVAL_SEED_OFFSET + stream``, never used for the pool."""
    from .demo import EVAL_SEED_OFFSET, check_fonts, demo_config, make_sample

    cfg = demo_config(generator)
    check_fonts(cfg)
    seed = int(cfg["seed"])
    for i in range(int(n_images)):
        rng = np.random.default_rng([seed, EVAL_SEED_OFFSET + stream, i])
        key = f"crop{i:06d}"
        sample = make_sample(rng, cfg, key, f"demo://seed{seed}/words/{key}.jpg", with_text=True)
        image = Image.open(io.BytesIO(sample["jpg"])).convert("RGB")
        for crop, word in crops_from_sample(image, sample["json"]["truth"]):
            # PNG: the crop is already a JPEG decode; a second lossy pass would add artefacts.
            buf = io.BytesIO()
            crop.save(buf, format="PNG")
            yield buf.getvalue(), word


# ----------------------------------------------------------------------------------------------
# LMDB (the standard STR layout)


def lmdb_key(kind: str, index: int) -> bytes:
    """``image-000000001`` / ``label-000000001``: one-based, nine digits, as the benchmarks."""
    return f"{kind}-{index:09d}".encode()


def write_lmdb(items: Iterable[tuple[bytes, str]], out_dir: str | os.PathLike, total: int | None = None,
               desc: str = "lmdb") -> int:
    """Write ``(image_bytes, label)`` items as a standard STR LMDB directory, atomically;
    returns the sample count. Commits in chunks so memory stays flat for large sets."""
    import lmdb

    n = 0
    with atomic_dir(out_dir) as tmp:
        env = lmdb.open(str(tmp), map_size=LMDB_MAP_SIZE, subdir=True, lock=False)
        try:
            txn = env.begin(write=True)
            for image, label in tqdm(items, total=total, desc=desc, unit="img", mininterval=5):
                n += 1
                txn.put(lmdb_key("image", n), image)
                txn.put(lmdb_key("label", n), label.encode("utf-8"))
                if n % 2000 == 0:
                    txn.commit()
                    txn = env.begin(write=True)
            txn.put(b"num-samples", str(n).encode())
            txn.commit()
        finally:
            env.close()
    return n


class LmdbWords:
    """Read-only access to a standard STR LMDB: ``len()``, ``[i]`` -> ``(PIL RGB image, label)``
    for i = 0..n-1 (stored one-based), and ``label(i)`` without decoding the image.

    The environment is opened lazily per process, so an instance can go to DataLoader workers.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        if not os.path.isfile(os.path.join(self.path, "data.mdb")):
            raise FileNotFoundError(f"{self.path}: not an LMDB directory (no data.mdb)")
        self._env = None
        self._pid = None
        with self._open().begin() as txn:
            raw = txn.get(b"num-samples")
        if raw is None:
            raise ValueError(f"{self.path}: no num-samples key; not a standard STR LMDB")
        self.n = int(raw.decode())

    def _open(self):
        import lmdb

        if self._env is None or self._pid != os.getpid():
            self._env = lmdb.open(self.path, readonly=True, lock=False, readahead=False, meminit=False,
                                  subdir=True)
            self._pid = os.getpid()
        return self._env

    def __len__(self) -> int:
        return self.n

    def __getstate__(self):
        return {"path": self.path, "n": self.n, "_env": None, "_pid": None}

    def _get(self, kind: str, i: int) -> bytes:
        if not 0 <= i < self.n:
            raise IndexError(i)
        with self._open().begin() as txn:
            value = txn.get(lmdb_key(kind, i + 1))
        if value is None:
            raise KeyError(f"{self.path}: missing {lmdb_key(kind, i + 1).decode()}")
        return value

    def label(self, i: int) -> str:
        return self._get("label", i).decode("utf-8")

    def image(self, i: int) -> Image.Image:
        return Image.open(io.BytesIO(self._get("image", i))).convert("RGB")

    def __getitem__(self, i: int) -> tuple[Image.Image, str]:
        return self.image(i), self.label(i)

    def labels(self) -> list[str]:
        return [self.label(i) for i in range(self.n)]


def sample_key(i: int) -> str:
    """The ``__key__`` of an LMDB sample in per-sample tables: its one-based index, nine digits."""
    return f"{i + 1:09d}"


def usable_indices(words: LmdbWords, charset: str, max_length: int) -> tuple[list[int], dict[str, int]]:
    """Indices of samples a model can be trained or scored on, and skip counts by reason."""
    keep, skipped = [], {}
    for i in range(len(words)):
        reason = skip_reason(words.label(i), charset, max_length)
        if reason is None:
            keep.append(i)
        else:
            skipped[reason] = skipped.get(reason, 0) + 1
    return keep, skipped


# ----------------------------------------------------------------------------------------------
# The str_data stage


def run_str_data(name: str, out_dir: str, out_json: str, data_cfg: dict, seed: int, max_length: int,
                 generator: dict | None = None, exclude: Sequence[str] = ()) -> dict:
    """Write one built-in set: ``train`` and ``synth`` (rendered words, different rng streams) or
    ``demo`` (ground-truth word crops of held-out demo images); counts go to ``out_json``."""
    from .io import write_json

    data_cfg = dict(data_cfg)
    sizes = {"train": data_cfg.pop("train_samples"), "synth": data_cfg.pop("test_samples")}
    demo_images = data_cfg.pop("demo_images")
    if name in sizes:
        cfg = RenderConfig.from_dict(data_cfg)
        stream = ("train", "synth").index(name)
        n = write_lmdb(synthetic_words(sizes[name], seed, stream, cfg, max_length, exclude), out_dir,
                       total=sizes[name], desc=f"render {name}")
        info = {"name": name, "kind": "rendered", "n_samples": n, "seed": seed, "stream": stream,
                "fonts": len(cfg._fonts), "lexicon_size": cfg.lexicon_size,
                "excluded_words": len(set(w.lower() for w in exclude))}
    elif name == "demo":
        if generator is None:
            raise ValueError("demo crops need the study dataset's demo generator settings")
        n = write_lmdb(demo_word_crops(generator, demo_images), out_dir, desc="demo crops")
        info = {"name": name, "kind": "demo_crops", "n_images": int(demo_images), "n_samples": n,
                "stream": DEMO_CROP_STREAM}
    else:
        raise ValueError(f"unknown built-in STR set {name!r}; built-in: train, synth, demo")
    labels = LmdbWords(out_dir).labels()
    info["mean_label_length"] = float(np.mean([len(x) for x in labels])) if labels else None
    info["distinct_labels"] = len({benchmark_label(x) for x in labels})
    write_json(info, out_json)
    return info
