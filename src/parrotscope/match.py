"""Stage ``match``: the Co-Embedded Text Rate (CoTR) of every sample, exact and fuzzy.

Exact CoTR is the paper's Algorithm 1: word *sets* from ``str.split()``, and
``|caption words ∩ spotted words| / |caption words|``. The only addition is a configured word
normalisation applied to both sides before the sets are built (see :func:`normalise_word`); with
every normalisation switched off the result is Algorithm 1 verbatim.

Fuzzy CoTR counts a caption word as co-embedded when its normalised Levenshtein similarity to
some spotted word reaches a threshold (the paper says only "Levenshtein distance"; threshold and
normalisation are not published, so both are config keys).
"""

from __future__ import annotations

import json
import math
import string
import sys
import unicodedata
from dataclasses import dataclass

import pandas as pd
from rapidfuzz.distance import Levenshtein
from tqdm import tqdm

from .io import read_parquet, write_parquet

_PUNCT = string.punctuation + "“”‘’«»…–—·•¡¿"


@dataclass(frozen=True)
class Normalisation:
    """How words are normalised before matching (applied to caption and spotted words alike)."""

    lowercase: bool = True
    strip_punctuation: bool = True
    strip_accents: bool = True

    @classmethod
    def from_config(cls, cfg: dict) -> "Normalisation":
        return cls(**{k: bool(cfg[k]) for k in ("lowercase", "strip_punctuation", "strip_accents")})


def normalise_word(word: str, norm: Normalisation) -> str:
    """Normalise one whitespace-delimited word.

    Punctuation is stripped only at the word's edges ("Mine!" -> "Mine", "e-mail" stays), and
    accents are removed because OCR engines return spurious diacritics ("ápple").
    """
    if norm.strip_accents:
        word = "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))
    if norm.strip_punctuation:
        word = word.strip(_PUNCT)
    if norm.lowercase:
        word = word.casefold()
    return word


def word_set(text: str, norm: Normalisation) -> set[str]:
    """The set of normalised words of ``text`` (``str.split()``, as Algorithm 1); empties dropped."""
    words = (normalise_word(w, norm) for w in text.split())
    return {w for w in words if w}


def co_embedded(caption_words: set[str], ocr_words: set[str]) -> set[str]:
    """Algorithm 1's intersection."""
    return caption_words & ocr_words


def max_edits(length: int, threshold: float) -> int:
    """The most edits a pair whose longer word has ``length`` letters may need and still have
    normalised similarity 1 - edits / length >= ``threshold``, exactly (one edit in five letters at
    0.8). Computed on integers: rapidfuzz's ``score_cutoff`` turns the similarity into a distance
    cutoff with float rounding and rejected pairs exactly at the threshold ("sales"/"sale")."""
    return math.floor((1.0 - threshold) * length + 1e-9)


def similar(a: str, b: str, threshold: float) -> bool:
    """Normalised Levenshtein similarity of ``a`` and ``b`` at least ``threshold``."""
    allowed = max_edits(max(len(a), len(b)), threshold)
    return Levenshtein.distance(a, b, score_cutoff=allowed) <= allowed


def co_embedded_fuzzy(caption_words: set[str], ocr_words: set[str], threshold: float) -> set[str]:
    """Caption words whose normalised Levenshtein similarity to some spotted word is >= threshold."""
    return {w for w in caption_words if any(similar(w, o, threshold) for o in ocr_words)}


def cotr(caption_words: set[str], co_words: set[str]) -> float:
    """|co-embedded| / |caption words|; a caption with no words has rate 0 (nothing is parroted)."""
    return len(co_words) / len(caption_words) if caption_words else 0.0


def match_caption(caption: str, ocr_text: str, norm: Normalisation, threshold: float) -> dict:
    """Every per-sample match measure for one caption and one spotted text."""
    cap = word_set(caption, norm)
    ocr = word_set(ocr_text, norm)
    co = co_embedded(cap, ocr)
    fuzzy = co_embedded_fuzzy(cap, ocr, threshold)
    return {
        "n_caption_words": len(cap),
        "n_ocr_words": len(ocr),
        "co_words": sorted(co),
        "cotr": cotr(cap, co),
        "co_words_fuzzy": sorted(fuzzy),
        "cotr_fuzzy": cotr(cap, fuzzy),
        "has_text": len(ocr) > 0,
        "is_parrot": len(co) > 0,
        "is_parrot_fuzzy": len(fuzzy) > 0,
    }


def truth_record(meta: str | None, *fields: str) -> dict | None:
    """The demo generator's ground truth (``json["truth"]``) when it has ``words`` and every one
    of ``fields``; None for data without ground truth or with a malformed record."""
    if not meta:
        return None
    try:
        truth = json.loads(meta).get("truth")
    except (json.JSONDecodeError, AttributeError):
        return None
    if not isinstance(truth, dict) or any(f not in truth for f in ("words", *fields)):
        return None
    return truth


def truth_words(meta: str) -> list[str] | None:
    """The rendered words recorded by the demo generator, or None for data without ground truth."""
    truth = truth_record(meta)
    return None if truth is None else [str(w) for w in truth["words"]]


def match_table(samples: pd.DataFrame, spots: pd.DataFrame, norm: Normalisation,
                threshold: float) -> pd.DataFrame:
    """Join captions (samples table) with spotted words (spot table) by key; one row per sample.

    Samples not spotted (skipped at ingest, or an OCR error) carry their status and reason through.
    Where the data has ground truth, the same measures are computed from the true words (``gt_*``).
    """
    joined = samples[["__key__", "caption", "meta"]].merge(
        spots[["__key__", "status", "error", "text"]], on="__key__", how="outer",
        validate="one_to_one", indicator=True)
    missing = joined[joined["_merge"] != "both"]
    if len(missing):
        raise ValueError(f"samples and spot tables disagree on {len(missing)} keys, "
                         f"e.g. {missing['__key__'].head(3).tolist()}")
    rows = []
    records = joined.drop(columns="_merge").to_dict("records")
    for rec in tqdm(records, desc="match", file=sys.stderr, mininterval=10):
        row = {"__key__": rec["__key__"], "status": rec["status"], "error": rec["error"]}
        if rec["status"] == "ok":
            row.update(match_caption(rec["caption"], rec["text"], norm, threshold))
            words = truth_words(rec["meta"])
            if words is not None:
                gt = match_caption(rec["caption"], " ".join(words), norm, threshold)
                row.update({f"gt_{k}": gt[k] for k in
                            ("co_words", "cotr", "cotr_fuzzy", "has_text", "is_parrot", "is_parrot_fuzzy")})
        rows.append(row)
    if not rows:
        # A part without samples (its shards all missing): still a keyed table, with the columns
        # a part without ground truth has, so readers and the dataset-wide queries accept it.
        return pd.DataFrame(columns=["__key__", "status", "error", *match_caption("", "", norm, threshold)])
    return pd.DataFrame(rows)


def run_match(samples_path: str, spot_path: str, out_path: str, normalisation: dict,
              fuzzy_threshold: float) -> None:
    samples = read_parquet(samples_path)
    spots = read_parquet(spot_path)
    table = match_table(samples, spots, Normalisation.from_config(normalisation), fuzzy_threshold)
    write_parquet(table, out_path)
