"""Poster words rendered on an image: fitted inside it, placed clear of the shape, made legible."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .backgrounds import luminance
from .concepts import Concept, rotate_points
from .fonts import load_font

#: Neutral text and banner colours: text never takes a concept colour, so it cannot be read as one.
DARK_INKS = ((15, 15, 15), (25, 30, 80), (80, 20, 20), (20, 55, 25), (50, 50, 50))
LIGHT_INKS = ((250, 250, 250), (255, 242, 205), (225, 225, 225), (205, 240, 255))


@dataclass
class TextBlock:
    """Rendered words and where they went: the ground truth of one image's embedded text."""

    words: list[str]
    polygons: list[list[list[float]]]
    font: str
    font_px: int


def _case_words(rng: np.random.Generator, cfg: dict, words: list[str]) -> list[str]:
    """The words in upper, title or lower case, one case for all of them."""
    u = rng.random()
    if u < cfg["uppercase_prob"]:
        return [w.upper() for w in words]
    if u < cfg["uppercase_prob"] + cfg["titlecase_prob"]:
        return [w[:1].upper() + w[1:].lower() for w in words]
    return [w.lower() for w in words]


def _layout_lines(words: list[str], two_lines: bool) -> list[list[str]]:
    """The words on one line, or on two with the longer half first."""
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
    """Width and height of the bounding box of a ``w`` x ``h`` box turned by ``angle`` degrees."""
    t = math.radians(abs(angle))
    return w * math.cos(t) + h * math.sin(t), w * math.sin(t) + h * math.cos(t)


def _centre_within(rng: np.random.Generator, extent: float, size: int) -> float:
    """A random centre that keeps an object of ``extent`` px inside ``size`` px (1 px margin)."""
    margin = min(1.0, max((size - extent) / 2, 0.0))
    lo, hi = extent / 2 + margin, size - extent / 2 - margin
    return float(rng.uniform(lo, hi)) if hi > lo else size / 2


def _box_overlap(a, b) -> float:
    """Area shared by two (x0, y0, x1, y1) boxes."""
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


@dataclass
class _Layout:
    """A text block fitted inside the image, not yet placed: its lines in a font, and its size."""

    lines: list[list[str]]
    font: ImageFont.FreeTypeFont
    px: int
    angle: float  # degrees, counter-clockwise
    stroke: int  # outline width, px (0: no outline)
    pad: float  # space between the words and the banner's edge, px
    origins: list[tuple[float, float]]  # each word's top-left, relative to the block's
    width: float  # the unrotated block, outline included, padding not
    height: float
    extent: tuple[float, float]  # width and height of the rotated block with its padding

    @property
    def words(self) -> list[str]:
        return _flatten(self.lines)


def render_text(
    img: Image.Image, rng: np.random.Generator, cfg: dict, concept: Concept
) -> TextBlock:
    """Render 1-3 vocabulary words on the image, in place, and return their ground truth.

    The block is fitted inside the image (splitting over two lines, shrinking the font, and as a
    last resort dropping words), then placed where it covers at most ``max_shape_occlusion`` of
    the shape's box when such a place is found among random candidates.
    """
    # Every draw from ``rng`` happens in this order (words, style, place, colours): the order is
    # part of what a seed means, so reordering them changes every shard.
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
    # Outline and padding follow the drawn font size; fitting keeps them when it shrinks the font.
    stroke = max(1, px // 14) if outline else 0
    pad = 0.22 * px if banner else 1.0

    layout = _fit(words, font_path, px, min_px, angle, two_lines, stroke, pad, size)
    centre = _place(rng, layout.extent, concept.box(), cfg["max_shape_occlusion"], size)
    polygons = _draw(img, rng, layout, centre, banner)
    return TextBlock(layout.words, polygons, os.path.basename(font_path), layout.px)


def _fit(
    words: list[str],
    font_path: str,
    px: int,
    min_px: int,
    angle: float,
    two_lines: bool,
    stroke: int,
    pad: float,
    size: int,
) -> _Layout:
    """Fit the block: the rotated block plus padding must fit in 94% of the side.

    What gives way, in order: one line becomes two, the font shrinks to ``min_px``, words are
    dropped from the end, and a last word is straightened and shrunk below ``min_px``.
    """
    while True:
        font = load_font(font_path, px)
        lines = _layout_lines(words, two_lines)
        origins, bw, bh = _measure(lines, font, stroke)
        ew, eh = _rotated_extent(bw + 2 * pad, bh + 2 * pad, angle)
        if ew <= 0.94 * size and eh <= 0.94 * size:
            return _Layout(lines, font, px, angle, stroke, pad, origins, bw, bh, (ew, eh))
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


def _place(
    rng: np.random.Generator,
    extent: tuple[float, float],
    shape_box: tuple[float, float, float, float],
    max_occlusion: float,
    size: int,
) -> tuple[float, float]:
    """The block's centre: random candidates, the first that leaves the shape visible enough
    (covers at most ``max_occlusion`` of its box), else the one that covers least."""
    ew, eh = extent
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
        if occlusion <= max_occlusion:
            break
    _, cx, cy = best
    return cx, cy


def _local_luma(
    img: Image.Image, centre: tuple[float, float], extent: tuple[float, float]
) -> float:
    """Mean luma of the image under the block's box: what the ink must stand out against (taken
    after the shape is drawn, since the text may cover part of it)."""
    size = img.size[0]
    (cx, cy), (ew, eh) = centre, extent
    arr = np.asarray(img, dtype=np.float32)
    bx0, by0 = int(max(cx - ew / 2, 0)), int(max(cy - eh / 2, 0))
    bx1, by1 = int(min(cx + ew / 2, size)) + 1, int(min(cy + eh / 2, size)) + 1
    return float(luminance(arr[by0:by1, bx0:bx1]).mean())


def _draw(
    img: Image.Image,
    rng: np.random.Generator,
    layout: _Layout,
    centre: tuple[float, float],
    banner: bool,
) -> list[list[list[float]]]:
    """Draw the block centred at ``centre`` (banner, words, rotation), in place; return each
    word's polygon in image coordinates."""
    cx, cy = centre
    font, stroke, pad, angle = layout.font, layout.stroke, layout.pad, layout.angle
    bw, bh = layout.width, layout.height
    x0, y0 = cx - bw / 2, cy - bh / 2  # top-left of the unrotated text block
    local_luma = _local_luma(img, centre, layout.extent)

    # The block is drawn upright on a transparent layer, which is then turned as a whole.
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
        seen = (alpha * float(luminance(banner_rgb)) + (255 - alpha) * local_luma) / 255
        ink, outline_rgb = _pick_ink(rng, seen)
    else:
        ink, outline_rgb = _pick_ink(rng, local_luma)

    polygons = []
    for word, (ox, oy) in zip(layout.words, layout.origins, strict=True):
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
                for px_, py_ in rotate_points(corners, angle, (cx, cy))
            ]
        )
    if angle:
        layer = layer.rotate(angle, resample=Image.BICUBIC, center=(cx, cy))
    img.paste(layer, (0, 0), layer)
    return polygons


def _flatten(lines: list[list[str]]) -> list[str]:
    return [w for line in lines for w in line]
