"""BLIP for Table 7: Hugging Face transformers' BLIP modules, BLIP's pre-training objective, the tokenizer.

The model is transformers' own: :class:`~transformers.BlipForImageTextRetrieval` holds the ViT, the
text encoder (a BERT whose layers cross-attend to the image when given it), the two projections
and the ITM head; :class:`~transformers.BlipTextLMHeadModel` is the captioning decoder. The
downstream models (:func:`captioner`, :func:`vqa_model`) are transformers'
``BlipForConditionalGeneration`` and ``BlipForQuestionAnswering``, built from the pre-trained
modules by name; retrieval fine-tunes the pre-trainer itself (its ``BlipForImageTextRetrieval``).

transformers has no pre-training objective, so :class:`BlipPretrainer` composes BLIP's three from
those modules (Li et al. 2022, Sec. 3.2):

- ITC, image-text contrastive: the [CLS] features of the unimodal image and text encoders,
  projected and normalised; symmetric cross-entropy over the batch with a learnt temperature.
- ITM, image-text matching: the text encoder in its image-grounded mode (first token ``[ENC]``)
  classifies pairs as matched or not; for each image a negative text, and for each text a negative
  image, is drawn from the batch with probability softmax(ITC similarity), so negatives are the
  hard ones (:func:`hard_negatives`). Pairs whose captions are the same text are never negatives.
- LM, captioning: the decoder (first token ``[DEC]``) predicts the caption given the image,
  cross-entropy with label smoothing 0.1.

Simplified against the paper, and why: in-batch ITC with no momentum encoder and no feature
queue (ALBEF's momentum distillation helps noisy web captions, not the comparison between
subsets); the decoder does not share the encoder's embeddings and feed-forward layers (separate
modules, as transformers' downstream models hold them); no CapFilt bootstrapping (the paper
pre-trains on the curated subsets as they are); images are only resized, not randomly cropped or
flipped (a flip mirrors the text the reading tasks ask about).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

BLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # BLIP's (and CLIP's) image normalisation
BLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
DEC, ENC = "[DEC]", "[ENC]"  # BLIP's decoder and image-grounded encoder first tokens


class BlipError(ValueError):
    """A BLIP setting that cannot work."""


# --- tokenizer ---------------------------------------------------------------------------------


def add_blip_tokens(tokenizer):
    """BLIP's two tokens on a BERT tokenizer, as its ``init_tokenizer`` adds them (idempotent)."""
    if tokenizer.bos_token != DEC or ENC not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"bos_token": DEC, "additional_special_tokens": [ENC]})
    return tokenizer


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """A lower-cased BERT WordPiece tokenizer trained on ``texts`` with BLIP's tokens: the
    embedded default's stand-in for ``bert-base-uncased``, which cannot be downloaded here."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizer

    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(texts, vocab_size=int(vocab_size), min_frequency=1, special_tokens=SPECIAL_TOKENS)
    return add_blip_tokens(BertTokenizer(vocab=wordpiece.get_vocab(), do_lower_case=True))


def load_tokenizer(path: str | os.PathLike):
    """A BERT tokenizer from a folder or hub id, with BLIP's tokens."""
    from transformers import BertTokenizer

    return add_blip_tokens(BertTokenizer.from_pretrained(str(path)))


def caption_sample(index_paths: Sequence[str], n: int, seed: int) -> list[str]:
    """``n`` status-ok captions of the dataset by its seeded keyed rank (a top-N over the index
    parts through DuckDB: memory grows with ``n``, not with the dataset)."""
    from .db import connect, parquet_source, register_keyed_rank, sql_name
    from .io import KEY

    if not index_paths or n <= 0:
        return []
    con = connect()
    rank = register_keyed_rank(con, seed)
    key = sql_name(KEY)
    rows = con.execute(f"SELECT caption FROM {parquet_source(index_paths)} WHERE status = 'ok' AND caption IS NOT NULL "
                       f"ORDER BY {rank}({key}), {key} LIMIT {int(n)}").fetchall()
    return [r[0] for r in rows]


