"""Fonts of the rendered text: TrueType files, checked up front and loaded once per size."""

from __future__ import annotations

import functools
import os

from PIL import ImageFont

FONT_DIR = "/usr/share/fonts/truetype"


def check_fonts(cfg: dict) -> None:
    """Fail early, naming the Debian packages, if a configured font file is missing."""
    missing = [f for f in cfg["fonts"] if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(
            f"demo fonts not found: {missing}. Install Debian's fonts-liberation and "
            "fonts-dejavu-core, or set demo.fonts to TrueType files that exist."
        )


# A shard renders a few fonts at a few dozen sizes, over and over: loading each once per process
# saves most of the text-rendering time.
@functools.lru_cache(maxsize=512)
def load_font(path: str, px: int) -> ImageFont.FreeTypeFont:
    """The TrueType font at ``path`` in size ``px``, cached."""
    return ImageFont.truetype(path, px)
