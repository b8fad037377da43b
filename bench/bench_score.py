"""Throughput of the score stage against the bare OpenCLIP forward, on the same images and captions.

Run on demand (not a test):

    .venv/bin/python bench/bench_score.py                      # tiny-rn, tiny-vit, ViT-B-32; 1 and 2 threads
    .venv/bin/python bench/bench_score.py --archs tiny-rn --threads 1 --no-write   # quick look

What it measures, in one process, per architecture (random weights: speed does not depend on them,
and no pretrained weights are reachable offline), batch by batch over identical inputs:

* *forward*: ``encode_image`` + ``encode_text`` + normalise + dot on tensors that were preprocessed
  and tokenised beforehand: the model alone, an upper bound;
* *open_clip usage*: the loop a user would write with OpenCLIP's API: ``preprocess(PIL image)``
  per image, ``tokenizer(captions)``, then the forward;
* *stage*: :func:`parrotscope.score.score_table` over ``(key, RGB uint8 array, caption)`` items,
  progress bar off (array-to-PIL conversion, batching and the table included).

Images: the demo shards (``results/demo/shards/*.tar``, 128 px JPEGs with their captions) when a demo
run made them, otherwise random-noise 128x128 images with short captions. The markdown table is
printed and, unless ``--no-write``, written under ``## score`` in docs/BENCHMARKS.md (other
sections of that file are kept).
"""

from __future__ import annotations

import os

# Must precede the first torch import: OpenMP reads it once. Without it, OpenMP's spinning threads
# run many times slower whenever another process holds one of the cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import datetime
import glob
import io
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from parrotscope.score import Scorer, score_table
from parrotscope.shards import iter_shard
from parrotscope.train import build_model

from benchdoc import add_common_arguments, publish

ROOT = Path(__file__).resolve().parents[1]
SECTION = "score"


def load_demo_pairs(pattern: str, n: int) -> list[tuple[str, np.ndarray, str]]:
    """The first ``n`` (key, RGB array, caption) of the demo shards."""
    out = []
    for url in sorted(glob.glob(pattern)):
        for sample in iter_shard(url):
            if "jpg" in sample.files and "txt" in sample.files:
                image = np.asarray(Image.open(io.BytesIO(sample.files["jpg"])).convert("RGB"))
                out.append((sample.key, image, sample.files["txt"].decode("utf-8")))
                if len(out) == n:
                    return out
    return out


def noise_pairs(n: int, seed: int = 0) -> list[tuple[str, np.ndarray, str]]:
    rng = np.random.default_rng(seed)
    words = "sale parrot coffee hello world summer organic fresh love home".split()
    return [(f"{i:06d}", rng.integers(0, 256, (128, 128, 3), dtype=np.uint8),
             " ".join(rng.choice(words, 3))) for i in range(n)]


