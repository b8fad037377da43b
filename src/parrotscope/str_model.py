"""CLIP4STR (Zhao et al., TIP 2024) on any open_clip CLIP: a scene-text recogniser made of two branches.

Visual branch
    The CLIP image encoder, fully trainable, yields a sequence of token features in the CLIP
    embedding space (width E = the CLIP's ``embed_dim``, which is also the decoders' width):

    * ViT towers (``open_clip.transformer.VisionTransformer``) run with ``output_tokens=True``; the
      patch tokens (after ``ln_post``) go through the tower's own projection ``proj`` and follow
      the pooled (class) embedding: ``[B, 1 + n_patches, E]``.
    * ModifiedResNet towers (RN50 and the packaged ``tiny-rn``) keep the final feature map,
      flattened to ``[B, h*w, C]``; each position goes through the attention pool's value and
      output projections (into the embedding space) and follows the pool's own output, CLIP's
      image embedding: ``[B, 1 + h*w, E]``.

    A one-layer PARSeq decoder (Bautista & Atienza, ECCV 2022) reads the string from these
    features. It is trained with permuted sequence modelling: for each batch K orderings of the
    label's characters are drawn (always left-to-right, and with ``perm_mirrored`` each ordering's
    reverse), and each ordering becomes an attention mask that lets a character's query see only
    the characters before it in that ordering (:func:`permutations`, :func:`attention_masks`).

Cross-modal branch
    The visual branch's predicted string is tokenised with CLIP's tokenizer and encoded by the
    CLIP text encoder, all token positions kept (``[B, context, E]``); its token and positional
    embeddings and lower ``text_frozen_layers`` transformer blocks are frozen (the paper freezes
    6 of 12). A second PARSeq decoder reads the string from the concatenation
    ``[image features (detached), text features]``: no gradient of this branch reaches the image
    encoder. It is trained with the same permutations and ground-truth context.

    Difference from the authors' code: there the predicted string is re-encoded for every
    permutation; here it is encoded once per batch, from the left-to-right permutation's
    logits (the other permutations' predictions differ only where their masks hide context).

Predict-and-refine inference (:meth:`CLIP4STR.predict`)
    1. the visual decoder decodes greedily left to right; 2. its string is encoded by the text
    encoder and the cross-modal decoder decodes greedily, left to right; 3. ``refine_iters``
    times, each decoder re-reads every position with a cloze mask (all other positions visible)
    from its own previous output, the cross-modal memory rebuilt from the refined visual string.
    The final output is the cross-modal branch's. ``visual`` is the visual branch alone (its own
    left-to-right decode plus cloze refinement, i.e. PARSeq's inference).

Tokens: ``[EOS] = 0``, the charset's characters 1..C, ``[BOS] = C + 1``, ``[PAD] = C + 2``; the
decoders predict the C + 1 classes ``[EOS]`` and the characters.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .str_data import CHARSET_36, charset_label

NEG_INF = float("-inf")


# ----------------------------------------------------------------------------------------------
# Configuration and tokens


@dataclass
class STRConfig:
    """The recogniser's shape; stored in its checkpoint so evaluation rebuilds the same model."""

    charset: str = CHARSET_36
    max_label_length: int = 16
    image_size: tuple[int, int] | None = None   # (height, width); None = the CLIP's own input size
    heads: int = 8
    mlp_ratio: float = 4.0
    depth: int = 1
    dropout: float = 0.1
    text_frozen_layers: int | None = None      # None = half of the text tower's blocks
    perm_num: int = 6
    perm_mirrored: bool = True
    refine_iters: int = 1
    cross_loss_weight: float = 1.0

    def __post_init__(self):
        if self.image_size is not None:
            self.image_size = tuple(int(v) for v in self.image_size)
        if len(set(self.charset)) != len(self.charset) or not self.charset:
            raise ValueError(f"charset must be non-empty with distinct characters, got {self.charset!r}")
        if self.max_label_length < 1 or self.perm_num < 1 or self.depth < 1:
            raise ValueError("max_label_length, perm_num and depth must be >= 1")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_size"] = list(self.image_size) if self.image_size else None
        return d