def build_tokenizer(setting: str | Mapping, index_paths: Sequence[str], sets: Mapping, demo_folders: Mapping[str, str],
                    seed: int, out_dir: str) -> dict:
    """Write BLIP's tokenizer to ``out_dir``: a BERT tokenizer (``setting`` a folder or hub id),
    or one trained (``setting``: ``{vocab_size, captions}``) on a seeded sample of the study
    dataset's captions and every set's training texts, so that one vocabulary serves every subset."""
    from .blip_data import configured_spec, training_texts
    from .io import atomic_dir

    if isinstance(setting, str):
        tok, texts = load_tokenizer(setting), []
    else:
        texts = caption_sample(index_paths, int(setting["captions"]), seed)
        for name, value in sets.items():
            texts += training_texts(configured_spec(value, demo_folders.get(name)))
        if not texts:
            raise BlipError("no text to train BLIP's tokenizer on: the index has no status-ok caption")
        tok = train_tokenizer(texts, int(setting["vocab_size"]))
    with atomic_dir(out_dir) as tmp:
        tok.save_pretrained(str(tmp))
    return {"vocab": len(tok), "trained_on_texts": len(texts), "source": setting}


def tokenize(tokenizer, texts: list[str], max_length: int, first: str | None = None) -> dict:
    """Padded token ids and mask; ``first`` replaces the [CLS] token (BLIP's [ENC] or [DEC])."""
    enc = tokenizer(texts, padding="longest", truncation=True, max_length=int(max_length), return_tensors="pt")
    ids = enc["input_ids"].clone()
    if first is not None:
        ids[:, 0] = tokenizer.convert_tokens_to_ids(first)
    return {"input_ids": ids, "attention_mask": enc["attention_mask"]}


def lm_labels(tokenizer, ids: torch.Tensor) -> torch.Tensor:
    """Decoder targets: the ids with padding ignored (-100)."""
    return ids.masked_fill(ids == tokenizer.pad_token_id, -100)


# --- configuration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BlipSize:
    """A BLIP's size: one hidden width for the ViT and the text transformers (BLIP's decoder
    cross-attends to the text encoder's states in VQA, so the widths must agree, 768 in BLIP-base)."""

    image_size: int = 384
    patch_size: int = 16
    hidden_size: int = 768
    vision_layers: int = 12
    text_layers: int = 12
    heads: int = 12
    intermediate_size: int = 3072
    embed_dim: int = 256
    max_length: int = 35

    @classmethod
    def from_config(cls, model: Mapping) -> "BlipSize":
        unknown = set(model) - set(cls.__dataclass_fields__)
        if unknown:
            raise BlipError(f"blip.model has unknown keys {sorted(unknown)}; keys: {sorted(cls.__dataclass_fields__)}")
        size = cls(**{k: int(v) for k, v in model.items()})
        if size.hidden_size % size.heads:
            raise BlipError(f"blip.model.hidden_size {size.hidden_size} is not a multiple of heads {size.heads}")
        if size.image_size % size.patch_size:
            raise BlipError(f"blip.model.image_size {size.image_size} is not a multiple of patch_size {size.patch_size}")
        return size


def blip_config(size: BlipSize, tokenizer, label_smoothing: float = 0.1):
    """transformers' BlipConfig for this size and tokenizer (its ids: pad, [DEC], [SEP])."""
    from transformers import BlipConfig

    text = dict(vocab_size=len(tokenizer), hidden_size=size.hidden_size, encoder_hidden_size=size.hidden_size,
                intermediate_size=size.intermediate_size, num_hidden_layers=size.text_layers,
                num_attention_heads=size.heads, max_position_embeddings=max(size.max_length, 40),
                pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.sep_token_id, sep_token_id=tokenizer.sep_token_id,
                label_smoothing=float(label_smoothing))
    # transformers initialises BLIP's ViT with std 1e-10 (its weights are always loaded); from
    # scratch that is a near-constant image encoder, so it gets the text side's 0.02.
    vision = dict(hidden_size=size.hidden_size, intermediate_size=size.intermediate_size,
                  num_hidden_layers=size.vision_layers, num_attention_heads=size.heads,
                  image_size=size.image_size, patch_size=size.patch_size, initializer_range=0.02)
    return BlipConfig(text_config=text, vision_config=vision, image_text_hidden_size=size.embed_dim)


