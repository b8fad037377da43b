"""The LAION improved aesthetic predictor, for the paper's "simple fix" (Sec. 8: aesthetics > 4.5).

The predictor (christophschuhmann/improved-aesthetic-predictor, the model behind LAION-5B's
aesthetic subsets) is a small MLP head on **L2-normalised CLIP ViT-L/14 image embeddings** (768-d)
that regresses a mean human rating on a roughly 1-10 scale. Its released weights (e.g.
``sac+logos+ava1-l14-linearMSE.pth``) are a plain state dict of the repository's ``MLP.layers``,
an ``nn.Sequential`` whose activations are commented out and whose dropouts take indices::

    layers.0  Linear(768, 1024)     layers.1  Dropout(0.2)
    layers.2  Linear(1024, 128)     layers.3  Dropout(0.2)
    layers.4  Linear(128, 64)       layers.5  Dropout(0.1)
    layers.6  Linear(64, 16)        layers.7  Linear(16, 1)

:class:`AestheticHead` reproduces that layout exactly (same module names and indices), so the
released file loads with ``strict=True``. The weights come from a configured local path: this
workflow never downloads them. The embeddings come from the ``embed`` stage of a configured scorer,
which must be a CLIP ViT-L/14 for the scores to mean anything (the head checks only the width).
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd
import torch
from torch import nn

from .devices import set_torch_threads
from .embed import read_embeddings
from .io import KEY, write_parquet

log = logging.getLogger(__name__)

EMBED_DIM = 768  # CLIP ViT-L/14's image embedding width, the head's input
IMAGE_EMB = "image_emb"  # the embed stage's column of L2-normalised image embeddings
SCORE = "aesthetic"


class AestheticHead(nn.Module):
    """The released predictor's ``layers``: linear layers only (its ReLUs are commented out), with
    the dropouts kept as modules so that the state-dict indices match the released file."""

    def __init__(self, input_size: int = EMBED_DIM):
        super().__init__()
        self.input_size = input_size
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def load_aesthetic_head(path: str | os.PathLike) -> AestheticHead:
    """The head with the weights of ``path`` (a state dict as released), in eval mode.

    A file that does not fit the released layout raises ``ValueError`` naming the file, so a
    wrong checkpoint (e.g. the ViT-B/32 predictor, 512-d) is never scored silently.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"aesthetic predictor weights {path!r} not found. Download the improved aesthetic predictor's "
            f"sac+logos+ava1-l14-linearMSE.pth and set config filters.aesthetic.weights to its local path.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:  # a Lightning checkpoint of the same MLP
        state = state["state_dict"]
    head = AestheticHead()
    try:
        head.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: not an improved-aesthetic-predictor state dict for {EMBED_DIM}-d "
                         f"CLIP ViT-L/14 embeddings ({exc})") from exc
    return head.eval()


def aesthetic_scores(head: AestheticHead, embeddings: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """One score per row of ``embeddings`` (n x 768), float32.

    Rows are L2-normalised here again: the head was trained on normalised embeddings, and an
    already-normalised row is unchanged (up to rounding).
    """
    emb = np.array(embeddings, dtype=np.float32)  # a writable copy: torch refuses read-only arrow buffers
    if emb.ndim != 2 or emb.shape[1] != head.input_size:
        raise ValueError(f"aesthetic head expects n x {head.input_size} image embeddings (CLIP ViT-L/14), "
                         f"got shape {emb.shape}; set filters.aesthetic.scorer to a ViT-L/14 scorer")
    out = np.empty(len(emb), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(emb), batch_size):
            x = torch.nn.functional.normalize(torch.from_numpy(emb[start:start + batch_size]), dim=-1)
            out[start:start + len(x)] = head(x).squeeze(-1).numpy()
    return out


def run_aesthetic(embed_path: str, weights: str, out_path: str, batch_size: int = 4096,
                  threads: int = 1) -> dict:
    """Score one part's image embeddings with the predictor; write ``(__key__, aesthetic)``, one row
    per embedded sample (the embed stage embeds the usable samples and counts the skipped ones)."""
    set_torch_threads(threads)
    head = load_aesthetic_head(weights)
    keys, emb = read_embeddings(embed_path, (IMAGE_EMB,))
    out = pd.DataFrame({KEY: keys, SCORE: aesthetic_scores(head, emb[IMAGE_EMB], batch_size)})
    write_parquet(out, out_path)
    counts = {"n_scored": int(len(out)), "mean": float(out[SCORE].mean()) if len(out) else None,
              "min": float(out[SCORE].min()) if len(out) else None,
              "max": float(out[SCORE].max()) if len(out) else None}
    log.info("aesthetic scores of %s: %s", embed_path, counts)
    return counts