class Tokenizer:
    """Labels <-> token ids for a charset (see the module docstring for the id layout)."""

    def __init__(self, charset: str):
        self.charset = charset
        self.eos, self.bos, self.pad = 0, len(charset) + 1, len(charset) + 2
        self.n_classes = len(charset) + 1      # what a decoder predicts: [EOS] + characters
        self.n_tokens = len(charset) + 3       # what a decoder reads: + [BOS], [PAD]
        self._index = {c: i + 1 for i, c in enumerate(charset)}

    def encode(self, labels: Sequence[str], device=None) -> torch.Tensor:
        """``[B, T + 2]``: [BOS] chars [EOS] [PAD]..., T the longest label; characters outside the
        charset are dropped (after :func:`charset_label`)."""
        ids = [[self._index[c] for c in charset_label(x, self.charset)] for x in labels]
        longest = max((len(x) for x in ids), default=0)
        out = torch.full((len(ids), longest + 2), self.pad, dtype=torch.long)
        for row, seq in enumerate(ids):
            out[row, 0] = self.bos
            out[row, 1:len(seq) + 1] = torch.tensor(seq, dtype=torch.long)
            out[row, len(seq) + 1] = self.eos
        return out.to(device) if device is not None else out

    def decode(self, ids: torch.Tensor) -> list[str]:
        """Strings from predicted class ids ``[B, S]``: characters up to the first [EOS]."""
        out = []
        for row in ids.tolist():
            chars = []
            for i in row:
                if i == self.eos:
                    break
                if 1 <= i <= len(self.charset):
                    chars.append(self.charset[i - 1])
            out.append("".join(chars))
        return out


# ----------------------------------------------------------------------------------------------
# Permutations and their attention masks


def permutations(n_chars: int, k: int, mirrored: bool = True, rng: np.random.Generator | None = None
                 ) -> torch.Tensor:
    """Up to ``k`` orderings of positions 0..n_chars+1 (0 = [BOS], n_chars+1 = [EOS]), ``[K, n+2]``.

    The first is left to right. With ``mirrored`` the orderings come in pairs, each followed by
    its reverse; the second row (the reverse of left to right) predicts [EOS] right after [BOS]
    and then the characters right to left, so [EOS] is also learnt from the null context. The
    remaining orderings are distinct random permutations of the characters, [EOS] last. Fewer
    than ``k`` come back when fewer distinct orderings exist (n_chars! of them).
    """
    rng = rng if rng is not None else np.random.default_rng()
    n = int(n_chars)
    if n <= 1:
        return torch.arange(n + 2).unsqueeze(0)
    wanted = min(int(k), math.factorial(n))
    forward = tuple(range(n))
    chosen = [forward]
    if mirrored and wanted > 1:
        chosen.append(forward[::-1])
    if n <= 6:  # enumerate and sample without replacement: no collisions for short words
        pool = [p for p in itertools.permutations(range(n)) if p not in chosen]
        if mirrored:  # keep one of each mirrored pair in the pool; its partner is added with it
            pool = [p for p in pool if p < p[::-1]]
        order = rng.permutation(len(pool))
        candidates = (pool[i] for i in order)
    else:
        candidates = (tuple(int(v) for v in rng.permutation(n)) for _ in itertools.count())
    for p in candidates:
        if len(chosen) >= wanted:
            break
        if p in chosen or (mirrored and p[::-1] in chosen):
            continue
        chosen.append(p)
        if mirrored and len(chosen) < wanted:
            chosen.append(p[::-1])
    rows = [[0, *[i + 1 for i in p], n + 1] for p in chosen]
    if mirrored and len(rows) > 1:
        rows[1] = [0, n + 1, *range(n, 0, -1)]
    return torch.tensor(rows, dtype=torch.long)


