"""Backgrounds of the demo images: crops of scikit-image's sample photographs, or gradients."""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image

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

#: What a caption calls a gradient background.
BACKGROUND_GRADIENT_PHRASES = ("a gradient background", "a plain background")


# Photographs are decoded once per process: every sample with a photo background crops one.
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


def luminance(rgb) -> np.ndarray:
    """Luma (ITU-R BT.601 weights) of RGB values, in their own units."""
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
    gray = luminance(arr)[..., None]
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
