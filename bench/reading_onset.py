"""When does a tiny CLIP start to read? Train Table 3 style CLIPs on the demo with more or fewer
steps and cleaner or noisier parrot captions, and measure reading three ways.

Run after the embedded default has built ``results/table3.csv`` in ``--workdir`` (it reuses that
run's index, pool shards, subsets and synthetic benchmark). Each variant is
``NAME=SUBSET:EPOCHS[:LR[:BATCH]]`` (LR, BATCH: the learning rate and batch size, default
``train.hparams``; an empty LR keeps the default):

* ``SUBSET`` ``text_only`` (or any curated subset of the run): the workflow's own subset shards;
* ``SUBSET`` ``parrots``: every pool image whose caption words were all spotted (CoTR = 1, exact
  parrots only), materialised here by :func:`parrotscope.materialise.materialise_subset`;
* ``SUBSET`` ``exactP``: 1,600 pool images with text, P% of them exact parrots (``parrot_subset``).

Reading is measured on the run's synthetic Co-Emb. benchmark (word accuracy and sync gap, as the
tables) and on 400 held-out demo images with text (whole images, the 16 poster words ranked by
the model: reading at the scale the CLIP was trained on). Results go to docs/EXPERIMENTS.md.

    python bench/reading_onset.py --workdir RUN text12=text_only:12 text20=text_only:20 \\
        parrots12=parrots:12 parrots20=parrots:20
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from benchdoc import write_section  # noqa: E402

HEADING = "## Reading onset of the tiny CLIPs (Table 3)"
HEADER = "# Experiments\n\nSide experiments behind the embedded default's settings, one section each.\n"
HELD_OUT_IMAGES = 400
HELD_OUT_STREAM = 200  # demo generator stream for these images: beyond the pool and other eval sets


def parrot_subset(workdir: Path, name: str = "parrots", size: int = 1600) -> Path:
    """Shards of exact-parrot pool images (CoTR = 1), built once under ``bench/`` of the run.

    ``parrots``: every such image. ``exactP`` (e.g. ``exact90``): ``size`` images with text, P% of
    them exact parrots and the rest with CoTR < 1, drawn with a fixed seed: what a pool whose
    text-image captions were P% exact parrots would give the text-only subset.
    """
    import pandas as pd

    from parrotscope.materialise import materialise_subset

    out = workdir / "bench" / "reading_onset" / name / "shards"
    if not (out / "sizes.json").exists():
        index = pd.read_parquet(workdir / "results/demo/index_text")
        exact = index["cotr"] == 1
        if name == "parrots":
            keys = index.loc[exact, ["__key__", "shard"]]
        else:
            n_exact = round(size * int(name.removeprefix("exact")) / 100)
            rest = index.loc[index["has_text"] & ~exact].sample(size - n_exact, random_state=0)
            keys = pd.concat([index.loc[exact].sample(n_exact, random_state=0), rest])[["__key__", "shard"]]
        # The index names shards as the run wrote them: relative to its working directory.
        shards = sorted(str(p.relative_to(workdir)) for p in (workdir / "results/demo/shards").glob("*.tar"))
        materialise_subset(keys, shards, out, 2)
    return out


def is_bench_subset(subset: str) -> bool:
    """Subsets this benchmark builds itself rather than reading from the run's curated subsets."""
    return subset == "parrots" or (subset.startswith("exact") and subset.removeprefix("exact").isdigit())


def held_out_reading(scorer, generator: dict) -> float:
    """Share of held-out demo text images whose top-ranked poster word is one of their words."""
    import numpy as np
    import torch
    from PIL import Image

    from parrotscope.demo import EVAL_SEED_OFFSET, demo_config, make_sample

    cfg = demo_config(generator)
    vocab = [str(w) for w in cfg["vocabulary"]]
    images, words = [], []
    for i in range(HELD_OUT_IMAGES):
        rng = np.random.default_rng([int(cfg["seed"]), EVAL_SEED_OFFSET + HELD_OUT_STREAM, i])
        sample = make_sample(rng, cfg, f"r{i:06d}", "demo://reading", with_text=True)
        images.append(scorer.preprocess(Image.open(io.BytesIO(sample["jpg"])).convert("RGB")))
        words.append({w.lower() for w in sample["json"]["truth"]["words"]})
    with torch.no_grad():
        text = scorer.model.encode_text(scorer.tokenizer(vocab))
        image = scorer.model.encode_image(torch.stack(images))
        scores = torch.nn.functional.normalize(image, dim=-1) @ torch.nn.functional.normalize(text, dim=-1).T
    best = scores.argmax(dim=1).tolist()
    return float(np.mean([vocab[b] in w for b, w in zip(best, words)]))