def attention_masks(perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(content_mask, query_mask)``, each ``[n+1, n+1]`` of 0 (visible) and -inf (hidden), for
    one ordering ``perm`` of positions 0..n+1.

    Rows of ``query_mask`` are the outputs at positions 1..n+1 (characters, then [EOS]); columns
    are the context tokens at positions 0..n ([BOS], then characters). A query sees exactly the
    tokens that come strictly earlier in the ordering. ``content_mask`` (for decoders deeper than
    one layer, whose context stream is updated too) lets a context token at positions 0..n see
    the tokens up to and including itself in the ordering.
    """
    perm = perm.tolist() if isinstance(perm, torch.Tensor) else list(perm)
    size = len(perm)
    rank = [0] * size
    for order, position in enumerate(perm):
        rank[position] = order
    rank_t = torch.tensor(rank)
    earlier = rank_t[None, :] < rank_t[:, None]          # [q, k]: k comes before q
    not_later = rank_t[None, :] <= rank_t[:, None]
    zeros = torch.zeros(size, size)
    query = zeros.masked_fill(~earlier, NEG_INF)[1:, :-1]
    content = zeros.masked_fill(~not_later, NEG_INF)[:-1, :-1]
    return content, query


def left_to_right_mask(steps: int, device=None) -> torch.Tensor:
    """The left-to-right special case: output i sees context 0..i."""
    return torch.triu(torch.full((steps, steps), NEG_INF, device=device), 1)


def cloze_mask(steps: int, device=None) -> torch.Tensor:
    """Refinement: output i (predicting token i+1) sees every context token except token i+1."""
    mask = torch.zeros(steps, steps, device=device)
    idx = torch.arange(steps - 1, device=device)
    mask[idx, idx + 1] = NEG_INF
    return mask


# ----------------------------------------------------------------------------------------------
# The PARSeq decoder


class DecoderLayer(nn.Module):
    """Pre-norm two-stream layer: position queries (and, unless last, the context stream) attend to
    the context under a mask, then to the encoder memory, then an MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, width))
        self.norm_query, self.norm_context = nn.LayerNorm(width), nn.LayerNorm(width)
        self.norm_cross, self.norm_mlp = nn.LayerNorm(width), nn.LayerNorm(width)
        self.drop1, self.drop2, self.drop3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def _stream(self, x, x_norm, context_norm, memory, mask, padding):
        x = x + self.drop1(self.self_attn(x_norm, context_norm, context_norm, attn_mask=mask,
                                          key_padding_mask=padding, need_weights=False)[0])
        h = self.norm_cross(x)
        x = x + self.drop2(self.cross_attn(h, memory, memory, need_weights=False)[0])
        return x + self.drop3(self.mlp(self.norm_mlp(x)))

    def forward(self, query, context, memory, query_mask, context_mask, padding, update_context: bool):
        context_norm = self.norm_context(context)
        query = self._stream(query, self.norm_query(query), context_norm, memory, query_mask, padding)
        if update_context:
            context = self._stream(context, context_norm, context_norm, memory, context_mask, padding)
        return query, context


class PermutedDecoder(nn.Module):
    """PARSeq's decoder: position queries read characters from ``memory`` given a context
    (``[BOS]`` + tokens) under an attention mask; ``depth`` layers, a linear head over classes."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float, depth: int,
                 n_tokens: int, n_classes: int, max_steps: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"decoder width {width} (the CLIP's embed_dim) is not divisible by {heads} heads")
        self.width = width
        self.layers = nn.ModuleList(DecoderLayer(width, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        # The memory (CLIP tokens, and text tokens in the cross-modal branch) is not normalised
        # by the towers (ResNet tokens come straight out of projections); normalising it here
        # keeps attention logits in range from the first step.
        self.norm_memory = nn.LayerNorm(width)
        self.embed = nn.Embedding(n_tokens, width)
        self.pos_queries = nn.Parameter(torch.empty(1, max_steps, width))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, n_classes)
        nn.init.trunc_normal_(self.pos_queries, std=0.02)
        nn.init.trunc_normal_(self.embed.weight, std=0.02)

    def forward(self, context_ids: torch.Tensor, memory: torch.Tensor, query_mask: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None, padding: torch.Tensor | None = None,
                positions: slice | None = None) -> torch.Tensor:
        """Logits ``[B, Q, n_classes]`` for the query positions ``positions`` (default: one per
        context token). ``padding`` (bool ``[B, L]``, True = ignore) hides context tokens."""
        batch, length = context_ids.shape
        scale = math.sqrt(self.width)
        bos = self.embed(context_ids[:, :1]) * scale
        # Context token i (i >= 1) carries the position of the output it was: query position i-1.
        rest = self.pos_queries[:, :length - 1] + self.embed(context_ids[:, 1:]) * scale
        context = self.dropout(torch.cat([bos, rest], dim=1))
        positions = positions if positions is not None else slice(0, length)
        query = self.dropout(self.pos_queries[:, positions].expand(batch, -1, -1))
        memory = self.norm_memory(memory)
        if padding is not None:  # float mask: same type as the attention masks
            padding = torch.zeros(padding.shape, device=padding.device).masked_fill(padding, NEG_INF)
        for i, layer in enumerate(self.layers):
            query, context = layer(query, context, memory, query_mask, context_mask, padding,
                                   update_context=i < len(self.layers) - 1)
        return self.head(self.norm(query))


# ----------------------------------------------------------------------------------------------
# CLIP towers as feature extractors


def _interpolate_grid(pos: torch.Tensor, old: tuple[int, int], new: tuple[int, int]) -> torch.Tensor:
    """Resize a ``[1 + gh*gw, C]`` positional embedding grid (first row kept) bicubically."""
    if tuple(old) == tuple(new):
        return pos
    first, grid = pos[:1], pos[1:]
    grid = grid.reshape(1, old[0], old[1], -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(new), mode="bicubic", align_corners=False)
    return torch.cat([first, grid.permute(0, 2, 3, 1).reshape(new[0] * new[1], -1)], dim=0)


def native_image_size(visual: nn.Module) -> tuple[int, int]:
    size = visual.image_size
    return (size, size) if isinstance(size, int) else tuple(size)


class UnsupportedCLIP(TypeError):
    """A source CLIP whose towers the recogniser cannot read tokens from."""


def unsupported_tower(visual: nn.Module) -> UnsupportedCLIP:
    """The error for an image tower other than open_clip's ViT and ModifiedResNet (e.g. timm towers)."""
    return UnsupportedCLIP(f"image tower {type(visual).__name__} is not supported: CLIP4STR needs its token "
                           f"features, read here from open_clip's VisionTransformer and ModifiedResNet")


