"""Captions: templates, the caption of each kind of image, and the CoTR of a caption."""

from __future__ import annotations

import numpy as np

from .concepts import Concept, position_phrase, size_word

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
#: The caption kinds of a text image and the config keys of their probabilities, in the order
#: they are drawn from one uniform: a kind appended here leaves the earlier kinds' draws as they were.
CAPTION_KINDS = {"exact": "caption_exact_prob", "mixed": "caption_mixed_prob", "none": "caption_none_prob",
                 "partial": "caption_partial_prob"}
#: The other sentences of an MMC4-like document (parrotscope.demo.documents): web prose that names
#: no colour, shape or poster word, so an image assigned one of them has a caption without parrots.
FILLER_SENTENCES = (
    "thanks for reading this post",
    "here are some pictures from our trip",
    "leave a comment below if you have any questions",
    "we will be back next week with more",
    "the weather was lovely all day",
    "scroll down to see the rest of the photos",
    "everything was made by hand",
    "this is one of my favourite projects so far",
    "the kids had a great time",
    "more details are in the links below",
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
    """An uninformative web caption ("untitled", "img1234"): neither visual nor parroting."""
    return GENERIC_TEMPLATES[rng.integers(len(GENERIC_TEMPLATES))].format(
        n=int(rng.integers(100, 10000))
    )


def text_caption(
    rng: np.random.Generator, cfg: dict, concept: Concept, bg_phrase: str, words: list[str]
) -> tuple[str, str, list[str]]:
    """(caption, caption_kind, parrot_words) for an image whose rendered words are ``words``."""
    # One uniform draw whatever the number of kinds: a config without partial captions draws
    # the same kinds (and so the same pool) as before they existed.
    kind = list(CAPTION_KINDS)[int(rng.choice(len(CAPTION_KINDS), p=[cfg[k] for k in CAPTION_KINDS.values()]))]
    if kind == "exact":
        return " ".join(words), kind, list(words)
    if kind == "partial":
        return partial_caption(rng, cfg, concept, words), kind, list(words)
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


def visual_words(concept: Concept, cfg: dict) -> list[str]:
    """Distinct words that describe what is drawn: size, colour, shape, then where it sits."""
    words = [size_word(concept, cfg), concept.color, concept.shape,
             *position_phrase(concept, cfg["image_size"]).split()]
    return list(dict.fromkeys(words))


def partial_caption(rng: np.random.Generator, cfg: dict, concept: Concept, words: list[str]) -> str:
    """The rendered words followed by m visual words ("SALE OPEN red circle"): CoTR is
    len(words) / (len(words) + m), so a pool of such captions spreads CoTR over (0, 1) the way web
    captions that quote a sign and name a little of the picture do. m is drawn from the row of
    ``partial_visual_words_probs`` for this many rendered words (the last row for more words)."""
    rows = cfg["partial_visual_words_probs"]
    probs = rows[min(len(words), len(rows)) - 1]
    visual = visual_words(concept, cfg)
    m = min(1 + int(rng.choice(len(probs), p=probs)), len(visual))
    keep = sorted(rng.choice(len(visual), size=m, replace=False))
    return " ".join([*words, *(visual[i] for i in keep)])


def cotr(caption: str, words: list[str]) -> float:
    """Co-Embedded Text Rate of Algorithm 1, case-insensitive: |caption ∩ words| / |caption|."""
    cap = {w.lower() for w in caption.split()}
    if not cap:
        return 0.0
    return len(cap & {w.lower() for w in words}) / len(cap)