def run_variant(workdir: Path, name: str, subset: str, epochs: int, lr: float | None = None,
                batch: int | None = None) -> dict:
    """Train one CLIP (one thread) and measure its reading."""
    import yaml
    from snakemake.utils import validate

    from parrotscope.score import load_scorer
    from parrotscope.synth import run_synth_eval
    from parrotscope.train import train_from_counts

    config = yaml.safe_load((workdir / "config.yaml").read_text())
    validate(config, schema=str(ROOT / "schemas/config.schema.yaml"), set_default=True)
    shards_dir = parrot_subset(workdir, subset) if is_bench_subset(subset) else workdir / f"results/demo/subsets/{subset}/shards"
    shards = sorted(str(p) for p in shards_dir.glob("*.tar"))
    out = workdir / "bench" / "reading_onset" / name
    hparams = {**config["train"]["hparams"], "epochs": epochs}
    if lr is not None:
        hparams["lr"] = lr
    if batch is not None:
        hparams["batch_size"] = batch
    arch = config["train"]["models"][0]
    record = train_from_counts(shards, str(shards_dir / "sizes.json"), arch, hparams, str(out / "run"),
                               str(out / "checkpoint.pt"), str(out / "results.json"), device="cpu",
                               seed=config["train"]["seed"], threads=1)
    spec = {"name": name, "arch": arch, "checkpoint": str(out / "checkpoint.pt")}
    bench = workdir / f"results/synth/demo/{config['synth']['sync_source']}_1gram"
    sync = run_synth_eval(str(bench), spec, str(out / "sync.json"), str(out / "sync.parquet"), threads=1)
    reading = held_out_reading(load_scorer(spec, "cpu"), config["datasets"]["demo"]["generator"])
    n = json.loads((shards_dir / "sizes.json").read_text())
    return {"variant": name, "subset": subset, "samples": sum(n.values()), "epochs": epochs, "lr": hparams["lr"],
            "batch": hparams["batch_size"],
            "steps": sum(n.values()) * epochs // hparams["batch_size"], "train_s": round(record["wall_s"]),
            "synth word acc.": sync["word_accuracy"], "sync gap": sync["sync_gap_mean"],
            "held-out demo reading": reading}


def parse_variant(text: str) -> tuple[str, str, int, float | None, int | None]:
    name, _, rest = text.partition("=")
    subset, _, rest = rest.partition(":")
    epochs, _, rest = rest.partition(":")
    lr, _, batch = rest.partition(":")
    try:
        rate = float(lr) if lr else None
    except ValueError:
        rate = -1.0
    malformed = not (name and subset and epochs.isdigit()) or (batch and not batch.isdigit())
    if malformed or (rate is not None and rate <= 0):
        raise argparse.ArgumentTypeError(f"variant {text!r}: expected NAME=SUBSET:EPOCHS[:LR[:BATCH]]")
    return name, subset, int(epochs), rate, int(batch) if batch else None


def variant_text(name: str, subset: str, epochs: int, lr: float | None, batch: int | None) -> str:
    """The command-line form of a parsed variant (for the section's command line)."""
    text = f"{name}={subset}:{epochs}"
    if lr or batch:
        text += f":{lr or ''}"
    return text + (f":{batch}" if batch else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True, help="a run with results/table3.csv built")
    parser.add_argument("variants", nargs="+", type=parse_variant)
    parser.add_argument("--jobs", type=int, default=2, help="variants trained side by side (one thread each)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/EXPERIMENTS.md")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args()
    import pandas as pd

    workdir = args.workdir.resolve()
    os.chdir(workdir)
    for subset in {v[1] for v in args.variants if is_bench_subset(v[1])}:
        parrot_subset(workdir, subset)  # once, before the variants that share it start
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(run_variant, *zip(*[(workdir, *v) for v in args.variants])))
    table = pd.DataFrame(rows).round(4).to_markdown(index=False)
    section = (f"{HEADING}\n\nOne tiny CLIP per variant (`train.hparams` of the run, epochs as listed, "
               f"one thread), chance word accuracy 1/16. `python bench/reading_onset.py --workdir RUN "
               f"{' '.join(variant_text(*v) for v in args.variants)}`:\n\n{table}\n")
    print(section)
    if not args.no_write:
        if not args.out.exists():
            args.out.write_text(HEADER)
        write_section(HEADING, section, args.out)


if __name__ == "__main__":
    main()