def batches(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def run_forward(scorer: Scorer, prepared: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for pixels, tokens in prepared:
            img = F.normalize(scorer.model.encode_image(pixels), dim=-1)
            txt = F.normalize(scorer.model.encode_text(tokens), dim=-1)
            (img * txt).sum(-1).numpy()
    return time.perf_counter() - start


def run_open_clip_usage(scorer: Scorer, pil_batches: list[tuple[list[Image.Image], list[str]]]) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for images, captions in pil_batches:
            pixels = torch.stack([scorer.preprocess(im) for im in images])
            img = F.normalize(scorer.model.encode_image(pixels), dim=-1)
            txt = F.normalize(scorer.model.encode_text(scorer.tokenizer(captions)), dim=-1)
            (img * txt).sum(-1).numpy()
    return time.perf_counter() - start


def run_stage(scorer: Scorer, items: list[tuple[str, np.ndarray, str]], batch_size: int) -> float:
    start = time.perf_counter()
    score_table(scorer, iter(items), batch_size=batch_size, progress=False)
    return time.perf_counter() - start


def bench_arch(arch: str, items: list, batch_size: int, repeats: int) -> dict:
    """Best-of-``repeats`` images/s of the three ways, interleaved so drifting load hits all alike."""
    torch.manual_seed(0)
    model, preprocess, tokenizer = build_model(arch, device="cpu")
    scorer = Scorer(arch, model, preprocess, tokenizer, "cpu")
    chunks = batches(items, batch_size)
    pil_batches = [([Image.fromarray(im) for _, im, _ in c], [cap for _, _, cap in c]) for c in chunks]
    prepared = [(torch.stack([preprocess(im) for im in ims]), tokenizer(caps)) for ims, caps in pil_batches]
    run_stage(scorer, items[:batch_size], batch_size)  # warm-up: first-call allocations
    best = {"forward": np.inf, "open_clip": np.inf, "stage": np.inf}
    for _ in range(repeats):
        best["forward"] = min(best["forward"], run_forward(scorer, prepared))
        best["open_clip"] = min(best["open_clip"], run_open_clip_usage(scorer, pil_batches))
        best["stage"] = min(best["stage"], run_stage(scorer, items, batch_size))
    rates = {k: len(items) / v for k, v in best.items()}
    image_size = model.visual.image_size
    return {"arch": arch, "n": len(items), "image_size": image_size[0] if isinstance(image_size, tuple) else image_size,
            **rates}


def markdown(rows: list[dict], source: str, batch_size: int, load: float) -> str:
    lines = [
        f"## {SECTION}",
        "",
        f"Measured {datetime.date.today().isoformat()} by `bench/bench_score.py` on {platform.machine()} Linux, "
        f"{os.cpu_count()} CPU cores, Python {platform.python_version()}, torch {torch.__version__}, "
        f"open_clip {__import__('open_clip').__version__}; fp32, batch {batch_size}, random weights, "
        f"`OMP_WAIT_POLICY=PASSIVE`; best of interleaved repeats; 1-minute load average {load:.1f} when the "
        f"run started (other processes slow every variant alike, the ratio holds better than the rates). "
        f"Images: {source}, resized by each model's eval transform.",
        "",
        "*forward*: `encode_image` + `encode_text` + normalise + dot on tensors preprocessed and tokenised "
        "beforehand (the model alone); *open_clip usage*: `preprocess(PIL)` per image, `tokenizer`, forward; "
        "*stage*: `score_table` on `(key, RGB array, caption)` items.",
        "",
        "| arch | input px | images | threads | forward img/s | open_clip usage img/s | stage img/s "
        "| stage / forward | stage / open_clip usage |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['arch']} | {r['image_size']} | {r['n']} | {r['threads']} | {rate(r['forward'])} | "
            f"{rate(r['open_clip'])} | {rate(r['stage'])} | {r['stage'] / r['forward']:.2f} | "
            f"{r['stage'] / r['open_clip']:.2f} |")
    return "\n".join(lines) + "\n"


def rate(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=["tiny-rn", "tiny-vit", "ViT-B-32"])
    parser.add_argument("--n", type=int, default=256, help="images for the tiny archs (default 256)")
    parser.add_argument("--n-large", type=int, default=64, help="images for 224 px archs (default 64)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    add_common_arguments(parser, ROOT)
    args = parser.parse_args(argv)

    load = os.getloadavg()[0]
    items = load_demo_pairs(args.shards, max(args.n, args.n_large)) if glob.glob(args.shards) else []
    source = "demo-shard 128 px JPEGs with their captions"
    if len(items) < max(args.n, args.n_large):
        items = noise_pairs(max(args.n, args.n_large))
        source = "random-noise 128x128 images with 3-word captions"
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for arch in args.archs:
            n = args.n if arch.startswith("tiny") else args.n_large
            row = {**bench_arch(arch, items[:n], args.batch_size, args.repeats), "threads": threads}
            print({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
            rows.append(row)
    section = markdown(rows, source, args.batch_size, load)
    publish(f"## {SECTION}", section, args)


if __name__ == "__main__":
    main()
