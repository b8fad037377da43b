"""Stage ``score``: CLIP scores of image-caption pairs and the paper's relative scores.

The CLIP score S of a pair is the cosine similarity of the L2-normalised image and caption
embeddings (LAION's filter score; LAION-2B dropped pairs with an OpenAI ViT-B-32 score below
0.28). The paper scores each image with text three ways against the same caption: raw S(•), all
embedded text removed S(×), co-embedded text removed S(■); their differences are the relative
scores RSA = S(•) − S(×) and RSC = S(•) − S(■) (Tables 5-6).

A scorer spec (one entry of the config)::

    {"name": "ref",                      # label for tables and errors
     "arch": "ViT-B-32",                 # or {"name": ...}, {"name": ..., "model_cfg": {...}}
     "pretrained": "laion2b_s34b_b79k",  # an OpenCLIP tag, a local weights file, or null
     "checkpoint": null,                 # or a checkpoint written by parrotscope.train
     "quick_gelu": null}                 # force QuickGELU (OpenAI weights from a local file)

Exactly one of ``pretrained`` and ``checkpoint`` is set. A pretrained *tag* names weights on the
model hub: they are taken from the local Hugging Face cache if present there, never downloaded
(open_clip would retry an unreachable hub for about a minute); otherwise :class:`OfflineWeightsError`
says which key to point at a local file. Tags carry settings the weights need: OpenAI weights
were trained with QuickGELU, which OpenCLIP 3.3's ``ViT-B-32`` + ``"openai"`` only warns about;
here the tag's ``quick_gelu``, mean, std and resize settings are applied. A local file for
OpenAI weights needs ``arch: ViT-B-32-quickgelu`` or ``quick_gelu: true``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .devices import resolve_device, set_torch_threads
from .feed import ArrayPairs, InpaintedPairs, ShardPairs, autocast, pair_loader, resolve_precision, resolve_workers
from .io import KEY
from .train import build_model, read_state_dict, resolve_arch

# Weights file names OpenCLIP looks for in a hub repo whose entry names no file.
_HUB_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


class OfflineWeightsError(RuntimeError):
    """Pretrained weights named by a hub tag are not available locally."""


@dataclass
class Scorer:
    """A CLIP model ready to score: eval mode on ``device``, with its eval transform and tokenizer."""

    name: str
    model: torch.nn.Module
    preprocess: Callable
    tokenizer: Callable
    device: str
    spec: dict = field(default_factory=dict)
    precision: str = "fp32"  # the forward's autocast: fp32, bf16 or fp16 (parrotscope.feed.autocast)


def cached_hub_file(hf_hub: str) -> str | None:
    """The local Hugging Face cache path of an OpenCLIP ``hf_hub`` entry, or None; never networked."""
    from huggingface_hub import hf_hub_download

    if hf_hub.endswith("/"):  # OpenCLIP's convention: a repo id alone means its default file
        repo_id, candidates = hf_hub[:-1], _HUB_WEIGHTS
    else:
        repo_id, filename = os.path.split(hf_hub)
        candidates = (filename,)
    for name in candidates:
        try:
            return hf_hub_download(repo_id=repo_id, filename=name, local_files_only=True)
        except Exception:  # LocalEntryNotFoundError and friends: not cached
            continue
    return None


def resolve_pretrained(spec: dict) -> tuple[str, dict]:
    """``(weights_path, tag_cfg)`` for a spec's ``pretrained``: an existing file, or a cached tag."""
    import open_clip

    name, pretrained = spec.get("name", "?"), spec["pretrained"]
    if os.path.isfile(pretrained):
        return pretrained, {}
    arch_name = resolve_arch(spec["arch"])["name"]
    tag_cfg = open_clip.get_pretrained_cfg(arch_name, pretrained)
    if not tag_cfg:
        raise FileNotFoundError(
            f"scorer {name!r}: pretrained={pretrained!r} is neither an existing file nor an OpenCLIP tag "
            f"of {arch_name!r} (tags: {open_clip.list_pretrained_tags_by_model(arch_name)})")
    path = cached_hub_file(tag_cfg["hf_hub"]) if tag_cfg.get("hf_hub") else None
    if path is None:
        source = tag_cfg.get("hf_hub") or tag_cfg.get("url")
        hint = f" and arch {arch_name}-quickgelu (or quick_gelu: true)" if tag_cfg.get("quick_gelu") else ""
        raise OfflineWeightsError(
            f"scorer {name!r}: pretrained tag {pretrained!r} of {arch_name} needs the model hub ({source}), "
            f"and the weights are not in the local Hugging Face cache. This machine is offline: download "
            f"the weights file elsewhere and set this scorer's `pretrained` key in the config to its local "
            f"path{hint}, or place it in the Hugging Face cache (HF_HOME).")
    return path, tag_cfg


