"""Throughput of the score stage against the bare OpenCLIP forward, on the same images and captions.

Run on demand (not a test):

    .venv/bin/python bench/bench_score.py                      # tiny-rn, tiny-vit, ViT-B-32; 0-2 workers
    .venv/bin/python bench/bench_score.py --archs tiny-rn --workers 0 1 --no-write   # quick look

What it measures, in one process, per architecture (random weights: speed does not depend on them,
and no pretrained weights are reachable offline), over identical inputs:

* *forward*: ``encode_image`` + ``encode_text`` + normalise + dot on tensors that were decoded,
  preprocessed and tokenised beforehand: the model alone, an upper bound;
* *stage, w workers*: :func:`parrotscope.score.score_table` on a
  :class:`parrotscope.feed.ShardPairs` of the shards: tar reading, JPEG decoding, the eval
  transform and tokenising in ``w`` DataLoader workers (0: in the main process), the forward in
  the main process, progress bar off: what the score stage does per part.

The forward runs on ``--threads`` torch threads; each worker on one. Images: the first ``--n``
samples of the demo shards (``results/demo/shards/*.tar``, 128 px JPEGs), or random-noise 128 px
JPEGs written to a temporary shard when no demo run made them. The markdown table is printed and,
unless ``--no-write``, written under ``## score`` in docs/BENCHMARKS.md (other sections are kept).
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
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from parrotscope.feed import ShardPairs, to_pil
from parrotscope.score import Scorer, score_table
from parrotscope.shards import decode_image, iter_encoded, iter_part
from parrotscope.train import build_model

from benchdoc import add_common_arguments, publish

ROOT = Path(__file__).resolve().parents[1]
SECTION = "score"


def demo_pairs(shards: list[str], n: int) -> ShardPairs:
    """The first ``n`` JPEG samples (with a caption) of the shards, as the stage reads them."""
    captions: dict[str, str] = {}
    for sample in iter_part(shards):
        if "jpg" in sample.files and "txt" in sample.files and sample.key not in captions:
            captions[sample.key] = sample.files["txt"].decode("utf-8")
            if len(captions) == n:
                break
    return ShardPairs(tuple(shards), captions, 10**8)


def noise_shard(path: Path, n: int, seed: int = 0) -> ShardPairs:
    """``n`` random-noise 128 px JPEGs with 3-word captions in one shard at ``path``."""
    import webdataset as wds

    rng = np.random.default_rng(seed)
    words = "sale parrot coffee hello world summer organic fresh love home".split()
    captions = {}
    with wds.TarWriter(str(path)) as w:
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(buf, format="JPEG")
            captions[f"{i:06d}"] = " ".join(rng.choice(words, 3))
            w.write({"__key__": f"{i:06d}", "jpg": buf.getvalue(), "txt": captions[f"{i:06d}"]})
    return ShardPairs((str(path),), captions, 10**8)


def prepared_batches(pairs: ShardPairs, preprocess, tokenizer, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The forward's inputs, made beforehand: decoded, preprocessed and tokenised batches."""
    items = [(preprocess(to_pil(decode_image(k, shard, data, pairs.max_pixels))), pairs.captions[k])
             for k, shard, data in iter_encoded(pairs.shards, set(pairs.captions))]
    chunks = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    return [(torch.stack([p for p, _ in c]), tokenizer([cap for _, cap in c])) for c in chunks]


