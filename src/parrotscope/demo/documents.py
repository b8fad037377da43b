"""MMC4-like documents: interleaved images and sentences, in MMC4's own layout, with ground truth.

A document holds a few of the demo's images and a few sentences: each image's own caption plus
filler prose. As MMC4 assigns each image the sentence most similar to it, an image gets its own
caption with probability ``own_sentence_prob`` and another sentence of the document otherwise
(a filler, or another image's caption). A document file is MMC4's jsonl (``text_list``, ``url``,
``image_info`` with ``image_name``, ``matched_text_index``, ``matched_sim``) and its images a tar
of files named by ``image_name``, read by :mod:`parrotscope.mmc4` as the real corpus is (:func:`write_documents`, :func:`write_image_tar`).

Each ``image_info`` entry also carries ``truth``, the sample's ground truth as the pool's shards
record it, for the sentence it was assigned: ``caption_kind`` is ``other_sentence`` when that is
not its own caption, and ``parrot_words`` are the rendered words that sentence contains.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from typing import Iterator

import numpy as np

from parrotscope.io import atomic_path
from .captions import FILLER_SENTENCES, cotr
from .config import demo_config
from .fonts import check_fonts
from .samples import EVAL_SEED_OFFSET, make_sample

OTHER_SENTENCE = "other_sentence"


def image_name(seed: int, shard: int, doc: int, j: int) -> str:
    """A hashed file name, as MMC4 names its images (``b9040a0dbb22.jpg``)."""
    return hashlib.sha1(f"{seed}/{shard}/{doc}/{j}".encode()).hexdigest()[:12] + ".jpg"


def _between(rng: np.random.Generator, bounds) -> int:
    lo, hi = (int(b) for b in bounds)
    return int(rng.integers(lo, hi + 1))


def _assigned_truth(truth: dict, sentence: str, own: bool) -> dict:
    """The image's ground truth for the sentence it was assigned."""
    if own:
        return truth
    said = {w.lower() for w in sentence.split()}
    return {**truth, "caption_kind": OTHER_SENTENCE,
            "parrot_words": [w for w in truth["words"] if w.lower() in said]}


def make_document(cfg: dict, shard: int, doc: int) -> tuple[dict, dict[str, bytes]]:
    """Document ``doc`` of document file ``shard`` and its images by name; every draw comes from
    ``default_rng([seed, shard, doc, ...])``, so it depends on nothing else."""
    seed = int(cfg["seed"])
    rng = np.random.default_rng([seed, shard, doc])
    n_images = _between(rng, cfg["images_per_document"])
    samples = []
    for j in range(n_images):
        image_rng = np.random.default_rng([seed, shard, doc, j])
        with_text = bool(image_rng.random() < cfg["text_fraction"])
        name = image_name(seed, shard, doc, j)
        samples.append((name, make_sample(image_rng, cfg, name, f"demo://seed{seed}/{name}", with_text=with_text)))
    fillers = [str(s) for s in rng.choice(FILLER_SENTENCES, _between(rng, cfg["filler_sentences"]), replace=True)]
    sentences = [s["txt"] for _, s in samples] + fillers
    order = rng.permutation(len(sentences))
    text_list = [sentences[i] for i in order]
    position = {int(old): new for new, old in enumerate(order)}
    info = []
    for j, (name, sample) in enumerate(samples):
        own = len(text_list) == 1 or rng.random() < cfg["own_sentence_prob"]
        index = position[j] if own else int(rng.choice([i for i in range(len(text_list)) if i != position[j]]))
        info.append({"image_name": name, "raw_url": sample["json"]["url"], "matched_text_index": index,
                     "matched_sim": round(float(rng.uniform(0.25, 0.35) if own else rng.uniform(0.15, 0.25)), 4),
                     "face_detections": None,
                     "truth": _assigned_truth(sample["json"]["truth"], text_list[index], own)})
    document = {"url": f"demo://seed{seed}/doc{shard:05d}-{doc:07d}", "text_list": text_list,
                "image_info": info, "similarity_matrix": None, "could_have_url_duplicate": 0}
    return document, {name: sample["jpg"] for name, sample in samples}


def shard_documents(cfg: dict, shard: int) -> Iterator[tuple[dict, dict[str, bytes]]]:
    """The documents of document file ``shard`` of a validated demo config, in order."""
    for doc in range(int(cfg["documents_per_shard"])):
        yield make_document(cfg, shard, doc)


def write_document_shard(cfg: dict, shard: int, out_docs: str, out_images: str) -> dict:
    """Write document file ``shard`` (jsonl) and its images (a tar), atomically; return counts
    with the ground truth's text and parrot rates over its images."""
    cfg = demo_config(cfg)
    check_fonts(cfg)
    shard = int(shard)
    if not 0 <= shard < EVAL_SEED_OFFSET:
        raise ValueError(f"shard must be in [0, {EVAL_SEED_OFFSET}), got {shard}")
    documents, images = [], {}
    for document, doc_images in shard_documents(cfg, shard):
        documents.append(document)
        images.update(doc_images)
    truths = [(e["truth"], document["text_list"][e["matched_text_index"]])
              for document in documents for e in document["image_info"]]
    cotrs = [cotr(sentence, t["words"]) for t, sentence in truths if t["has_text"]]
    write_image_tar(images, out_images)
    write_documents(documents, out_docs)
    return {"shard": shard, "documents": len(documents), "images": len(truths),
            "images_with_text": len(cotrs),
            "own_sentence": sum(t["caption_kind"] != OTHER_SENTENCE for t, _ in truths),
            "truth_mean_cotr_text": float(np.mean(cotrs)) if cotrs else 0.0,
            "truth_parrot_rate_text": float(np.mean([c > 0 for c in cotrs])) if cotrs else 0.0}


def write_documents(documents: list[dict], path: str) -> None:
    """Documents as an MMC4 jsonl file (one JSON object a line), atomically."""
    with atomic_path(path, suffix=".jsonl") as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            for doc in documents:
                fh.write(json.dumps(doc, ensure_ascii=False, sort_keys=True) + "\n")


def write_image_tar(images: dict[str, bytes], path: str) -> None:
    """Images as a tar of files named by ``image_name`` (an image shard of MMC4), atomically."""
    with atomic_path(path, suffix=".tar") as tmp:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for name, data in images.items():
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 0, 0o444
                tar.addfile(info, io.BytesIO(data))
