"""The demo's training pool: img2dataset-style webdataset shards, one sample stream per shard."""

from __future__ import annotations

import numpy as np

from .captions import cotr
from .config import demo_config
from .fonts import check_fonts
from .samples import EVAL_SEED_OFFSET, make_sample, sample_tar, write_sample


def write_demo_shard(cfg: dict, shard_index: int, out_path: str) -> dict:
    """Write training shard ``shard_index`` as an img2dataset-style webdataset tar, atomically.

    Sample ``i`` is drawn from ``default_rng([seed, shard_index, i])``, so the tar depends on the
    seed and the shard index only (and each sample's content is independent of the shard size).
    Returns counts: samples, text images, caption kinds, and the ground-truth CoTR statistics.
    """
    cfg = demo_config(cfg)
    check_fonts(cfg)
    shard_index = int(shard_index)
    if not 0 <= shard_index < EVAL_SEED_OFFSET:
        raise ValueError(f"shard_index must be in [0, {EVAL_SEED_OFFSET}), got {shard_index}")
    kinds: dict[str, int] = {}
    n_text, cotrs = 0, []
    with sample_tar(out_path) as tar:
        for key, sample in shard_samples(cfg, shard_index):
            write_sample(tar, key, sample)
            truth = sample["json"]["truth"]
            kinds[truth["caption_kind"]] = kinds.get(truth["caption_kind"], 0) + 1
            if truth["has_text"]:
                n_text += 1
                cotrs.append(cotr(sample["txt"], truth["words"]))
    return {
        "shard": shard_index,
        "path": str(out_path),
        "n_samples": int(cfg["samples_per_shard"]),
        "n_text": n_text,
        "caption_kinds": kinds,
        "truth_mean_cotr_text": float(np.mean(cotrs)) if cotrs else 0.0,
        "truth_parrot_rate_text": float(np.mean([c > 0 for c in cotrs])) if cotrs else 0.0,
    }


def shard_samples(cfg: dict, shard_index: int):
    """(key, sample) of training shard ``shard_index`` of a validated demo config, in order: sample
    ``i`` is drawn from ``default_rng([seed, shard_index, i])``, so it depends on nothing else."""
    seed = int(cfg["seed"])
    for i in range(int(cfg["samples_per_shard"])):
        rng = np.random.default_rng([seed, shard_index, i])
        key = f"{shard_index:05d}{i:04d}"
        with_text = bool(rng.random() < cfg["text_fraction"])
        yield key, make_sample(rng, cfg, key, f"demo://seed{seed}/{key}.jpg", with_text=with_text)