def run_forward(scorer: Scorer, prepared: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for pixels, tokens in prepared:
            img = F.normalize(scorer.model.encode_image(pixels), dim=-1)
            txt = F.normalize(scorer.model.encode_text(tokens), dim=-1)
            (img * txt).sum(-1).numpy()
    return time.perf_counter() - start


def _decode_until(pairs: ShardPairs, preprocess, stop) -> None:
    """A worker's load: decode and preprocess the shard's images, again and again, until ``stop``."""
    torch.set_num_threads(1)
    while not stop.is_set():
        for key, shard, data in iter_encoded(pairs.shards, set(pairs.captions)):
            preprocess(to_pil(decode_image(key, shard, data, pairs.max_pixels)))
            if stop.is_set():
                return


def run_forward_beside_decoding(scorer: Scorer, prepared: list, pairs: ShardPairs) -> float:
    """:func:`run_forward` while another process decodes and preprocesses, as a DataLoader worker
    does: on a machine whose cores share caches or a physical core, the forward's ceiling."""
    import multiprocessing

    stop = multiprocessing.Event()
    busy = multiprocessing.Process(target=_decode_until, args=(pairs, scorer.preprocess, stop))
    busy.start()
    try:
        time.sleep(0.5)  # the decoder is running
        return run_forward(scorer, prepared)
    finally:
        stop.set()
        busy.join()


def run_stage(scorer: Scorer, pairs: ShardPairs, batch_size: int, workers: int) -> float:
    start = time.perf_counter()
    score_table(scorer, pairs, batch_size=batch_size, workers=workers, progress=False)
    return time.perf_counter() - start


def bench_arch(arch: str, pairs: ShardPairs, batch_size: int, workers: list[int], repeats: int) -> dict:
    """Best-of-``repeats`` images/s of the forward and of the stage at each worker count,
    interleaved so drifting load hits all alike."""
    torch.manual_seed(0)
    model, preprocess, tokenizer = build_model(arch, device="cpu")
    scorer = Scorer(arch, model.eval(), preprocess, tokenizer, "cpu")
    prepared = prepared_batches(pairs, preprocess, tokenizer, batch_size)
    run_forward(scorer, prepared[:1])  # warm-up: first-call allocations
    best = {"forward": np.inf, "forward, decoding beside": np.inf, **{w: np.inf for w in workers}}
    for _ in range(repeats):
        best["forward"] = min(best["forward"], run_forward(scorer, prepared))
        best["forward, decoding beside"] = min(best["forward, decoding beside"],
                                               run_forward_beside_decoding(scorer, prepared, pairs))
        for w in workers:
            best[w] = min(best[w], run_stage(scorer, pairs, batch_size, w))
    n = len(pairs.captions)
    image_size = model.visual.image_size
    return {"arch": arch, "n": n, "image_size": image_size[0] if isinstance(image_size, tuple) else image_size,
            "rates": {k: n / v for k, v in best.items()}}


def markdown(rows: list[dict], source: str, batch_size: int, workers: list[int], load: float) -> str:
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
        "*forward*: `encode_image` + `encode_text` + normalise + dot on tensors decoded, preprocessed and "
        "tokenised beforehand (the model alone, on *threads* torch threads); *forward, decoding beside*: "
        "the same while another process decodes and preprocesses the shard's images, as a worker does (on "
        "cores that share a physical core or caches, the most the stage can reach); *stage, w workers*: "
        "`score_table` on the shards' `ShardPairs`, reading, decoding, preprocessing and tokenising in w "
        "DataLoader workers (0: in the main process), the forward in the main process.",
        "",
        "| arch | input px | images | threads | forward img/s | forward, decoding beside img/s | "
        + " | ".join(f"stage, {w} workers img/s" for w in workers) + " | "
        + " | ".join(f"stage / forward, {w} workers" for w in workers) + " | best stage / forward, decoding beside |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * (2 * len(workers) + 1),
    ]
    for r in rows:
        rates = r["rates"]
        lines.append(
            f"| {r['arch']} | {r['image_size']} | {r['n']} | {r['threads']} | {rate(rates['forward'])} | "
            f"{rate(rates['forward, decoding beside'])} | "
            + " | ".join(rate(rates[w]) for w in workers) + " | "
            + " | ".join(f"{rates[w] / rates['forward']:.2f}" for w in workers) + " | "
            + f"{max(rates[w] for w in workers) / rates['forward, decoding beside']:.2f} |")
    return "\n".join(lines) + "\n"


def rate(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=["tiny-rn", "tiny-vit", "ViT-B-32"])
    parser.add_argument("--n", type=int, default=512, help="images for the tiny archs (default 512)")
    parser.add_argument("--n-large", type=int, default=64, help="images for 224 px archs (default 64)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    add_common_arguments(parser, ROOT)
    args = parser.parse_args(argv)

    load = os.getloadavg()[0]
    n_max = max(args.n, args.n_large)
    shards = sorted(glob.glob(args.shards))
    pairs = demo_pairs(shards, n_max) if shards else None
    source = "demo-shard 128 px JPEGs with their captions"
    with tempfile.TemporaryDirectory() as tmp:
        if pairs is None or len(pairs.captions) < n_max:
            pairs = noise_shard(Path(tmp) / "noise-000.tar", n_max)
            source = "random-noise 128 px JPEGs with 3-word captions"
        rows = []
        for threads in args.threads:
            torch.set_num_threads(threads)
            for arch in args.archs:
                n = args.n if arch.startswith("tiny") else args.n_large
                subset = ShardPairs(pairs.shards, dict(list(pairs.captions.items())[:n]), pairs.max_pixels)
                row = {**bench_arch(arch, subset, args.batch_size, args.workers, args.repeats), "threads": threads}
                print(row, flush=True)
                rows.append(row)
    publish(f"## {SECTION}", markdown(rows, source, args.batch_size, args.workers, load), args)


if __name__ == "__main__":
    main()
