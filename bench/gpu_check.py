"""The prepared device check (issue 19): every CUDA path of the workflow on tiny or random weights,
and the throughput a GPU scoring or spotting job gets. Needs no network.

On a GPU machine, through ``bench/gpu_check.sh`` (five minutes or less on one H100):

    bash bench/gpu_check.sh                       # writes the `## GPU check` section of docs/BENCHMARKS.md

Here, on CPU at toy sizes (the same code; tests/test_bench_gpu_check.py runs it):

    .venv/bin/python bench/gpu_check.py --device cpu --smoke --no-write

Paths (each runs and reports ok, or its error; one failing does not stop the others):

* score: :func:`parrotscope.score.score_table` on a shard of JPEGs with DataLoader workers, pinned
  memory and the default autocast (bf16 on CUDA), and how far S moves from fp32 to bf16;
* embed: :func:`parrotscope.score.embed_batches` (the embed stage's loop);
* train: OpenCLIP's trainer (:func:`parrotscope.train.train_clip`) for a few steps, amp_bf16;
* LaMa and SD inpainting (:mod:`parrotscope.inpaint`) in batches: a TorchScript stand-in with
  big-lama's signature, a tiny random Stable Diffusion pipeline in fp16;
* str: a CLIP4STR recogniser fine-tuned a few steps in bf16 autocast, then evaluated;
* blip: a small BLIP (Table 7) pre-trained a few steps, fine-tuned for VQA and retrieval, scored;
* spot: which device ``spot.device: auto`` resolves to here, and RapidOCR img/s there and on CPU.

Throughput: ViT-B-32 (random weights) on 224 px JPEGs at batch 256: the bare forward (inputs
decoded, preprocessed and on the GPU beforehand) against the score stage with 0, 4 and 8 workers.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import datetime
import io
import json
import platform
import sys
import tarfile
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from parrotscope.feed import ShardPairs, to_pil
from parrotscope.score import Scorer, embed_batches, score_table
from parrotscope.shards import decode_image, iter_encoded
from parrotscope.train import build_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchdoc import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## GPU check"


# ----------------------------------------------------------------------------------------------
# Inputs


def write_jpeg_shard(path: Path, n: int, size: int, seed: int = 0) -> ShardPairs:
    """``n`` random-noise JPEGs of ``size`` px with 3-word captions, in one tar, as a pair source."""
    rng = np.random.default_rng(seed)
    words = "sale parrot coffee hello world summer organic fresh love home".split()
    captions = {}
    with tarfile.open(path, "w") as tar:
        for i in range(n):
            key = f"{i:06d}"
            buf = io.BytesIO()
            # smooth noise, so that JPEG sizes are like photos' rather than like white noise
            small = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
            Image.fromarray(small).resize((size, size), Image.BILINEAR).save(buf, format="JPEG", quality=90)
            captions[key] = " ".join(rng.choice(words, 3))
            for ext, data in (("jpg", buf.getvalue()), ("txt", captions[key].encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return ShardPairs((str(path),), captions, 10**9)


def synchronise(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------------------------
# The CUDA paths


def check_score(device: str, pairs: ShardPairs, workers: int) -> dict:
    torch.manual_seed(0)
    model, preprocess, tokenizer = build_model("tiny-rn", device=device)
    default = "bf16" if device.startswith("cuda") else "fp32"
    fp32 = Scorer("tiny-rn", model.eval(), preprocess, tokenizer, device, precision="fp32")
    low = Scorer("tiny-rn", model, preprocess, tokenizer, device, precision="bf16")
    s32 = score_table(fp32, pairs, 64, workers, progress=False)
    s16 = score_table(low, pairs, 64, workers, progress=False)
    assert s32["__key__"].tolist() == s16["__key__"].tolist() == list(pairs.captions)
    a, b = s32["s"].to_numpy(), s16["s"].to_numpy()
    ranks = np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1]
    return {"pairs": len(a), "workers": workers, "default precision": default,
            "S fp32 - bf16, max abs": float(np.abs(a - b).max()), "std of S": float(a.std()),
            "rank correlation fp32 vs bf16": float(ranks)}


def check_embed(device: str, pairs: ShardPairs, workers: int) -> dict:
    torch.manual_seed(0)
    model, preprocess, tokenizer = build_model("tiny-rn", device=device)
    scorer = Scorer("tiny-rn", model.eval(), preprocess, tokenizer, device,
                    precision="bf16" if device.startswith("cuda") else "fp32")
    n, dim = 0, None
    for keys, img, txt in embed_batches(scorer, pairs, 64, workers, progress=False):
        assert torch.isfinite(img).all() and torch.isfinite(txt).all()
        n, dim = n + len(keys), img.shape[1]
    return {"pairs": n, "dim": dim}


def check_train(device: str, shard: str, n: int, tmp: Path) -> dict:
    from parrotscope.train import train_clip

    result = train_clip([shard], n, "tiny-rn", {"batch_size": 16, "epochs": 1, "warmup": 1, "workers": 1},
                        str(tmp / "train"), str(tmp / "train" / "checkpoint.pt"), str(tmp / "train" / "results.json"),
                        device=device, seed=0, echo=False)
    return {k: result.get(k) for k in ("steps", "precision", "final_loss", "device") if k in result}


def check_inpaint(device: str, tmp: Path, smoke: bool) -> dict:
    from parrotscope.inpaint import make_inpainter
    from parrotscope.tiny_weights import write_fake_lama, write_tiny_sd

    rng = np.random.default_rng(0)
    n = 4 if smoke else 16
    images = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(n)]
    masks = [np.zeros((96, 128), np.uint8) for _ in range(n)]
    for m in masks:
        m[20:50, 30:90] = 255
    out = {}
    lama = make_inpainter("lama", {"checkpoint": str(write_fake_lama(tmp / "big-lama.pt")), "device": device})
    start = time.perf_counter()
    results = lama.inpaint_batch(images, masks, [f"k{i}" for i in range(n)])
    out["lama"] = {"images": len(results), "seconds": round(time.perf_counter() - start, 3)}
    sd = make_inpainter("sd", {"model": str(write_tiny_sd(tmp / "sd")), "steps": 2, "resolution": 64,
                               "device": device, "prompt": "background"})
    start = time.perf_counter()
    results = sd.inpaint_batch(images, masks, [f"k{i}" for i in range(n)])
    assert all(r.shape == images[0].shape for r in results)
    out["sd"] = {"images": len(results), "seconds": round(time.perf_counter() - start, 3),
                 "dtype": str(getattr(sd, "dtype", "?"))}
    return out


def check_str(device: str, tmp: Path) -> dict:
    from parrotscope.str_data import RenderConfig, synthetic_words, write_lmdb
    from parrotscope.str_model import STRConfig
    from parrotscope.str_train import evaluate_str, train_str

    cfg = RenderConfig.from_dict({"lexicon_size": 200})
    write_lmdb(synthetic_words(64, 0, 0, cfg, 8), tmp / "train.lmdb")
    write_lmdb(synthetic_words(16, 0, 1, cfg, 8), tmp / "test.lmdb")
    spec = {"name": "scratch/tiny-rn", "arch": "tiny-rn", "init": "random"}
    record = train_str(spec, str(tmp / "train.lmdb"), STRConfig(image_size=(32, 128), max_label_length=8),
                       {"steps": 5, "batch_size": 16, "log_every": 1}, str(tmp / "str.pt"), str(tmp / "str.json"),
                       device=device, progress=False)
    metrics = evaluate_str(str(tmp / "str.pt"), str(tmp / "test.lmdb"), str(tmp / "e.json"), str(tmp / "e.parquet"),
                           "test", batch_size=16, device=device, progress=False)
    return {"precision": record.get("precision"), "final_loss": record.get("final_loss"),
            "evaluated": metrics["processed"]}


def check_blip(device: str, pairs: ShardPairs, tmp: Path) -> dict:
    """BLIP (Table 7) on the device: a small BLIP pre-trained a few steps on the shard, fine-tuned
    for VQA and retrieval on a hand-written TextVQA-layout set and scored (no fonts needed)."""
    from parrotscope.blip_model import train_tokenizer
    from parrotscope.blip_train import evaluate_blip, finetune_blip, pretrain_blip

    questions = ["what word is written?", "what color is it?"]
    texts = [*pairs.captions.values(), *questions]
    train_tokenizer(texts, 300).save_pretrained(str(tmp / "blip-tok"))
    images = tmp / "blip-images"
    images.mkdir()
    rng = np.random.default_rng(0)
    data = []
    for i in range(32):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(images / f"{i}.jpg")
        data.append({"image_id": str(i), "question": questions[i % 2], "question_id": i,
                     "answers": [str(pairs.captions[f"{i:06d}"].split()[0])] * 10})
    (tmp / "tvqa.json").write_text(json.dumps({"data": data}))
    spec = {"layout": "textvqa", "images": str(images), "train": str(tmp / "tvqa.json"), "test": str(tmp / "tvqa.json")}
    model = dict(image_size=64, patch_size=8, hidden_size=128, vision_layers=2, text_layers=2, heads=4,
                 intermediate_size=256, embed_dim=64, max_length=16)
    hp = {"epochs": 2, "batch_size": 16, "lr": 1e-4, "weight_decay": 0.05}
    start = time.perf_counter()
    pre = pretrain_blip(list(pairs.shards), len(pairs.captions), str(tmp / "blip-tok"), model, hp, 0,
                        str(tmp / "blip.pt"), str(tmp / "blip.json"), device=device)
    out = {"pretrain steps": pre["steps"], "pretrain s": round(time.perf_counter() - start, 2),
           "last losses": {k: round(v, 3) for k, v in pre["last"].items()}}
    for task in ("vqa", "retrieval"):
        spec_task = spec if task == "vqa" else _caption_spec(tmp, spec, data)
        finetune_blip(task, spec_task, str(tmp / "blip.pt"), str(tmp / "blip-tok"), hp, 0, str(tmp / f"{task}.pt"),
                      str(tmp / f"{task}.json"), device=device)
        metrics = evaluate_blip(spec_task, str(tmp / f"{task}.pt"), str(tmp / "blip-tok"), {"rerank_k": 4},
                                str(tmp / f"{task}-eval.json"), str(tmp / f"{task}-eval.parquet"), device=device)
        out[task] = {k: round(v, 2) for k, v in metrics.items() if k in ("accuracy", "i2t_r1", "t2i_r1")}
    return out


def _caption_spec(tmp: Path, vqa: dict, data: list[dict]) -> dict:
    """The same images as a COCO Karpathy-layout caption set (the question as the caption)."""
    train = [{"image": f"{d['image_id']}.jpg", "caption": d["question"] + " " + d["answers"][0]} for d in data]
    test = [{"image": t["image"], "caption": [t["caption"]]} for t in train]
    (tmp / "cap_train.json").write_text(json.dumps(train))
    (tmp / "cap_test.json").write_text(json.dumps(test))
    return {"layout": "coco_karpathy", "images": vqa["images"], "train": str(tmp / "cap_train.json"),
            "test": str(tmp / "cap_test.json")}


def spot_rate(device: str, images: list[np.ndarray]) -> float:
    from parrotscope.spot import make_spotter

    spotter = make_spotter("rapidocr", {}, threads=4, device=device)
    spotter.spot(images[0])  # warm-up: session start, first allocations
    start = time.perf_counter()
    for image in images:
        spotter.spot(image)
    return len(images) / (time.perf_counter() - start)


def check_spot(pairs: ShardPairs, smoke: bool) -> dict:
    from parrotscope.spot import resolve_spot_device

    images = [decode_image(k, s, d, pairs.max_pixels) for k, s, d in iter_encoded(pairs.shards, set(pairs.captions))]
    images = images[: 4 if smoke else 64]
    device, why = resolve_spot_device("auto")
    out = {"spot.device auto": device, "reason": why, "images": len(images), "cpu img/s": spot_rate("cpu", images)}
    if device == "cuda":
        out["cuda img/s"] = spot_rate("cuda", images)
    return out


# ----------------------------------------------------------------------------------------------
# Scoring throughput


def forward_rate(scorer: Scorer, prepared: list[tuple[torch.Tensor, torch.Tensor]], repeats: int) -> float:
    from parrotscope.feed import autocast

    best = np.inf
    n = sum(len(p) for p, _ in prepared)
    for _ in range(repeats):
        synchronise(scorer.device)
        start = time.perf_counter()
        with torch.inference_mode(), autocast(scorer.device, scorer.precision):
            for pixels, tokens in prepared:
                img = F.normalize(scorer.model.encode_image(pixels).float(), dim=-1)
                txt = F.normalize(scorer.model.encode_text(tokens).float(), dim=-1)
                (img * txt).sum(-1)
        synchronise(scorer.device)
        best = min(best, time.perf_counter() - start)
    return n / best


def stage_rate(scorer: Scorer, pairs: ShardPairs, batch_size: int, workers: int, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        score_table(scorer, pairs, batch_size, workers, progress=False)
        best = min(best, time.perf_counter() - start)
    return len(pairs.captions) / best


def throughput(device: str, arch: str, pairs: ShardPairs, batch_size: int, workers: list[int], repeats: int) -> dict:
    torch.manual_seed(0)
    model, preprocess, tokenizer = build_model(arch, device=device)
    precision = "bf16" if device.startswith("cuda") else "fp32"
    scorer = Scorer(arch, model.eval(), preprocess, tokenizer, device, precision=precision)
    items = [(preprocess(to_pil(decode_image(k, s, d, pairs.max_pixels))), pairs.captions[k])
             for k, s, d in iter_encoded(pairs.shards, set(pairs.captions))]
    prepared = [(torch.stack([p for p, _ in items[i:i + batch_size]]).to(device),
                 tokenizer([c for _, c in items[i:i + batch_size]]).to(device))
                for i in range(0, len(items), batch_size)]
    forward_rate(scorer, prepared[:1], 1)  # warm-up: kernels, autotuning, allocations
    rates = {"forward": forward_rate(scorer, prepared, repeats)}
    del prepared
    score_table(scorer, ShardPairs(pairs.shards, dict(list(pairs.captions.items())[:batch_size]), pairs.max_pixels),
                batch_size, 0, progress=False)  # warm-up of the stage's own path
    for w in workers:
        rates[f"stage, {w} workers"] = stage_rate(scorer, pairs, batch_size, w, repeats)
    return {"arch": arch, "precision": precision, "batch": batch_size, "images": len(pairs.captions),
            "img/s": rates}


# ----------------------------------------------------------------------------------------------
# Report


def run_check(name: str, fn, *args) -> dict:
    start = time.perf_counter()
    try:
        result = {"status": "ok", **fn(*args)}
    except Exception as exc:  # the check reports every path, whatever one of them does
        result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:500],
                  "trace": traceback.format_exc(limit=4)[-1500:]}
    result["seconds"] = round(time.perf_counter() - start, 2)
    print(f"[{name}] {json.dumps(result, default=str)}", flush=True)
    return result


def card(device: str) -> str:
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(torch.device(device))
        return f"{p.name} ({p.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
    return f"CPU only ({os.cpu_count()} cores)"


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [SECTION, "",
             f"Measured {env['date']} by `bench/gpu_check.sh` ({env['mode']}) on {env['card']}; torch {env['torch']}, "
             f"Python {env['python']}, {env['cpus']} CPU cores; total {report['seconds']:.0f} s.", "",
             "| path | status | what it measured |", "|---|---|---|"]
    for name, result in report["paths"].items():
        detail = result.get("error") or "; ".join(f"{k} {fmt(v)}" for k, v in result.items()
                                                  if k not in ("status", "trace"))
        lines.append(f"| {name} | {result['status']} | {detail} |")
    t = report.get("throughput", {})
    if t.get("status") == "ok":
        rates = t["img/s"]
        lines += ["", f"Scoring throughput: {t['arch']} (random weights), {t['images']} JPEGs, batch {t['batch']}, "
                  f"{t['precision']}; best of {report['repeats']}. *forward*: inputs decoded, preprocessed and on "
                  f"the device beforehand; *stage*: `score_table` from the shard with w DataLoader workers.", "",
                  "| | img/s | / forward |", "|---|---:|---:|"]
        for k, v in rates.items():
            lines.append(f"| {k} | {v:.0f} | {v / rates['forward']:.2f} |")
    elif t:
        lines += ["", f"Scoring throughput: failed ({t.get('error')})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true", help="toy sizes (CPU test of the script)")
    parser.add_argument("--arch", default="ViT-B-32", help="the throughput model (default ViT-B-32)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 4, 8])
    parser.add_argument("--images", type=int, default=4096, help="JPEGs for the throughput (default 4096)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "docs/BENCHMARKS.md")
    parser.add_argument("--json", type=Path, default=None, help="also write the whole report here")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device visible: run with --device cpu (and --smoke) for a CPU run of the script")
        return 2

    start = time.perf_counter()
    path_workers = min(2, max(args.workers))
    report = {"environment": {"date": datetime.date.today().isoformat(), "card": card(args.device),
                              "torch": torch.__version__, "python": platform.python_version(),
                              "cpus": os.cpu_count(), "mode": "smoke, CPU" if args.smoke else args.device},
              "repeats": args.repeats, "paths": {}}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        small = write_jpeg_shard(tmp / "small-000.tar", 48 if args.smoke else 512, 128)
        paths = report["paths"]
        paths["score"] = run_check("score", check_score, args.device, small, path_workers)
        paths["embed"] = run_check("embed", check_embed, args.device, small, path_workers)
        paths["train"] = run_check("train", check_train, args.device, small.shards[0], len(small.captions), tmp)
        paths["inpaint (LaMa, SD)"] = run_check("inpaint", check_inpaint, args.device, tmp, args.smoke)
        paths["str"] = run_check("str", check_str, args.device, tmp)
        paths["blip"] = run_check("blip", check_blip, args.device, small, tmp)
        paths["spot"] = run_check("spot", check_spot, small, args.smoke)
        big = write_jpeg_shard(tmp / "big-000.tar", args.images, 224 if not args.smoke else 96)
        report["throughput"] = run_check("throughput", throughput, args.device, args.arch, big, args.batch_size,
                                         args.workers, args.repeats)
    report["seconds"] = time.perf_counter() - start
    section = markdown(report)
    print(section)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    if not args.no_write:
        write_section(SECTION, section, args.out)
    failed = [k for k, v in {**report["paths"], "throughput": report["throughput"]}.items() if v["status"] != "ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