def load_scorer(spec: dict, device: str = "auto", precision: str = "auto") -> Scorer:
    """Build the scorer described by ``spec`` (see the module docstring); ``precision``: the
    forward's autocast (``auto``: bf16 on CUDA, fp32 on CPU)."""
    import open_clip

    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    name = spec.get("name", "scorer")
    pretrained, checkpoint = spec.get("pretrained"), spec.get("checkpoint")
    if (pretrained is None) == (checkpoint is None):
        raise ValueError(f"scorer {name!r}: set exactly one of `pretrained` and `checkpoint` "
                         f"(got pretrained={pretrained!r}, checkpoint={checkpoint!r})")
    if "arch" not in spec:
        raise ValueError(f"scorer {name!r}: no `arch`")

    create_kwargs: dict = {}
    if pretrained is not None:
        weights, tag_cfg = resolve_pretrained(spec)
        if tag_cfg:
            create_kwargs.update(image_mean=tag_cfg.get("mean"), image_std=tag_cfg.get("std"),
                                 image_interpolation=tag_cfg.get("interpolation"),
                                 image_resize_mode=tag_cfg.get("resize_mode"))
    # An explicit spec value wins; otherwise the tag's (OpenAI weights need QuickGELU).
    quick_gelu = spec.get("quick_gelu")
    if quick_gelu is None and pretrained is not None:
        quick_gelu = tag_cfg.get("quick_gelu", False)
    if quick_gelu:
        create_kwargs["force_quick_gelu"] = True

    model, preprocess, tokenizer = build_model(spec["arch"], device="cpu", **create_kwargs)
    if pretrained is not None:
        # OpenCLIP's loader: safetensors, third-party key layouts, weights_only=True.
        open_clip.load_checkpoint(model, weights, strict=True, weights_only=True)
    else:
        model.load_state_dict(read_state_dict(checkpoint), strict=True)
    return Scorer(name=name, model=model.to(device).eval(), preprocess=preprocess,
                  tokenizer=tokenizer, device=device, spec=dict(spec), precision=precision)


def encode_images(scorer: Scorer, pixels: torch.Tensor) -> torch.Tensor:
    """L2-normalised float32 image embeddings of one preprocessed batch, under the scorer's autocast."""
    with torch.inference_mode(), autocast(scorer.device, scorer.precision):
        img = scorer.model.encode_image(pixels.to(scorer.device, non_blocking=True))
    return F.normalize(img.float(), dim=-1)


def encode_texts(scorer: Scorer, tokens: torch.Tensor) -> torch.Tensor:
    """L2-normalised float32 text embeddings of one tokenised batch, under the scorer's autocast."""
    with torch.inference_mode(), autocast(scorer.device, scorer.precision):
        txt = scorer.model.encode_text(tokens.to(scorer.device, non_blocking=True))
    return F.normalize(txt.float(), dim=-1)


