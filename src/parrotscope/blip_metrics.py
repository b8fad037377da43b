"""Table 7's metrics: CIDEr for captions, VQA accuracy, retrieval recall@1 both ways.

CIDEr is pycocoevalcap's ``Cider`` (CIDEr-D as the COCO caption server computes it) on captions
tokenised as :func:`caption_tokens` does: lower case, punctuation removed, split on white space.
The server's PTBTokenizer is a Java program and needs a JVM, which this project does not install;
on the short lower-case captions of these sets the two tokenisations agree except for
contractions and hyphens, which PTB splits.

VQA accuracy is the VQA challenge's: an answer's accuracy is ``min(1, #humans who gave it / 3)``
averaged over the ten leave-one-out subsets of nine human answers, after the challenge's answer
normalisation (lower case, punctuation, articles, number words; :func:`normalize_answer`). It is
the metric of VQAv2 and TextVQA; ST-VQA's official metric is ANLS, and the paper's Table 7 reports
its ST-VQA column on the same accuracy scale, as here.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

import numpy as np

_PUNCT = re.compile(r"[^\w\s]")
_ARTICLES = {"a", "an", "the"}
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
            "seven": "7", "eight": "8", "nine": "9", "ten": "10"}


def caption_tokens(text: str) -> str:
    """A caption as CIDEr reads it: lower case, punctuation removed, single spaces."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def cider(references: Mapping[str, Sequence[str]], candidates: Mapping[str, str]) -> tuple[float, dict[str, float]]:
    """Corpus CIDEr-D (pycocoevalcap) of one candidate per image against its references, and each
    image's score. Scaled as papers report it (x100)."""
    from pycocoevalcap.cider.cider import Cider

    ids = sorted(candidates)
    if not ids:
        return float("nan"), {}
    gts = {i: [caption_tokens(r) for r in references[i]] for i in ids}
    res = {i: [caption_tokens(candidates[i])] for i in ids}
    score, per_image = Cider().compute_score(gts, res)
    return 100.0 * float(score), {i: 100.0 * float(s) for i, s in zip(ids, per_image)}


def normalize_answer(answer: str) -> str:
    """The VQA challenge's answer normalisation (the parts that apply to English short answers)."""
    words = _PUNCT.sub("", answer.lower().replace("\n", " ").replace("\t", " ")).split()
    return " ".join(_NUMBERS.get(w, w) for w in words if w not in _ARTICLES)


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """The VQA accuracy of one predicted answer given the human answers (usually ten)."""
    pred = normalize_answer(prediction)
    gold = [normalize_answer(a) for a in answers]
    if len(gold) < 2:
        return float(bool(gold) and pred == gold[0])
    scores = [min(1.0, sum(g == pred for j, g in enumerate(gold) if j != i) / 3.0) for i in range(len(gold))]
    return float(np.mean(scores))


def recall_at_1(sim: np.ndarray, text_image: Sequence[int], sim_t2i: np.ndarray | None = None) -> tuple[float, float]:
    """Image-to-text and text-to-image recall@1 of a score matrix ``sim[image, text]`` (for
    text-to-image ``sim_t2i`` where the two directions were ranked apart); ``text_image[t]`` is the
    image text ``t`` describes (an image may have several texts). Ties go to the first candidate."""
    owner = np.asarray(text_image)
    i2t = float(np.mean(owner[sim.argmax(1)] == np.arange(sim.shape[0])))
    t2i = float(np.mean((sim if sim_t2i is None else sim_t2i).argmax(0) == owner))
    return i2t, t2i
