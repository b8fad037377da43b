"""Throughput of Telea text removal (the paper's inpainting) on images with realistic word masks.

Run on demand (not a test):

    .venv/bin/python bench/bench_telea.py                 # 200 images at 128 px, 50 at 512 px
    .venv/bin/python bench/bench_telea.py --n 50 --n-large 10 --no-write   # quick look

Images are LAION-like: a noisy two-colour gradient with 1-3 words in a Liberation/DejaVu font
whose size scales with the image (1/16 to 1/5 of its height), so the masked share of the image is
similar at both sizes. Masks are built the way the stage builds them: one box per word (the
spotter's word polygons), rasterised by :func:`parrotscope.inpaint.rasterise` and dilated.

Two rates per row, best of interleaved repeats, one process, one thread (OpenCV's Telea is serial):

* *inpaint*: :class:`parrotscope.inpaint.TeleaInpainter` (channel swaps included);
* *inpaint + PNG*: the same plus encoding the inpainted image and its mask as the stage writes
  them (lossless PNG), i.e. the stage's per-image work apart from decoding and tar writing.

The markdown table is printed and, unless ``--no-write``, written under ``## inpaint (Telea)`` in
docs/BENCHMARKS.md (other sections of that file are kept).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from parrotscope.inpaint import TeleaInpainter, encode_png, rasterise

from benchdoc import publish

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## inpaint (Telea)"
FONTS = [
    "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
]
VOCAB = "sale parrot coffee hello world summer organic fresh love home free shop open new best music".split()


def available_fonts() -> list[str]:
    fonts = [f for f in FONTS if Path(f).is_file()]
    if not fonts:
        raise SystemExit(f"no font found among {FONTS}: install Debian's fonts-liberation or fonts-dejavu-core")
    return fonts


def noisy_gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:size, 0:size]
    t = (np.cos(angle) * xs / size + np.sin(angle) * ys / size + 1) / 2
    image = c0 + (c1 - c0) * t[..., None] + rng.normal(0, 8, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def render(rng: np.random.Generator, size: int, fonts: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
    """One image with 1-3 words on a line, and one box polygon per word (as a spotter returns)."""
    canvas = Image.fromarray(noisy_gradient(rng, size))
    draw = ImageDraw.Draw(canvas)
    words = [str(w) for w in rng.choice(VOCAB, size=int(rng.integers(1, 4)), replace=False)]
    font_size = int(rng.integers(max(8, size // 16), size // 5))
    while True:
        font = ImageFont.truetype(fonts[int(rng.integers(len(fonts)))], font_size)
        line_w = draw.textbbox((0, 0), " ".join(words), font=font)[2]
        if line_w < size - 8 or font_size <= 8:
            break
        font_size -= 2
    x = float(rng.uniform(4, max(5, size - line_w - 4)))
    y = float(rng.uniform(4, max(5, size - font_size * 1.3 - 4)))
    fill = (20, 20, 20) if rng.random() < 0.5 else (235, 235, 235)
    polygons = []
    for word in words:
        left, top, right, bottom = draw.textbbox((x, y), word, font=font)
        draw.text((x, y), word, font=font, fill=fill)
        polygons.append(np.array([[left, top], [right, top], [right, bottom], [left, bottom]], float))
        x = draw.textbbox((x, y), word + " ", font=font)[2]
    return np.asarray(canvas, dtype=np.uint8).copy(), polygons


def make_set(n: int, size: int, dilate_px: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    fonts = available_fonts()
    out = []
    for _ in range(n):
        image, polygons = render(rng, size, fonts)
        out.append((image, rasterise(polygons, size, size, dilate_px)))
    return out


def rate(fn, items, repeats: int) -> float:
    """Best images/s of ``fn`` over ``items`` in ``repeats`` runs."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for image, mask in items:
            fn(image, mask)
        best = min(best, time.perf_counter() - start)
    return len(items) / best


def measure(items, radius: float, repeats: int) -> dict[str, float]:
    telea = TeleaInpainter({"radius": radius})

    def inpaint(image, mask):
        return telea.inpaint_batch([image], [mask], ["k"])[0]

    def inpaint_png(image, mask):
        encode_png(inpaint(image, mask), rgb=True)
        encode_png(mask, rgb=False)

    results = {"inpaint": 0.0, "inpaint_png": 0.0}
    for _ in range(repeats):  # interleaved, so a burst of load on the shared cores hits both alike
        results["inpaint"] = max(results["inpaint"], rate(inpaint, items, 1))
        results["inpaint_png"] = max(results["inpaint_png"], rate(inpaint_png, items, 1))
    results["mask_fraction"] = float(np.mean([np.count_nonzero(m) / m.size for _, m in items]))
    return results


def markdown(rows: list[tuple[int, int, float, dict]], dilate_px: int, load: float) -> str:
    lines = [
        SECTION,
        "",
        f"Measured {datetime.date.today().isoformat()} by `bench/bench_telea.py` on {platform.machine()} "
        f"Linux, {os.cpu_count()} CPU cores, Python {platform.python_version()}, OpenCV {cv2.__version__}; "
        f"one thread, best of interleaved repeats; 1-minute load average {load:.1f} when the run started. "
        f"Images: LAION-like noisy gradients with 1-3 rendered words; masks: one box per word, dilated "
        f"by {dilate_px} px (`rasterise`). *inpaint*: `TeleaInpainter.inpaint_batch` (`cv2.inpaint`, "
        f"`INPAINT_TELEA`, channel swaps included); *inpaint + PNG*: plus encoding the result and its "
        f"mask as lossless PNG, as the stage writes them.",
        "",
        "| image | images | radius | mean mask share | inpaint img/s | inpaint + PNG img/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for size, n, radius, r in rows:
        lines.append(f"| {size}x{size} | {n} | {radius:g} | {r['mask_fraction']:.3f} | {r['inpaint']:.0f} | "
                     f"{r['inpaint_png']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="number of 128x128 images (default 200)")
    parser.add_argument("--n-large", type=int, default=50, help="number of 512x512 images (default 50)")
    parser.add_argument("--radius", type=float, nargs="+", default=[3.0, 5.0],
                        help="Telea radii to measure (default: 3, the stage's default, and 5)")
    parser.add_argument("--dilate-px", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "docs/BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args(argv)

    cv2.setNumThreads(1)
    load = os.getloadavg()[0]
    sets = [(128, make_set(args.n, 128, args.dilate_px, seed=0)),
            (512, make_set(args.n_large, 512, args.dilate_px, seed=1))]
    rows = [(size, len(items), radius, measure(items, radius, args.repeats))
            for size, items in sets for radius in args.radius]
    section = markdown(rows, args.dilate_px, load)
    publish(SECTION, section, args)


if __name__ == "__main__":
    main()
