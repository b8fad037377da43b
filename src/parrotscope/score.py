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
from typing import Callable, Iterable, Iterator

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from .io import KEY, batched
from .devices import resolve_device, set_torch_threads
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


def load_scorer(spec: dict, device: str = "auto") -> Scorer:
    """Build the scorer described by ``spec`` (see the module docstring)."""
    import open_clip

    device = resolve_device(device)
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
                  tokenizer=tokenizer, device=device, spec=dict(spec))


def _to_pil(image: np.ndarray) -> Image.Image:
    if image.ndim == 2:
        return Image.fromarray(image).convert("RGB")
    return Image.fromarray(image[..., :3])


def embed_pairs(scorer: Scorer, images: list[np.ndarray], captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised image and caption embeddings of one batch."""
    pixels = torch.stack([scorer.preprocess(_to_pil(im)) for im in images]).to(scorer.device)
    tokens = scorer.tokenizer(list(captions)).to(scorer.device)
    with torch.inference_mode():
        img = F.normalize(scorer.model.encode_image(pixels).float(), dim=-1)
        txt = F.normalize(scorer.model.encode_text(tokens).float(), dim=-1)
    return img, txt


def clip_scores(scorer: Scorer, images: list[np.ndarray], captions: list[str], batch_size: int = 256) -> np.ndarray:
    """The CLIP score of each (image, caption) pair: cosine of the normalised embeddings, float32.

    ``images`` are RGB uint8 arrays (H x W x 3; greyscale H x W is accepted).
    """
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    out = np.empty(len(images), dtype=np.float32)
    for start in range(0, len(images), batch_size):
        img, txt = embed_pairs(scorer, images[start:start + batch_size], captions[start:start + batch_size])
        out[start:start + len(img)] = (img * txt).sum(-1).cpu().numpy()
    return out


def embed_batches(scorer: Scorer, items: Iterable[tuple[str, np.ndarray, str]], batch_size: int = 256,
                  total: int | None = None, progress: bool = True, desc: str | None = None
                  ) -> Iterator[tuple[list[str], torch.Tensor, torch.Tensor]]:
    """Embed a stream of ``(key, image, caption)``: per batch ``(keys, image_emb, text_emb)``,
    L2-normalised (see :func:`embed_pairs`).

    Holds one batch of images at a time; progress goes to stderr. Shared by scoring and the
    ``embed`` stage, so both see exactly the same embeddings.
    """
    bar = tqdm(total=total, unit="pair", file=sys.stderr, disable=not progress, desc=desc or f"embed {scorer.name}")
    for batch in batched(items, batch_size):
        img, txt = embed_pairs(scorer, [b[1] for b in batch], [b[2] for b in batch])
        yield [b[0] for b in batch], img, txt
        bar.update(len(batch))
    bar.close()


def score_table(scorer: Scorer, items: Iterable[tuple[str, np.ndarray, str]], batch_size: int = 256,
                total: int | None = None, progress: bool = True) -> pd.DataFrame:
    """Score a stream of ``(key, image, caption)`` in batches: a DataFrame ``(__key__, s)``.

    Holds one batch of images at a time; progress goes to stderr.
    """
    keys: list[str] = []
    scores: list[np.ndarray] = []
    for batch_keys, img, txt in embed_batches(scorer, items, batch_size, total, progress, f"score {scorer.name}"):
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


def with_captions(pairs: Iterable[tuple[str, np.ndarray]], captions: dict[str, str]
                   ) -> Iterator[tuple[str, np.ndarray, str]]:
    for key, image in pairs:
        yield key, image, captions[key]


def score_part(scorer: Scorer, samples: pd.DataFrame, shards: list[str], inpainted: dict[str, str],
               batch_size: int, max_pixels: int) -> pd.DataFrame:
    """S(raw) for every usable sample of a part and S after each removal (``s_<mask kind>``) for
    the images that removal exists for; relative scores added. One row per sample of the part,
    skipped samples keeping their ingest status with empty scores."""
    from .inpaint import read_inpainted
    from .shards import iter_images

    ok = samples[samples["status"] == "ok"]
    captions = dict(zip(ok[KEY], ok["caption"]))
    raw = score_table(scorer, with_captions(iter_images(shards, set(captions), max_pixels), captions),
                      batch_size, total=len(captions))
    out = samples[[KEY, "status"]].merge(raw.rename(columns={"s": "s_raw"}), on=KEY, how="left",
                                         validate="one_to_one")
    for kind, tar in sorted(inpainted.items()):
        pairs = ((key, image) for key, image, _, _ in read_inpainted(tar))
        removed = score_table(scorer, with_captions(pairs, captions), batch_size)
        unknown = set(removed[KEY]) - set(captions)
        if unknown:
            raise ValueError(f"{tar}: keys not among the part's usable samples, e.g. {sorted(unknown)[:3]}")
        out = out.merge(removed.rename(columns={"s": f"s_{kind}"}), on=KEY, how="left", validate="one_to_one")
    return relative_scores(out)


def run_score(samples_path: str, shards: list[str], inpainted: dict[str, str], spec: dict, out_path: str,
              batch_size: int, device: str, max_pixels: int, threads: int = 1) -> None:
    """Score one part with one scorer (see :func:`score_part`) and write its table."""
    from .io import read_parquet, write_parquet

    set_torch_threads(threads)
    scorer = load_scorer(spec, device)
    table = score_part(scorer, read_parquet(samples_path), shards, inpainted, batch_size, max_pixels)
    write_parquet(table, out_path)
