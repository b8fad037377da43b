"""Stage ``str``: fine-tune each source CLIP as a CLIP4STR recogniser, score it, probe it (its table:
:func:`parrotscope.tables.build_str_table`).

Sources
    A source spec names the CLIP a recogniser starts from, as :func:`parrotscope.score.load_scorer`
    takes it (``{"name", "arch", "checkpoint"}`` for a CLIP this workflow trained, or
    ``"pretrained"`` for released weights), or ``{"name", "arch", "init": "random"}``: the same
    architecture randomly initialised (seeded), the control that tells what CLIP pre-training adds.

Training (:func:`train_str`)
    A plain PyTorch loop (OpenCLIP's trainer does not do STR): AdamW (betas 0.9/0.98, eps 1e-6, as
    CLIP4STR), no weight decay on gains, biases, embeddings and position queries, one learning
    rate for the CLIP towers and a larger one for the decoders (the paper's decoders learn 19x
    faster), linear warmup then cosine decay (CLIP4STR uses a one-cycle schedule of this shape),
    gradient clipping, a fixed number of steps over a shuffled, seeded stream of the training
    LMDB. CPU runs in fp32; CUDA in bf16 autocast. The checkpoint is a plain dict of tensors and
    config values written atomically with ``torch.save``, read back with ``weights_only=True``.

Evaluation (:func:`evaluate_str`)
    Predict-and-refine over a benchmark LMDB; per sample the label, the strings of each stage of
    inference, and whether the visual branch alone and the refined output are correct (36-char
    benchmark scoring, :func:`parrotscope.str_data.is_correct`). Unusable labels are rows with a
    status, never silently dropped: ``samples in = processed + skipped``.

Zero-shot probe (:func:`probe_str`)
    No fine-tuning: each word image (letter-boxed to the CLIP's square input, so glyphs keep their
    shape) is ranked against every distinct word of the benchmark, encoded by the CLIP text
    encoder with ``template``; a word is read when its own word ranks first (chance = 1 / vocabulary).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from .devices import resolve_device, set_torch_threads
from .io import KEY, atomic_path, write_json, write_parquet
from .str_data import CHARSET_36, LmdbWords, benchmark_label, is_correct, sample_key, skip_reason, usable_indices
from .str_model import CLIP4STR, STRConfig, image_normalisation, to_tensor_batch

log = logging.getLogger(__name__)

DEFAULT_HPARAMS = {
    "steps": 300,
    "batch_size": 64,
    "lr": 1e-3,              # CLIP towers
    "decoder_lr": 3e-3,      # the decoders, trained from scratch
    "weight_decay": 0.05,
    "warmup": 0.075,         # share of the steps (CLIP4STR's warmup_pct)
    "grad_clip": 20.0,
    "workers": 0,            # DataLoader workers
    "log_every": 25,
}
OUTPUTS = ("visual", "refined", "visual_ar", "cross_ar")


# ----------------------------------------------------------------------------------------------
# Sources


def load_source_clip(spec: dict, seed: int = 0):
    """``(clip, tokenizer)`` on CPU for a source spec (see the module docstring)."""
    from .score import load_scorer
    from .train import build_model

    if spec.get("init") == "random":
        torch.manual_seed(seed)
        clip, _, tokenizer = build_model(spec["arch"], device="cpu")
        return clip, tokenizer
    scorer = load_scorer({k: v for k, v in spec.items() if k != "init"}, device="cpu")
    return scorer.model, scorer.tokenizer


def build_recogniser(spec: dict, cfg: STRConfig, seed: int = 0) -> CLIP4STR:
    clip, tokenizer = load_source_clip(spec, seed)
    return CLIP4STR(clip, tokenizer, cfg)


def resolve_hparams(hparams: dict | None) -> dict:
    """STR fine-tuning settings: :data:`DEFAULT_HPARAMS` overlaid with ``hparams``."""
    from .train import overlay_hparams

    return overlay_hparams(DEFAULT_HPARAMS, hparams, "STR training")


# ----------------------------------------------------------------------------------------------
# Training


class WordImages(torch.utils.data.Dataset):
    """``(image tensor, label)`` of chosen LMDB samples, resized and normalised for a recogniser."""

    def __init__(self, words: LmdbWords, indices: Sequence[int], size, mean, std):
        self.words, self.indices, self.size, self.mean, self.std = words, list(indices), size, mean, std

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int):
        image, label = self.words[self.indices[j]]
        return to_tensor_batch([image], self.size, self.mean, self.std)[0], label


def _collate(batch):
    return torch.stack([b[0] for b in batch]), [b[1] for b in batch]


def param_groups(model: CLIP4STR, lr: float, decoder_lr: float, weight_decay: float) -> list[dict]:
    """AdamW groups: CLIP towers vs decoders, each split into decayed matrices and undecayed
    gains, biases, embeddings and position queries (CLIP4STR's and OpenCLIP's exclusions)."""
    groups = {(enc, decay): [] for enc in (True, False) for decay in (True, False)}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim < 2 or "pos_queries" in name or "embed" in name or "bn" in name or "ln" in name
        groups[(name.startswith("clip."), not no_decay)].append(p)
    out = []
    for (enc, decay), params in groups.items():
        if params:
            out.append({"params": params, "lr": lr if enc else decoder_lr,
                        "weight_decay": weight_decay if decay else 0.0})
    return out


def warmup_cosine(step: int, total: int, warmup: float) -> float:
    """Learning-rate factor: linear from ~0 to 1 over ``warmup`` x ``total`` steps, then cosine to 0."""
    warm = max(1, int(round(warmup * total)))
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _batches(loader):
    """Endless stream of batches: the loader reshuffles (seeded) at each pass."""
    while True:
        yield from loader


def save_recogniser(model: CLIP4STR, spec: dict, path: str, extra: dict | None = None) -> None:
    """Tensors and plain values only, so ``torch.load(weights_only=True)`` reads it back."""
    payload = {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "config": model.cfg.to_dict(), "source": dict(spec), **(extra or {})}
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)


def load_recogniser(path: str, spec: dict | None = None, device: str = "cpu") -> CLIP4STR:
    """A recogniser saved by :func:`train_str`, rebuilt around its source CLIP, in eval mode.

    The source is loaded as in training (it fixes the architecture and its settings, e.g.
    QuickGELU of OpenAI weights), then every weight is replaced, strictly, by the checkpoint's.
    """
    payload = torch.load(path, map_location="cpu", weights_only=True)
    spec = dict(spec or payload["source"])
    model = build_recogniser(spec, STRConfig(**payload["config"]))
    model.load_state_dict(payload["state_dict"], strict=True)
    model.source = spec
    return model.to(device).eval()


def train_str(spec: dict, train_lmdb: str, cfg: STRConfig, hparams: dict, out_model: str, out_json: str,
              device: str = "auto", seed: int = 0, threads: int | None = None, progress: bool = True) -> dict:
    """Fine-tune the source CLIP ``spec`` as a CLIP4STR recogniser; write the model and a record."""
    t0 = time.monotonic()
    hp = resolve_hparams(hparams)
    device = resolve_device(device)
    set_torch_threads(threads)
    torch.manual_seed(seed)
    model = build_recogniser(spec, cfg, seed).to(device).train()
    words = LmdbWords(train_lmdb)
    indices, skipped = usable_indices(words, cfg.charset, cfg.max_label_length)
    if len(indices) < hp["batch_size"]:
        raise ValueError(f"{train_lmdb}: {len(indices)} usable samples, fewer than one batch of {hp['batch_size']}")
    mean, std = image_normalisation(model.clip.visual)
    data = WordImages(words, indices, model.image_size, mean, std)
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(data, batch_size=hp["batch_size"], shuffle=True, drop_last=True,
                                         num_workers=hp["workers"], collate_fn=_collate, generator=generator)
    optimizer = torch.optim.AdamW(param_groups(model, hp["lr"], hp["decoder_lr"], hp["weight_decay"]),
                                  betas=(0.9, 0.98), eps=1e-6)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, hp["steps"], hp["warmup"]))
    rng = np.random.default_rng(seed)
    amp = device.startswith("cuda")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    log.info("source %s: %d trainable, %d frozen parameters; %d text blocks frozen; input %s; %d/%d "
             "training words usable", spec.get("name"), trainable, frozen, model.text_frozen,
             model.image_size, len(indices), len(words))

    curve = []
    stream = _batches(loader)
    bar = tqdm(range(hp["steps"]), desc=f"str_train {spec.get('name')}", file=sys.stderr,
               disable=not progress, mininterval=10)
    t_loop = time.monotonic()
    for step in bar:
        images, labels = next(stream)
        images = images.to(device, non_blocking=True)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
            loss, parts = model.loss(images, labels, rng)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), hp["grad_clip"])
        optimizer.step()
        schedule.step()
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"STR training loss is {value} at step {step}")
        if step % hp["log_every"] == 0 or step == hp["steps"] - 1:
            curve.append({"step": step, "loss": value, "visual": parts["visual"], "cross": parts["cross"],
                          "lr": schedule.get_last_lr()[0]})
            bar.set_postfix(loss=f"{value:.3f}")
            log.info("step %d loss %.4f (visual %.4f, cross %.4f)", step, value, parts["visual"], parts["cross"])
    loop_s = time.monotonic() - t_loop
    model.eval()
    save_recogniser(model, spec, out_model)
    record = {
        "source": spec, "config": cfg.to_dict(), "hparams": hp, "seed": int(seed), "device": device,
        "precision": "bf16-autocast" if amp else "fp32",
        "train_samples": len(words), "train_usable": len(indices), "train_skipped": skipped,
        "input_size": list(model.image_size), "trainable_params": trainable, "frozen_params": frozen,
        "text_frozen_layers": model.text_frozen,
        "samples_seen": hp["steps"] * hp["batch_size"], "train_loop_s": loop_s,
        "samples_per_s": hp["steps"] * hp["batch_size"] / loop_s if loop_s > 0 else None,
        "final_loss": curve[-1]["loss"], "loss_curve": curve, "wall_s": time.monotonic() - t0,
    }
    write_json(record, out_json)
    return record


# ----------------------------------------------------------------------------------------------
# Evaluation


def _label_rows(words: LmdbWords, max_length: int) -> pd.DataFrame:
    """One row per sample: key, label and status (``ok`` or why it is skipped), benchmark charset."""
    labels = words.labels()
    return pd.DataFrame({
        KEY: [sample_key(i) for i in range(len(labels))],
        "label": labels,
        "status": [skip_reason(x, CHARSET_36, max_length) or "ok" for x in labels],
    })


def _accounting(rows: pd.DataFrame) -> dict:
    ok = rows["status"] == "ok"
    return {"samples_in": int(len(rows)), "processed": int(ok.sum()), "skipped": int((~ok).sum()),
            "skipped_by_reason": {str(k): int(v) for k, v in rows.loc[~ok, "status"].value_counts().items()}}


def evaluate_str(model_path: str, bench_lmdb: str, out_json: str, out_parquet: str, benchmark: str = "",
                 batch_size: int = 128, device: str = "auto", threads: int | None = None,
                 spec: dict | None = None, progress: bool = True) -> dict:
    """Word accuracy of a recogniser on one benchmark, per inference stage (module docstring)."""
    device = resolve_device(device)
    set_torch_threads(threads)
    model = load_recogniser(model_path, spec, device)
    words = LmdbWords(bench_lmdb)
    rows = _label_rows(words, model.cfg.max_label_length)
    mean, std = image_normalisation(model.clip.visual)
    ok = np.flatnonzero(rows["status"].to_numpy() == "ok")
    preds = {k: [None] * len(rows) for k in OUTPUTS}
    t0 = time.monotonic()
    for start in tqdm(range(0, len(ok), batch_size), desc=f"str_eval {benchmark}", file=sys.stderr,
                      disable=not progress, mininterval=10):
        idx = ok[start:start + batch_size]
        images = to_tensor_batch([words.image(int(i)) for i in idx], model.image_size, mean, std).to(device)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
            out = model.predict(images)
        for k in OUTPUTS:
            for i, text in zip(idx, out[k]):
                preds[k][i] = text
    for k in OUTPUTS:
        rows[k] = preds[k]
        rows[f"correct_{k}"] = [None if p is None else is_correct(p, t) for p, t in zip(preds[k], rows["label"])]
    write_parquet(rows, out_parquet)
    scored = rows.iloc[ok]
    metrics = {
        "benchmark": benchmark, "model": str(model_path), "source": model.source.get("name"),
        **_accounting(rows),
        **{f"acc_{k}": float(scored[f"correct_{k}"].astype(bool).mean()) if len(scored) else None for k in OUTPUTS},
        "eval_s": time.monotonic() - t0,
    }
    write_json(metrics, out_json)
    return metrics


# ----------------------------------------------------------------------------------------------
# Zero-shot probe


def letterbox(image: Image.Image, side: int) -> Image.Image:
    """Fit the whole image in a ``side`` x ``side`` square, keeping its aspect, on its mean colour."""
    image = image.convert("RGB")
    scale = side / max(image.width, image.height)
    w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    resized = image.resize((w, h), resample=3)
    fill = tuple(int(v) for v in np.asarray(resized, dtype=np.float32).reshape(-1, 3).mean(0))
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(resized, ((side - w) // 2, (side - h) // 2))
    return canvas


@torch.inference_mode()
def probe_str(spec: dict, bench_lmdb: str, out_json: str, out_parquet: str, benchmark: str = "",
              template: str = "{}", batch_size: int = 128, max_length: int = 25, device: str = "auto",
              threads: int | None = None, seed: int = 0, progress: bool = True) -> dict:
    """Zero-shot word reading of a CLIP without fine-tuning (module docstring)."""
    from .str_model import native_image_size

    device = resolve_device(device)
    set_torch_threads(threads)
    clip, tokenizer = load_source_clip(spec, seed)
    clip = clip.to(device).eval()
    words = LmdbWords(bench_lmdb)
    rows = _label_rows(words, max_length)
    ok = np.flatnonzero(rows["status"].to_numpy() == "ok")
    targets = [benchmark_label(rows["label"].iat[i]) for i in ok]
    vocab = sorted(set(targets))
    text = []
    for start in range(0, len(vocab), batch_size):
        ids = tokenizer([template.format(w) for w in vocab[start:start + batch_size]]).to(device)
        text.append(F.normalize(clip.encode_text(ids).float(), dim=-1))
    text = torch.cat(text) if text else torch.empty(0)
    side = native_image_size(clip.visual)[0]
    mean, std = image_normalisation(clip.visual)
    predicted = [None] * len(rows)
    for start in tqdm(range(0, len(ok), batch_size), desc=f"str_probe {benchmark}", file=sys.stderr,
                      disable=not progress, mininterval=10):
        idx = ok[start:start + batch_size]
        images = to_tensor_batch([letterbox(words.image(int(i)), side) for i in idx], (side, side), mean, std)
        feats = F.normalize(clip.encode_image(images.to(device)).float(), dim=-1)
        best = (feats @ text.T).argmax(-1).tolist()
        for i, b in zip(idx, best):
            predicted[i] = vocab[b]
    rows["probe"] = predicted
    rows["correct_probe"] = [None if p is None else p == benchmark_label(t) for p, t in zip(predicted, rows["label"])]
    write_parquet(rows, out_parquet)
    scored = rows.iloc[ok]
    metrics = {"benchmark": benchmark, "source": spec.get("name"), **_accounting(rows),
               "vocabulary": len(vocab), "chance": 1.0 / len(vocab) if vocab else None,
               "template": template,
               "acc_probe": float(scored["correct_probe"].astype(bool).mean()) if len(scored) else None}
    write_json(metrics, out_json)
    return metrics