def encode_pairs(scorer: Scorer, pixels: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised float32 image and caption embeddings of one preprocessed, tokenised batch."""
    return encode_images(scorer, pixels), encode_texts(scorer, tokens)


def clip_scores(scorer: Scorer, images: list[np.ndarray], captions: list[str], batch_size: int = 256) -> np.ndarray:
    """The CLIP score of each (image, caption) pair: cosine of the normalised embeddings, float32.

    ``images`` are RGB uint8 arrays (H x W x 3; greyscale H x W is accepted).
    """
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    items = ArrayPairs(tuple((str(i), im, cap) for i, (im, cap) in enumerate(zip(images, captions))))
    return score_table(scorer, items, batch_size, progress=False)["s"].to_numpy()


def embed_batches(scorer: Scorer, source, batch_size: int = 256, workers: int = 0, progress: bool = True,
                  desc: str | None = None
                  ) -> Iterator[tuple[list[str], torch.Tensor, torch.Tensor]]:
    """Embed a pair source (:mod:`parrotscope.feed`): per batch ``(keys, image_emb, text_emb)``,
    L2-normalised, decoded and preprocessed by ``workers`` DataLoader processes (0: this one).

    Batches are cut from the source's order whatever the worker count, so the embeddings are the
    same for any ``workers``. Progress goes to stderr. Shared by scoring and the ``embed`` stage,
    so both see exactly the same embeddings.
    """
    total = len(source) if hasattr(source, "__len__") else None
    bar = tqdm(total=total, unit="pair", file=sys.stderr, disable=not progress, desc=desc or f"embed {scorer.name}")
    for keys, pixels, tokens in pair_loader(source, scorer.preprocess, scorer.tokenizer, batch_size, workers,
                                            scorer.device):
        img, txt = encode_pairs(scorer, pixels, tokens)
        yield keys, img, txt
        bar.update(len(keys))
    bar.close()


def score_table(scorer: Scorer, source, batch_size: int = 256, workers: int = 0,
                progress: bool = True) -> pd.DataFrame:
    """Score a pair source in batches (:func:`embed_batches`): a DataFrame ``(__key__, s)`` in the
    source's order. Holds a few batches of images at a time."""
    keys: list[str] = []
    scores: list[np.ndarray] = []
    for batch_keys, img, txt in embed_batches(scorer, source, batch_size, workers, progress,
                                              f"score {scorer.name}"):
        scores.append((img * txt).sum(-1).cpu().numpy())
        keys.extend(batch_keys)
    s = np.concatenate(scores) if scores else np.empty(0, dtype=np.float32)
    return pd.DataFrame({KEY: pd.Series(keys, dtype=object), "s": s})


RELATIVE = {  # output column: (minuend, subtrahend)
    "rsa": ("s_raw", "s_all"),            # the paper's RSA = S(•) − S(×)
    "rsc": ("s_raw", "s_co"),             # the paper's RSC = S(•) − S(■)
    "rsa_rand": ("s_raw", "s_rand_all"),  # controls: as much area inpainted, at other images' boxes
    "rsc_rand": ("s_raw", "s_rand_co"),
}


def relative_scores(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with the relative scores whose two columns are present: ``rsa``
    (S(raw) - S(all)), ``rsc`` (S(raw) - S(co)) and the random controls ``rsa_rand``, ``rsc_rand``.

    A score that is missing (NaN or None: e.g. no removal for an image without text) gives NaN.
    """
    if "s_raw" not in df.columns:
        raise KeyError("relative_scores needs the column s_raw")
    out = df.copy()
    for col, (a, b) in RELATIVE.items():
        if b in out.columns:
            out[col] = pd.to_numeric(out[a], errors="coerce") - pd.to_numeric(out[b], errors="coerce")
    return out


def score_part(scorer: Scorer, samples: pd.DataFrame, shards: list[str], inpainted: dict[str, str],
               batch_size: int, max_pixels: int, workers: int = 0) -> pd.DataFrame:
    """S(raw) for every usable sample of a part and S after each removal (``s_<mask kind>``) for
    the images that removal exists for; relative scores added. One row per sample of the part,
    skipped samples keeping their ingest status with empty scores. ``workers``: DataLoader
    processes that decode and preprocess (the scores do not depend on their number)."""
    ok = samples[samples["status"] == "ok"]
    captions = dict(zip(ok[KEY], ok["caption"]))
    raw = score_table(scorer, ShardPairs(tuple(shards), captions, max_pixels), batch_size, workers)
    out = samples[[KEY, "status"]].merge(raw.rename(columns={"s": "s_raw"}), on=KEY, how="left",
                                         validate="one_to_one")
    for kind, tar in sorted(inpainted.items()):
        removed = score_table(scorer, InpaintedPairs(tar, captions), batch_size, workers)
        out = out.merge(removed.rename(columns={"s": f"s_{kind}"}), on=KEY, how="left", validate="one_to_one")
    return relative_scores(out)


def run_score(samples_path: str, shards: list[str], inpainted: dict[str, str], spec: dict, out_path: str,
              batch_size: int, device: str, max_pixels: int, threads: int = 1, workers: int | None = None,
              precision: str = "auto") -> None:
    """Score one part with one scorer (see :func:`score_part`) and write its table; ``workers``
    None: one per job thread beyond the first (:func:`parrotscope.feed.resolve_workers`)."""
    from .io import read_parquet, write_parquet

    set_torch_threads(threads)
    scorer = load_scorer(spec, device, precision)
    table = score_part(scorer, read_parquet(samples_path), shards, inpainted, batch_size, max_pixels,
                       resolve_workers(workers, threads))
    write_parquet(table, out_path)
