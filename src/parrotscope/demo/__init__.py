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

The package holds one module per concern:

* :mod:`~parrotscope.demo.config`: the settings (:data:`DEFAULTS`, :func:`demo_config`) and the
  vocabulary rule that makes ground truth sound (:func:`template_words`);
* :mod:`~parrotscope.demo.fonts` and :mod:`~parrotscope.demo.backgrounds`: fonts, photographs and
  the backgrounds made of them;
* :mod:`~parrotscope.demo.concepts`: the coloured shapes, where they sit and how big they are;
* :mod:`~parrotscope.demo.text`: poster words fitted, placed and rendered on an image;
* :mod:`~parrotscope.demo.captions`: caption templates, captions and the CoTR of a caption;
* :mod:`~parrotscope.demo.samples`: one sample from all of the above, and its tar members;
* :mod:`~parrotscope.demo.pool` (training shards) and :mod:`~parrotscope.demo.eval_sets`
  (held-out sets): the files the workflow writes.

The configuration keys are described in :mod:`parrotscope.demo.config`.
"""

from .backgrounds import PHOTO_CONTENT, make_background
from .captions import cotr, generic_caption, text_caption, visual_description
from .concepts import COLOR_RGB, SHAPE_NAMES, Concept, draw_concept, sample_concept
from .config import DEFAULTS, concept_classes, demo_config, template_words
from .eval_sets import EVAL_KINDS, write_eval_set
from .fonts import check_fonts
from .pool import write_demo_shard
from .samples import EVAL_SEED_OFFSET, encode_jpeg, make_sample
from .text import TextBlock, render_text

__all__ = [
    "COLOR_RGB",
    "DEFAULTS",
    "EVAL_KINDS",
    "EVAL_SEED_OFFSET",
    "PHOTO_CONTENT",
    "SHAPE_NAMES",
    "Concept",
    "TextBlock",
    "check_fonts",
    "concept_classes",
    "cotr",
    "demo_config",
    "draw_concept",
    "encode_jpeg",
    "generic_caption",
    "make_background",
    "make_sample",
    "render_text",
    "sample_concept",
    "template_words",
    "text_caption",
    "visual_description",
    "write_demo_shard",
    "write_eval_set",
]
