"""BLIP pre-training on a curated subset's shards, fine-tuning per downstream task, and evaluation.

Pre-training (:func:`pretrain_blip`) reads the same webdataset shards the subset's CLIPs train
on, for ``epochs`` passes, with BLIP's three losses (:mod:`parrotscope.blip_model`); AdamW with
a linear warm-up and cosine decay (BLIP: AdamW, weight decay 0.05, cosine). Fine-tuning
(:func:`finetune_blip`) trains transformers' downstream model of a task on a set's training
split: captioning the LM loss, VQA the answer decoder's LM loss on the most frequent human
answer (BLIP weights every answer; one answer per question is the usual simplification), retrieval
ITC + ITM. Evaluation (:func:`evaluate_blip`) scores the test split (:mod:`parrotscope.blip_metrics`):
captions by beam search, answers by greedy generation, retrieval by ITC similarity with the top
``rerank_k`` candidates re-ranked by the ITM head, as BLIP ranks.

A sample whose image cannot be decoded or whose caption is empty is skipped and counted; the
counts (read = used + skipped) go into each job's JSON.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .blip_data import CaptionSet, VqaSet, decode_jpeg, load_image, read_set, task_of
from .blip_metrics import cider, recall_at_1, vqa_accuracy
from .blip_model import (DEC, ENC, BlipPretrainer, BlipSize, blip_config, captioner, image_transform, lm_labels,
                         load_pretrainer, load_tokenizer, n_parameters, save_pretrainer, steps_for, tokenize,
                         vqa_model)
from .devices import resolve_device, set_torch_threads
from .io import atomic_path, read_json, write_json, write_parquet

log = logging.getLogger(__name__)

TASKS = ("caption", "vqa", "retrieval")
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


class BlipTrainError(RuntimeError):
    """Training that cannot go on (no usable sample, a loss that is not finite)."""


# --- reading the subset's shards ---------------------------------------------------------------


def shard_pairs(shards: Sequence[str], counts: Counter) -> Iterator[tuple[object, str]]:
    """(PIL image, caption) of every sample of the shards, in order; undecodable images and empty
    captions are skipped and counted in ``counts`` (``read``, ``used``, ``skipped: reason``)."""
    import webdataset as wds

    # Under torchrun each process is given its own shards (pretrain_blip): no node splitting here.
    for sample in wds.WebDataset(list(shards), shardshuffle=False, nodesplitter=_own_shards):
        counts["read"] += 1
        image = next((sample[e] for e in IMAGE_EXTS if e in sample), None)
        caption = sample.get("txt", b"").decode("utf-8", "replace").strip()
        if image is None:
            counts["skipped: no image member"] += 1
            continue
        if not caption:
            counts["skipped: empty caption"] += 1
            continue
        try:
            img = decode_jpeg(image)
        except Exception:  # PIL raises many types on bad bytes
            counts["skipped: undecodable image"] += 1
            continue
        counts["used"] += 1
        yield img, caption


def _own_shards(urls):
    return urls


def shuffled(items: Iterator, buffer: int, rng: random.Random) -> Iterator:
    """A shuffle buffer (webdataset's, seeded): random order within ``buffer`` samples."""
    pool: list = []
    for item in items:
        pool.append(item)
        if len(pool) >= buffer:
            yield pool.pop(rng.randrange(len(pool)))
    rng.shuffle(pool)
    yield from pool


def epochs_of_batches(shards: Sequence[str], batch_size: int, steps: int, seed: int, buffer: int,
                      counts: Counter) -> Iterator[list]:
    """``steps`` batches of (image, caption), passing over the shards (in a seeded order each
    epoch, through a seeded shuffle buffer) as often as needed; the last batch of an epoch may be
    short. ``counts`` adds up every pass (``passes``: how many were started)."""
    rng, done = random.Random(seed), 0
    while done < steps:
        counts["passes"] += 1
        order = list(shards)
        rng.shuffle(order)
        batch: list = []
        got_any = False
        for pair in shuffled(shard_pairs(order, counts), buffer, rng):
            got_any = True
            batch.append(pair)
            if len(batch) == batch_size:
                yield batch
                done += 1
                batch = []
                if done == steps:
                    return
        if batch:
            yield batch
            done += 1
        if not got_any:
            raise BlipTrainError(f"no usable sample in the {len(order)} shards ({dict(counts)})")


# --- optimisation ------------------------------------------------------------------------------


def optimiser(model: torch.nn.Module, hp: Mapping, steps: int):
    """AdamW and a warm-up + cosine schedule over ``steps``."""
    from transformers import get_cosine_schedule_with_warmup

    opt = torch.optim.AdamW(model.parameters(), lr=float(hp["lr"]), weight_decay=float(hp["weight_decay"]))
    warmup = min(int(hp.get("warmup_steps", 0)), max(0, steps - 1))
    return opt, get_cosine_schedule_with_warmup(opt, warmup, steps)


def step(opt, schedule, loss: torch.Tensor, what: str, i: int) -> float:
    if not torch.isfinite(loss):
        raise BlipTrainError(f"{what}: the loss is {float(loss)} at step {i}; lower the learning rate")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    schedule.step()
    return float(loss.detach())


def pixels(images: Sequence, transform, device: str) -> torch.Tensor:
    return torch.stack([transform(img) for img in images]).to(device)


# --- pre-training ------------------------------------------------------------------------------


def pretrain_blip(shards: Sequence[str], n_samples: int, tokenizer_dir: str, model: Mapping, hparams: Mapping,
                  seed: int, out_model: str, out_json: str, device: str = "auto", threads: int | None = None) -> dict:
    """Pre-train a BLIP of size ``model`` on the shards for ``hparams.epochs`` epochs of
    ``n_samples``; write the model and a JSON of losses, steps, counts and time.

    Under torchrun (:func:`launch_pretrain`) each process trains on every ``world``-th shard with
    ``batch_size`` samples per step, gradients averaged by DistributedDataParallel (NCCL on CUDA,
    Gloo on CPU); ITC and ITM negatives come from the process's own batch (BLIP gathers features
    across GPUs for ITC), and process 0 writes the outputs."""
    device = resolve_device(device)
    rank, world = _distributed(device)
    if world > 1 and device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    set_torch_threads(threads)
    torch.manual_seed(int(seed))
    tok = load_tokenizer(tokenizer_dir)
    size = BlipSize.from_config(model)
    net = BlipPretrainer(blip_config(size, tok, hparams.get("label_smoothing", 0.1)),
                         tok.convert_tokens_to_ids(ENC)).to(device)
    module = net
    if world > 1:
        if len(shards) < world:
            raise BlipTrainError(f"{len(shards)} shards cannot feed {world} processes; reshard the subset")
        shards = list(shards)[rank::world]
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device] if device.startswith("cuda") else None)
    batch_size = int(hparams["batch_size"])
    steps = steps_for(hparams["epochs"], n_samples, batch_size * world)
    opt, schedule = optimiser(net, hparams, steps)
    transform = image_transform(size.image_size)
    counts: Counter = Counter()
    gen = torch.Generator(device=device).manual_seed(int(seed) * 1000 + rank)
    history, start = [], time.perf_counter()
    log.info("BLIP pre-training: %d parameters, %d samples, %d steps of %d x %d process(es)", n_parameters(module),
             n_samples, steps, batch_size, world)
    net.train()
    batches = epochs_of_batches(shards, batch_size, steps, int(seed) * 1000 + rank,
                                int(hparams.get("shuffle_buffer", 1000)), counts)
    for i, batch in enumerate(tqdm(batches, total=steps, desc="blip pretrain", mininterval=10, disable=rank > 0)):
        images, captions = zip(*batch)
        text = tokenize(tok, list(captions), size.max_length)
        dec = tokenize(tok, list(captions), size.max_length, DEC)
        out = net(pixels(images, transform, device), text["input_ids"].to(device), text["attention_mask"].to(device),
                  dec["input_ids"].to(device), lm_labels(tok, dec["input_ids"]).to(device), gen)
        step(opt, schedule, out["loss"], "BLIP pre-training", i)
        history.append({k: float(v.detach()) for k, v in out.items()})
        if rank == 0 and (i % max(1, steps // 10) == 0 or i == steps - 1):
            log.info("step %d/%d: %s", i + 1, steps, {k: round(v, 4) for k, v in history[-1].items()})
    counts = _sum_over_processes(counts, world)
    result = {"steps": steps, "batch_size": batch_size, "processes": world, "epochs": float(hparams["epochs"]),
              "n_samples": int(n_samples), "samples_seen": int(counts["used"]), "passes": int(counts.pop("passes", 0)),
              "counts": dict(counts), "first": history[0], "last": _mean_last(history),
              "seconds": round(time.perf_counter() - start, 1), "n_parameters": n_parameters(module),
              "device": device, "seed": int(seed)}
    if rank == 0:
        save_pretrainer(module, out_model, {"size": vars(size), "seed": int(seed)})
        write_json(result, out_json)
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return result


def _distributed(device: str) -> tuple[int, int]:
    """(rank, world size), with the process group started (NCCL on CUDA, else Gloo) when torchrun
    launched several."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return (torch.distributed.get_rank(), world) if world > 1 else (0, 1)


def _sum_over_processes(counts: Counter, world: int) -> Counter:
    """Every process's sample counts added up (each read its own shards)."""
    if world == 1:
        return counts
    gathered: list = [None] * world
    torch.distributed.all_gather_object(gathered, dict(counts))
    return sum((Counter(c) for c in gathered), Counter())


def launch_pretrain(kwargs: Mapping, processes: int) -> dict:
    """:func:`pretrain_blip` in this process, or with ``processes`` > 1 under torchrun (one
    process per GPU of this node, or per CPU worker with Gloo); returns the written JSON."""
    if processes <= 1:
        return pretrain_blip(**kwargs)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(dict(kwargs), fh)
    try:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               "-m", "parrotscope.blip_train", fh.name]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        log.info("torchrun:\n%s", proc.stdout[-20000:] + proc.stderr[-20000:])
        if proc.returncode != 0:
            raise BlipTrainError(f"torchrun with {processes} processes failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    finally:
        os.unlink(fh.name)
    return read_json(kwargs["out_json"])


def _mean_last(history: list[dict], n: int = 10) -> dict:
    """Each loss averaged over the last ``n`` steps (one step's loss is noisy)."""
    tail = history[-n:]
    return {k: float(np.mean([h[k] for h in tail])) for k in tail[0]}


# --- fine-tuning -------------------------------------------------------------------------------


def most_common_answer(answers: Sequence[str]) -> str:
    """The answer most annotators gave (ties: the first given), the VQA training target."""
    counts = Counter(a.strip().lower() for a in answers)
    return max(counts, key=lambda a: (counts[a], -[x.strip().lower() for x in answers].index(a)))


def _batches(items: list, batch_size: int, epochs: float, seed: int) -> Iterator[list]:
    """Shuffled batches over ``items`` for ``epochs`` passes (a fraction of a pass for a fraction)."""
    rng = random.Random(seed)
    steps = steps_for(epochs, len(items), batch_size)
    order: list = []
    for _ in range(steps):
        if len(order) < batch_size:
            fresh = list(range(len(items)))
            rng.shuffle(fresh)
            order += fresh
        yield [items[j] for j in order[:batch_size]]
        del order[:batch_size]


def finetune_blip(task: str, spec: Mapping, pretrained: str, tokenizer_dir: str, hparams: Mapping, seed: int,
                  out_model: str, out_json: str, device: str = "auto", threads: int | None = None) -> dict:
    """Fine-tune the pre-trained BLIP on a set's training split for ``task``; write the model."""
    if task not in TASKS:
        raise ValueError(f"unknown BLIP task {task!r}; tasks: {TASKS}")
    device = resolve_device(device)
    set_torch_threads(threads)
    torch.manual_seed(int(seed))
    tok = load_tokenizer(tokenizer_dir)
    data = read_set(spec)
    pre, size = load_pretrainer(pretrained, device)
    transform = image_transform(size.image_size)
    if task == "vqa":
        if not isinstance(data, VqaSet):
            raise ValueError(f"task vqa needs a VQA layout, not {spec['layout']!r}")
        items = [(r["image"], r["question"], most_common_answer(r["answers"])) for r in data.train]
        net = vqa_model(pre).to(device)
    else:
        if not isinstance(data, CaptionSet):
            raise ValueError(f"task {task} needs a captioning layout, not {spec['layout']!r}")
        items = list(data.train)
        net = captioner(pre).to(device) if task == "caption" else pre
    if not items:
        raise BlipTrainError(f"{task}: the training split of {spec.get('train')} is empty")
    batch_size = int(hparams["batch_size"])
    steps = steps_for(hparams["epochs"], len(items), batch_size)
    opt, schedule = optimiser(net, hparams, steps)
    gen = torch.Generator(device=device).manual_seed(int(seed))
    images: dict[str, object] = {}
    losses, start = [], time.perf_counter()
    net.train()
    for i, batch in enumerate(tqdm(_batches(items, batch_size, hparams["epochs"], int(seed)), total=steps,
                                   desc=f"blip {task}", mininterval=10)):
        px = pixels([_cached(images, b[0]) for b in batch], transform, device)
        loss = _task_loss(task, net, tok, size, batch, px, device, gen)
        losses.append(step(opt, schedule, loss, f"BLIP {task} fine-tuning", i))
        if i % max(1, steps // 5) == 0 or i == steps - 1:
            log.info("step %d/%d: loss %.4f", i + 1, steps, losses[-1])
    with atomic_path(out_model, suffix=".pt") as tmp:
        torch.save({"task": task, "config": net.config.to_dict(), "size": vars(size),
                    "enc_token_id": pre.enc_token_id, "state_dict": net.state_dict()}, tmp)
    result = {"task": task, "layout": spec["layout"], "n_train": len(items), "steps": steps, "batch_size": batch_size,
              "epochs": float(hparams["epochs"]), "first_loss": losses[0], "last_loss": float(np.mean(losses[-10:])),
              "seconds": round(time.perf_counter() - start, 1), "seed": int(seed), "device": device}
    write_json(result, out_json)
    return result


def _cached(images: dict, path: str):
    """An image decoded once per job (the fine-tuning sets are small and read every epoch)."""
    if path not in images:
        images[path] = load_image(path)
    return images[path]


def _task_loss(task: str, net, tok, size: BlipSize, batch: list, px: torch.Tensor, device: str,
               gen: torch.Generator) -> torch.Tensor:
    """One batch's fine-tuning loss of a task."""
    if task == "vqa":
        q = tokenize(tok, [b[1] for b in batch], size.max_length, ENC)
        a = tokenize(tok, [b[2] for b in batch], size.max_length, DEC)
        return net(input_ids=q["input_ids"].to(device), pixel_values=px, attention_mask=q["attention_mask"].to(device),
                   decoder_input_ids=a["input_ids"].to(device), decoder_attention_mask=a["attention_mask"].to(device),
                   labels=lm_labels(tok, a["input_ids"]).to(device)).loss
    captions = [b[1] for b in batch]
    if task == "caption":
        dec = tokenize(tok, captions, size.max_length, DEC)
        return net(pixel_values=px, input_ids=dec["input_ids"].to(device),
                   attention_mask=dec["attention_mask"].to(device), labels=lm_labels(tok, dec["input_ids"]).to(device)).loss
    text = tokenize(tok, captions, size.max_length)
    out = net(px, text["input_ids"].to(device), text["attention_mask"].to(device), None, None, gen, with_lm=False)
    return out["loss"]


def load_finetuned(path: str, device: str):
    """A fine-tuned model written by :func:`finetune_blip`, with its task and size."""
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipForQuestionAnswering

    saved = torch.load(path, map_location=device, weights_only=False)
    config = BlipConfig.from_dict(saved["config"])
    net = {"caption": lambda: BlipForConditionalGeneration(config), "vqa": lambda: BlipForQuestionAnswering(config),
           "retrieval": lambda: BlipPretrainer(config, saved["enc_token_id"])}[saved["task"]]()
    net.load_state_dict(saved["state_dict"])
    return saved["task"], BlipSize(**saved["size"]), net.to(device).eval()


# --- evaluation --------------------------------------------------------------------------------


def evaluate_blip(spec: Mapping, finetuned: str, tokenizer_dir: str, settings: Mapping, out_json: str,
                  out_table: str, device: str = "auto", threads: int | None = None) -> dict:
    """Score a fine-tuned BLIP on a set's test split: CIDEr, VQA accuracy or R@1 both ways."""
    device = resolve_device(device)
    set_torch_threads(threads)
    tok = load_tokenizer(tokenizer_dir)
    task, size, net = load_finetuned(finetuned, device)
    data = read_set(spec)
    if task_of(spec["layout"]) != ("vqa" if task == "vqa" else "caption"):
        raise ValueError(f"a {task} model cannot be scored on layout {spec['layout']!r}")
    transform = image_transform(size.image_size)
    batch_size = int(settings.get("batch_size", 32))
    start = time.perf_counter()
    with torch.no_grad():
        if task == "caption":
            metrics, table = _eval_caption(net, tok, size, data.test, transform, batch_size, settings, device)
        elif task == "vqa":
            metrics, table = _eval_vqa(net, tok, size, data.test, transform, batch_size, settings, device)
        else:
            metrics, table = _eval_retrieval(net, tok, size, data.test, transform, batch_size, settings, device)
    metrics.update(task=task, layout=spec["layout"], seconds=round(time.perf_counter() - start, 1))
    write_parquet(table, out_table, key=None)
    write_json(metrics, out_json)
    log.info("%s on %s: %s", task, spec["layout"], metrics)
    return metrics


def _chunks(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _eval_caption(net, tok, size, test: list[dict], transform, batch_size, settings, device):
    captions = {}
    for batch in tqdm(list(_chunks(test, batch_size)), desc="captions", mininterval=10):
        px = pixels([load_image(r["image"]) for r in batch], transform, device)
        out = net.generate(pixel_values=px, num_beams=int(settings.get("num_beams", 3)),
                           max_new_tokens=int(settings.get("max_new_tokens", 20)),
                           min_new_tokens=int(settings.get("min_new_tokens", 1)))
        for r, text in zip(batch, tok.batch_decode(out, skip_special_tokens=True)):
            captions[str(r["image_id"])] = text.strip()
    score, per_image = cider({str(r["image_id"]): r["captions"] for r in test}, captions)
    table = pd.DataFrame({"image_id": list(captions), "caption": list(captions.values()),
                          "cider": [per_image[i] for i in captions]})
    return {"cider": score, "n_images": len(test)}, table


def _eval_vqa(net, tok, size, test: list[dict], transform, batch_size, settings, device):
    predictions = []
    for batch in tqdm(list(_chunks(test, batch_size)), desc="answers", mininterval=10):
        px = pixels([load_image(r["image"]) for r in batch], transform, device)
        q = tokenize(tok, [r["question"] for r in batch], size.max_length, ENC)
        out = net.generate(input_ids=q["input_ids"].to(device), pixel_values=px,
                           attention_mask=q["attention_mask"].to(device),
                           max_new_tokens=int(settings.get("max_answer_tokens", 10)))
        predictions += [t.strip() for t in tok.batch_decode(out, skip_special_tokens=True)]
    acc = [vqa_accuracy(p, r["answers"]) for p, r in zip(predictions, test)]
    table = pd.DataFrame({"question_id": [str(r["question_id"]) for r in test], "question": [r["question"] for r in test],
                          "prediction": predictions, "accuracy": acc})
    return {"accuracy": 100.0 * float(np.mean(acc)) if acc else float("nan"), "n_questions": len(test)}, table


def _eval_retrieval(net: BlipPretrainer, tok, size, test: list[dict], transform, batch_size, settings, device):
    texts = [c for r in test for c in r["captions"]]
    owner = [i for i, r in enumerate(test) for _ in r["captions"]]
    embeds, image_feats, text_feats = [], [], []
    for batch in _chunks(test, batch_size):
        e = net.image_embeds(pixels([load_image(r["image"]) for r in batch], transform, device))
        embeds.append(e)
        image_feats.append(net.image_feat(e))
    for batch in _chunks(texts, batch_size):
        t = tokenize(tok, batch, size.max_length)
        text_feats.append(net.text_feat(t["input_ids"].to(device), t["attention_mask"].to(device)))
    image_embeds, sim = torch.cat(embeds), (torch.cat(image_feats) @ torch.cat(text_feats).t()).cpu()
    k = int(settings.get("rerank_k", 16))
    # BLIP ranks by ITC, then re-scores the top k candidates with the ITM head
    by_i2t, by_t2i = _rerank(net, tok, size, image_embeds, texts, sim, k, device) if k > 0 else (sim, sim)
    i2t, t2i = recall_at_1(by_i2t.numpy(), owner, by_t2i.numpy())
    i2t_itc, t2i_itc = recall_at_1(sim.numpy(), owner)
    best = by_i2t.numpy().argmax(1)
    table = pd.DataFrame({"image_id": [str(r["image_id"]) for r in test], "best_text": [texts[j] for j in best],
                          "hit": [owner[j] == i for i, j in enumerate(best)]})
    return {"i2t_r1": 100 * i2t, "t2i_r1": 100 * t2i, "i2t_r1_itc": 100 * i2t_itc, "t2i_r1_itc": 100 * t2i_itc,
            "rerank_k": k, "n_images": len(test), "n_texts": len(texts)}, table


def _rerank(net: BlipPretrainer, tok, size, image_embeds: torch.Tensor, texts: list[str], sim: torch.Tensor, k: int,
            device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The image-to-text and text-to-image score matrices after re-ranking: each image's (each
    text's) top-k ITC candidates score their ITM match probability, every other candidate -inf."""
    tokens = tokenize(tok, texts, size.max_length)
    i2t = torch.full_like(sim, -math.inf)
    t2i = torch.full_like(sim, -math.inf)
    for i in range(sim.shape[0]):
        top = sim[i].topk(min(k, sim.shape[1])).indices
        i2t[i, top] = _itm(net, tokens, top, image_embeds[i:i + 1].expand(len(top), -1, -1), device)
    for j in range(sim.shape[1]):
        top = sim[:, j].topk(min(k, sim.shape[0])).indices
        t2i[top, j] = _itm(net, tokens, torch.full_like(top, j), image_embeds[top], device)
    return i2t, t2i


def _itm(net: BlipPretrainer, tokens: dict, text_rows: torch.Tensor, image_embeds: torch.Tensor,
         device: str) -> torch.Tensor:
    logits = net.itm_logits(tokens["input_ids"][text_rows].to(device), tokens["attention_mask"][text_rows].to(device),
                            image_embeds)
    return logits.softmax(-1)[:, 1].cpu()


def main(argv: Sequence[str] | None = None) -> None:
    """torchrun's entry: ``python -m parrotscope.blip_train KWARGS.json`` (see :func:`launch_pretrain`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pretrain_blip(**json.loads(Path(args[0]).read_text()))


if __name__ == "__main__":
    main()