# --- the pre-training objective ----------------------------------------------------------------


def same_text(input_ids: torch.Tensor) -> torch.Tensor:
    """``same[i, j]``: captions i and j are the same token sequence (never each other's negative)."""
    return (input_ids[:, None, :] == input_ids[None, :, :]).all(-1)


def hard_negatives(sim: torch.Tensor, same: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """For each row, a column drawn with probability softmax(sim) over the columns that are not
    its positives (``same``): BLIP's ITM hard-negative mining. A row with no other column draws
    uniformly (it then has no true negative; a batch of one caption repeated)."""
    weights = F.softmax(sim.float(), dim=1).masked_fill(same, 0.0)
    empty = weights.sum(1) <= 0
    if empty.any():
        weights[empty] = 1.0
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)


class BlipPretrainer(nn.Module):
    """transformers' BLIP modules with BLIP's three pre-training losses (see the module docstring)."""

    def __init__(self, config, enc_token_id: int):
        super().__init__()
        from transformers import BlipForImageTextRetrieval
        from transformers.models.blip.modeling_blip_text import BlipTextLMHeadModel

        self.config = config
        self.retrieval = BlipForImageTextRetrieval(config)
        self.text_decoder = BlipTextLMHeadModel(config.text_config)
        self.temp = nn.Parameter(torch.tensor(0.07))  # BLIP's initial ITC temperature
        self.enc_token_id = int(enc_token_id)

    def image_embeds(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.retrieval.vision_model(pixel_values=pixel_values).last_hidden_state

    def text_feat(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.retrieval.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return F.normalize(self.retrieval.text_proj(out[:, 0]), dim=-1)

    def image_feat(self, image_embeds: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.retrieval.vision_proj(image_embeds[:, 0]), dim=-1)

    def itm_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   image_embeds: torch.Tensor) -> torch.Tensor:
        """Matched-or-not logits of image-grounded text (first token [ENC])."""
        ids = input_ids.clone()
        ids[:, 0] = self.enc_token_id
        atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        out = self.retrieval.text_encoder(input_ids=ids, attention_mask=attention_mask,
                                          encoder_hidden_states=image_embeds, encoder_attention_mask=atts)
        return self.retrieval.itm_head(out.last_hidden_state[:, 0])

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                dec_ids: torch.Tensor | None, labels: torch.Tensor | None, generator: torch.Generator | None = None,
                with_lm: bool = True) -> dict:
        """The losses of a batch: ``itc``, ``itm``, ``lm`` (unless not ``with_lm``: retrieval
        fine-tuning) and their sum ``loss``."""
        with torch.no_grad():
            self.temp.clamp_(0.001, 0.5)
        image_embeds = self.image_embeds(pixel_values)
        image_feat, text_feat = self.image_feat(image_embeds), self.text_feat(input_ids, attention_mask)
        sim_i2t = image_feat @ text_feat.t() / self.temp
        same = same_text(input_ids)
        # Targets spread over every caption equal to the image's own, as BLIP spreads them over
        # the same image's captions (idx): an identical caption elsewhere is not a wrong answer.
        targets = same.float() / same.float().sum(1, keepdim=True)
        itc = (-(F.log_softmax(sim_i2t, 1) * targets).sum(1).mean()
               - (F.log_softmax(sim_i2t.t(), 1) * targets).sum(1).mean()) / 2

        with torch.no_grad():
            neg_text = hard_negatives(sim_i2t, same, generator)       # per image, a text
            neg_image = hard_negatives(sim_i2t.t(), same, generator)  # per text, an image
        ids = torch.cat([input_ids, input_ids[neg_text], input_ids])
        mask = torch.cat([attention_mask, attention_mask[neg_text], attention_mask])
        images = torch.cat([image_embeds, image_embeds, image_embeds[neg_image]])
        logits = self.itm_logits(ids, mask, images)
        n = len(input_ids)
        itm_labels = torch.cat([torch.ones(n), torch.zeros(2 * n)]).long().to(logits.device)
        itm = F.cross_entropy(logits, itm_labels)

        losses = {"itc": itc, "itm": itm}
        if with_lm:
            losses["lm"] = self.text_decoder(input_ids=dec_ids, attention_mask=attention_mask,
                                             encoder_hidden_states=image_embeds, labels=labels, reduction="mean").loss
        return {**losses, "loss": sum(losses.values())}