def adapt_visual_input(visual: nn.Module, image_size: tuple[int, int]) -> None:
    """Make an image tower take ``(height, width)`` inputs by resizing its positional embeddings
    (ViT: the patch grid; ModifiedResNet: the attention pool's 1/32 grid). In place."""
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.transformer import VisionTransformer

    h, w = image_size
    old_h, old_w = native_image_size(visual)
    if isinstance(visual, VisionTransformer):
        ph, pw = visual.patch_size if isinstance(visual.patch_size, tuple) else (visual.patch_size,) * 2
        if h % ph or w % pw:
            raise ValueError(f"image size {image_size} is not a multiple of the ViT patch ({ph}, {pw})")
        new_pos = _interpolate_grid(visual.positional_embedding.data, (old_h // ph, old_w // pw), (h // ph, w // pw))
        visual.positional_embedding = nn.Parameter(new_pos, requires_grad=visual.positional_embedding.requires_grad)
        visual.grid_size = (h // ph, w // pw)
    elif isinstance(visual, ModifiedResNet):
        if h % 32 or w % 32:
            raise ValueError(f"image size {image_size} is not a multiple of 32 (ModifiedResNet's stride)")
        pool = visual.attnpool
        pool.positional_embedding = nn.Parameter(
            _interpolate_grid(pool.positional_embedding.data, (old_h // 32, old_w // 32), (h // 32, w // 32)))
    else:
        raise unsupported_tower(visual)
    visual.image_size = (h, w)


def _attention_pool_tokens(pool: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """CLIP's AttentionPool2d kept per position: ``[B, C, h, w]`` -> ``[B, 1 + h*w, E]``.

    The first token is the pool's own output (CLIP's image embedding). Each position's token is
    its value through the pool's value and output projections, as if it attended only to itself
    (MaskCLIP's dense features): evaluating the pool's attention at every position instead would
    give tokens that are all mixtures of the same values, which at a random start are nearly
    identical and carry no position for the decoder to align characters with.
    """
    pooled = pool(x)
    tokens = x.flatten(2).transpose(1, 2) + pool.positional_embedding[1:].to(x.dtype)
    tokens = pool.c_proj(pool.v_proj(tokens))
    return torch.cat([pooled[:, None], tokens], dim=1)


def image_tokens(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Token features of an open_clip image tower in the CLIP embedding space, ``[B, N, E]``."""
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, VisionTransformer):
        # output_tokens switches the tower's return value; restored so encode_image still works.
        before, visual.output_tokens = visual.output_tokens, True
        try:
            pooled, tokens = visual(images)
        finally:
            visual.output_tokens = before
        if visual.proj is not None:
            tokens = tokens @ visual.proj
        return torch.cat([pooled[:, None], tokens], dim=1)
    if isinstance(visual, ModifiedResNet):
        x = visual.stem(images)
        x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))
        return _attention_pool_tokens(visual.attnpool, x)
    raise unsupported_tower(visual)


def text_parts(clip: nn.Module) -> nn.Module:
    """The module holding the text tower's parts: ``clip.text`` (CustomTextCLIP) or ``clip`` (CLIP)."""
    return clip.text if hasattr(clip, "text") else clip


def text_tokens(clip: nn.Module, token_ids: torch.Tensor) -> torch.Tensor:
    """Every position of the CLIP text encoder's output, projected: ``[B, context, E]``."""
    text = text_parts(clip)
    if getattr(text, "cls_emb", None) is not None:
        raise UnsupportedCLIP("text towers with a class token (CoCa-style) are not supported: the "
                              "cross-modal branch reads every position of a causal text tower")
    x = text.token_embedding(token_ids) + text.positional_embedding
    x = text.transformer(x, attn_mask=text.attn_mask)
    x = text.ln_final(x)
    proj = text.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, nn.Linear) else x @ proj


def freeze_text_layers(clip: nn.Module, n_layers: int | None) -> int:
    """Freeze the text tower's token and positional embeddings and its first ``n_layers`` blocks
    (None: half of them, the paper's 6 of 12); returns the number frozen."""
    text = text_parts(clip)
    blocks = text.transformer.resblocks
    n = len(blocks) // 2 if n_layers is None else int(n_layers)
    if not 0 <= n <= len(blocks):
        raise ValueError(f"text_frozen_layers={n_layers}: the text tower has {len(blocks)} blocks")
    text.token_embedding.weight.requires_grad_(False)
    text.positional_embedding.requires_grad_(False)
    for block in blocks[:n]:
        block.requires_grad_(False)
    return n


def clip_embed_dim(clip: nn.Module) -> int:
    return int(getattr(clip.visual, "output_dim", None) or clip.embed_dim)


# ----------------------------------------------------------------------------------------------
# CLIP4STR


class CLIP4STR(nn.Module):
    """The two-branch recogniser around an open_clip ``clip`` (see the module docstring)."""

    def __init__(self, clip: nn.Module, clip_tokenizer, cfg: STRConfig):
        super().__init__()
        self.cfg = cfg
        self.clip = clip
        self.clip_tokenizer = clip_tokenizer   # callable: list[str] -> LongTensor [B, context]
        self.tokenizer = Tokenizer(cfg.charset)
        if hasattr(clip, "logit_scale"):       # contrastive-only parameters: unused here
            clip.logit_scale.requires_grad_(False)
            if getattr(clip, "logit_bias", None) is not None:
                clip.logit_bias.requires_grad_(False)
        if cfg.image_size is not None and tuple(cfg.image_size) != native_image_size(clip.visual):
            adapt_visual_input(clip.visual, cfg.image_size)
        self.image_size = native_image_size(clip.visual)
        self.text_frozen = freeze_text_layers(clip, cfg.text_frozen_layers)
        width = clip_embed_dim(clip)
        steps = cfg.max_label_length + 1
        tok = self.tokenizer

        def decoder():
            return PermutedDecoder(width, cfg.heads, cfg.mlp_ratio, cfg.dropout, cfg.depth,
                                   tok.n_tokens, tok.n_classes, steps)

        self.visual_decoder = decoder()
        self.cross_decoder = decoder()

    # -- features ------------------------------------------------------------------------------

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return image_tokens(self.clip.visual, images)

    def cross_memory(self, visual_logits: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
        """``[image features (detached), CLIP text features of the visual branch's string]``."""
        strings = self.tokenizer.decode(visual_logits.detach().argmax(-1))
        ids = self.clip_tokenizer(strings).to(image_features.device)
        return torch.cat([image_features.detach(), text_tokens(self.clip, ids)], dim=1)

    # -- training ------------------------------------------------------------------------------

    def loss(self, images: torch.Tensor, labels: Sequence[str], rng: np.random.Generator) -> tuple[torch.Tensor, dict]:
        """Permuted-sequence-modelling loss of both branches on one batch: the token-weighted mean
        cross-entropy over orderings; [EOS] counts only in the first two orderings (left to right
        and its reverse), where its context is the whole word or nothing."""
        tok = self.tokenizer
        tgt = tok.encode(labels, images.device)
        memory = self.encode_image(images)
        perms = permutations(tgt.shape[1] - 2, self.cfg.perm_num, self.cfg.perm_mirrored, rng)
        context, target = tgt[:, :-1], tgt[:, 1:]
        padding = (context == tok.pad) | (context == tok.eos)
        total = visual_total = cross_total = 0.0
        count = 0
        cross_memory = None
        for i, perm in enumerate(perms):
            content_mask, query_mask = (m.to(images.device) for m in attention_masks(perm))
            n = int((target != tok.pad).sum())
            visual_logits = self.visual_decoder(context, memory, query_mask, content_mask, padding)
            visual_loss = F.cross_entropy(visual_logits.flatten(0, 1), target.flatten(), ignore_index=tok.pad)
            if cross_memory is None:
                cross_memory = self.cross_memory(visual_logits, memory)
            cross_logits = self.cross_decoder(context, cross_memory, query_mask, content_mask, padding)
            cross_loss = F.cross_entropy(cross_logits.flatten(0, 1), target.flatten(), ignore_index=tok.pad)
            total = total + n * (visual_loss + self.cfg.cross_loss_weight * cross_loss)
            visual_total += n * visual_loss.item()
            cross_total += n * cross_loss.item()
            count += n
            if i == 1:
                target = torch.where(target == tok.eos, tok.pad, target)
        return total / count, {"visual": visual_total / count, "cross": cross_total / count,
                               "perms": len(perms)}

    # -- inference -----------------------------------------------------------------------------

    def _greedy(self, decoder: PermutedDecoder, memory: torch.Tensor, steps: int) -> torch.Tensor:
        """Left-to-right greedy decoding, one query per step; stops when every row has [EOS]."""
        tok = self.tokenizer
        batch = memory.shape[0]
        context = torch.full((batch, steps), tok.pad, dtype=torch.long, device=memory.device)
        context[:, 0] = tok.bos
        mask = left_to_right_mask(steps, memory.device)
        logits = []
        for i in range(steps):
            step = decoder(context[:, :i + 1], memory, mask[i:i + 1, :i + 1], mask[:i + 1, :i + 1],
                           positions=slice(i, i + 1))
            logits.append(step)
            if i + 1 < steps:
                context[:, i + 1] = step[:, 0].argmax(-1)
                if (context == tok.eos).any(dim=1).all():
                    break
        return torch.cat(logits, dim=1)

    def _refine(self, decoder: PermutedDecoder, memory: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """One cloze pass: every position re-read with all other predicted tokens as context."""
        tok = self.tokenizer
        steps = previous.shape[1]
        bos = torch.full((previous.shape[0], 1), tok.bos, dtype=torch.long, device=previous.device)
        context = torch.cat([bos, previous[:, :-1].argmax(-1)], dim=1)
        padding = (context == tok.eos).cumsum(-1) > 0       # nothing after the first [EOS]
        mask = cloze_mask(steps, previous.device)
        return decoder(context, memory, mask, left_to_right_mask(steps, previous.device), padding)

    @torch.inference_mode()
    def predict(self, images: torch.Tensor) -> dict[str, list[str]]:
        """Predict-and-refine: strings of ``visual`` (visual branch alone), ``visual_ar`` (its
        left-to-right decode before refinement), ``cross_ar`` and ``refined`` (the final output)."""
        steps = self.cfg.max_label_length + 1
        memory = self.encode_image(images)
        visual = visual_ar = self._greedy(self.visual_decoder, memory, steps)
        cross = cross_ar = self._greedy(self.cross_decoder, self.cross_memory(visual, memory), visual.shape[1])
        for _ in range(self.cfg.refine_iters):
            visual = self._refine(self.visual_decoder, memory, visual)
            cross = self._refine(self.cross_decoder, self.cross_memory(visual, memory), cross)
        decode = self.tokenizer.decode
        return {"visual": decode(visual.argmax(-1)), "visual_ar": decode(visual_ar.argmax(-1)),
                "cross_ar": decode(cross_ar.argmax(-1)), "refined": decode(cross.argmax(-1))}


# ----------------------------------------------------------------------------------------------
# Images in


def image_normalisation(visual: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std the CLIP was trained with (open_clip stores them on the tower)."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    mean = getattr(visual, "image_mean", None) or OPENAI_DATASET_MEAN
    std = getattr(visual, "image_std", None) or OPENAI_DATASET_STD
    return tuple(mean), tuple(std)


def to_tensor_batch(images, size: tuple[int, int], mean, std) -> torch.Tensor:
    """PIL word images -> ``[B, 3, H, W]``, resized to ``size`` (stretched, as STR models read
    crops) and normalised."""
    h, w = size
    arrays = [np.asarray(im.convert("RGB").resize((w, h), resample=3), dtype=np.float32) / 255.0 for im in images]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
