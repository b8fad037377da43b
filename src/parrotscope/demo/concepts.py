"""The visual concepts: a coloured shape per image, drawn, and described by position and size."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

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

#: Words of :func:`position_phrase` and :func:`size_word`, which captions use.
POSITION_WORDS = ("top", "bottom", "left", "right", "center", "side", "corner")
SIZE_WORDS = ("small", "large")


# Shared with the text layout (parrotscope.demo.text): a word's ground-truth polygon must turn
# exactly as Image.rotate turns the rendered text layer; shapes use the same convention.
def rotate_points(points, angle_deg: float, center) -> list[tuple[float, float]]:
    """Rotate points counter-clockwise (on screen) about ``center``, as ``Image.rotate`` does."""
    t = math.radians(angle_deg)
    c, s = math.cos(t), math.sin(t)
    cx, cy = center
    return [(cx + (x - cx) * c + (y - cy) * s, cy - (x - cx) * s + (y - cy) * c) for x, y in points]


@dataclass
class Concept:
    """One image's visual concept: a shape of a colour, its centre and size in pixels, its turn."""

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
        return rotate_points([(cx + x, cy + y) for x, y in pts], angle, (cx, cy))
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
    return rotate_points(pts, angle, (cx, cy))


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
    """"small" or "large": the shape's diameter below or above the middle of ``shape_size``."""
    lo, hi = cfg["shape_size"]
    return "small" if concept.diameter / cfg["image_size"] < (lo + hi) / 2 else "large"