# --- downstream models from the pre-trained modules --------------------------------------------


def _load_parts(model: nn.Module, pretrainer: BlipPretrainer, names: Iterable[str]) -> nn.Module:
    """Copy the named pre-trained submodules into a downstream model (same names, same shapes)."""
    sources = {"vision_model": pretrainer.retrieval.vision_model, "text_encoder": pretrainer.retrieval.text_encoder,
               "vision_proj": pretrainer.retrieval.vision_proj, "text_proj": pretrainer.retrieval.text_proj,
               "itm_head": pretrainer.retrieval.itm_head, "text_decoder": pretrainer.text_decoder}
    for name in names:
        getattr(model, name).load_state_dict(sources[name].state_dict())
    return model


def captioner(pretrainer: BlipPretrainer):
    """``BlipForConditionalGeneration``: the pre-trained ViT and decoder."""
    from transformers import BlipForConditionalGeneration

    return _load_parts(BlipForConditionalGeneration(pretrainer.config), pretrainer, ["vision_model", "text_decoder"])


def vqa_model(pretrainer: BlipPretrainer):
    """``BlipForQuestionAnswering``: the pre-trained ViT, image-grounded encoder and decoder (BLIP
    initialises its answer decoder from the captioning decoder)."""
    from transformers import BlipForQuestionAnswering

    return _load_parts(BlipForQuestionAnswering(pretrainer.config), pretrainer,
                       ["vision_model", "text_encoder", "text_decoder"])


def save_pretrainer(model: BlipPretrainer, path: str | os.PathLike, extra: Mapping | None = None) -> None:
    """The weights, the BlipConfig and the [ENC] id in one torch file (written atomically)."""
    from .io import atomic_path

    with atomic_path(path, suffix=".pt") as tmp:
        torch.save({"config": model.config.to_dict(), "enc_token_id": model.enc_token_id,
                    "state_dict": model.state_dict(), **(extra or {})}, tmp)


def load_pretrainer(path: str | os.PathLike, device: str = "cpu") -> tuple[BlipPretrainer, BlipSize]:
    """A pre-trainer written by :func:`save_pretrainer`, and its size (one read of the file)."""
    from transformers import BlipConfig

    saved = torch.load(path, map_location=device, weights_only=False)
    model = BlipPretrainer(BlipConfig.from_dict(saved["config"]), saved["enc_token_id"])
    model.load_state_dict(saved["state_dict"])
    return model.to(device), BlipSize(**saved["size"])


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def steps_for(epochs: float, n_samples: int, batch_size: int) -> int:
    """Optimiser steps for ``epochs`` passes over ``n_samples`` (the last batch may be partial)."""
    return max(1, math.ceil(float(epochs) * int(n_samples) / int(batch_size)))


def image_transform(image_size: int):
    """Resize to the ViT's input and normalise as BLIP does."""
    from torchvision import transforms

    return transforms.Compose([
        transforms.Resize((int(image_size), int(image_size)), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.ToTensor(), transforms.Normalize(BLIP_MEAN, BLIP_STD)])

