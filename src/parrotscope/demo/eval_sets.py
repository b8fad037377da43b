"""Held-out, text-free evaluation sets of the demo, in clip-benchmark's local ``wds/`` layout."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from parrotscope.io import atomic_dir, write_text

from .config import concept_classes, demo_config
from .fonts import check_fonts
from .samples import EVAL_SEED_OFFSET, make_sample, sample_tar, write_sample

#: Kinds of held-out set; a kind's index is its rng stream, counted from EVAL_SEED_OFFSET.
EVAL_KINDS = ("concepts", "retrieval")
#: Prompts of the zero-shot classifier, one class name in each ({c}).
ZEROSHOT_TEMPLATES = ("a {c}", "a photo of a {c}", "a {c} shape", "{c} icon", "a picture of a {c}")


def write_eval_set(cfg: dict, kind: str, out_dir: str) -> dict:
    """Write a text-free held-out set for clip-benchmark (`--dataset wds/NAME --dataset_root DIR`).

    ``concepts``: ``KEY.jpg`` + ``KEY.cls``, ``eval_concepts_per_class`` images of every class,
    for zero-shot classification. ``retrieval``: ``KEY.jpg`` + ``KEY.txt`` (one detailed visual
    caption), ``eval_retrieval_pairs`` pairs; clip-benchmark must be told
    ``--task zeroshot_retrieval`` (its ``auto`` task picks classification for wds datasets).
    Both carry ``KEY.json`` with ground truth, which clip-benchmark ignores. The directory is
    built beside ``out_dir`` and renamed into place when complete.
    """
    cfg = demo_config(cfg)
    check_fonts(cfg)
    if kind not in EVAL_KINDS:
        raise ValueError(f"eval set kind must be one of {EVAL_KINDS}, got {kind!r}")
    classes = concept_classes(cfg)
    seed = int(cfg["seed"])
    stream = EVAL_SEED_OFFSET + EVAL_KINDS.index(kind)
    labels = _eval_labels(cfg, kind, len(classes), seed, stream)
    per_shard = int(cfg["eval_samples_per_shard"])
    n_shards = max(1, math.ceil(len(labels) / per_shard))

    with atomic_dir(out_dir) as tmp_dir:
        (tmp_dir / "test").mkdir()
        for s in range(n_shards):
            with sample_tar(tmp_dir / "test" / f"{s}.tar") as tar:
                for i in range(s * per_shard, min((s + 1) * per_shard, len(labels))):
                    rng = np.random.default_rng([seed, stream, i])
                    key = f"{i:06d}"
                    label = None if labels[i] is None else int(labels[i])
                    sample = make_sample(
                        rng,
                        cfg,
                        key,
                        f"demo://seed{seed}/{kind}/{key}.jpg",
                        with_text=False,
                        label=label,
                        retrieval_caption=kind == "retrieval",
                    )
                    if kind == "concepts":
                        del sample["txt"]
                        sample["cls"] = str(label)
                    write_sample(tar, key, sample)
        _write_dataset_files(tmp_dir, kind, n_shards, classes)
    return {
        "kind": kind,
        "path": str(out_dir),
        "n_samples": len(labels),
        "n_shards": n_shards,
        "n_classes": len(classes),
    }


def _eval_labels(cfg: dict, kind: str, n_classes: int, seed: int, stream: int) -> list:
    """Each image's class label: ``eval_concepts_per_class`` of every class in a seeded order
    (``concepts``), or None for each retrieval pair (the concept is drawn with the image)."""
    if kind == "concepts":
        labels = np.repeat(np.arange(n_classes), int(cfg["eval_concepts_per_class"]))
        return np.random.default_rng([seed, stream]).permutation(labels)
    return [None] * int(cfg["eval_retrieval_pairs"])


def _write_dataset_files(folder: Path, kind: str, n_shards: int, classes: list[str]) -> None:
    """The text files clip-benchmark reads beside a ``wds/`` dataset's tars."""
    write_text(f"{n_shards}\n", folder / "test" / "nshards.txt")
    write_text("".join(f"{c}\n" for c in classes), folder / "classnames.txt")
    write_text(
        "".join(f"{t}\n" for t in ZEROSHOT_TEMPLATES),
        folder / "zeroshot_classification_templates.txt",
    )
    write_text(
        "classification\n" if kind == "concepts" else "retrieval\n",
        folder / "dataset_type.txt",
    )
