"""Stage ``train``: CLIP training on a curated subset, with OpenCLIP's own trainer.

The paper (Sec. 6.1, supplementary Sec. 11) trains ViT-B and RN50 CLIP models with OpenCLIP on
8 A100 GPUs (PyTorch DDP, amp), AdamW with beta1 = 0.9 and beta2 = 0.98, cosine decay after a
linear warmup, InfoNCE loss, "other settings as the LAION-5B paper". This module does not
re-implement any of it: it builds the command line of ``open_clip_train.main`` and runs it.

Launching
    One process (CPU, or one GPU): ``python -m parrotscope.openclip_main ARGV`` in a subprocess
    (OpenCLIP's ``open_clip_train.main`` with its webdataset sample shuffle seeded, so a run is
    reproducible).
    Several GPUs on this node (``hparams["gpus"] > 1``):
    ``torchrun --standalone --nproc_per_node N -m parrotscope.openclip_main ARGV``.
    A subprocess either way: the trainer configures the root logger, seeds every global RNG and
    sets cuDNN flags, none of which should leak into the calling Snakemake job, and torchrun needs
    one anyway. Its start-up cost (Python, torch, open_clip imports) is a few seconds.

    Several nodes are not launched from here (each node must start its own share of the
    processes). Run, on every node (e.g. one ``srun`` task per node, run directory on shared
    storage, cleared once beforehand)::

        torchrun --nnodes NNODES --nproc_per_node GPUS_PER_NODE \\
                 --rdzv-backend c10d --rdzv-endpoint HEAD_HOST:29500 --rdzv-id JOB_ID \\
                 -m parrotscope.openclip_main ARGV

    with ``ARGV = build_argv(...)`` for ``world_size = NNODES * GPUS_PER_NODE``. Under Slurm the
    trainer can also read ``SLURM_PROCID`` etc. directly (one ``srun`` task per GPU, no torchrun).

Data
    ``--dataset-type webdataset`` over img2dataset shards (``KEY.jpg|png|jpeg|webp`` + ``KEY.txt``;
    ``KEY.json`` is ignored by the trainer). Without ``--dataset-resampled`` the trainer asserts
    ``n_shards >= workers x world_size``, so the dataloader workers are lowered to fit. Each worker
    repeats or truncates its own shards to reach ``ceil(n_samples / global_batch / workers)``
    batches per epoch: pass the true sample count, and prefer shards of similar sizes.

Architectures
    ``arch`` is a named OpenCLIP architecture (``"RN50"``, ``{"name": "ViT-B-32"}``), a packaged
    tiny one (``{"name": "tiny-rn"}``, ``"tiny-vit"``: JSON files in ``parrotscope/archs/``), or a
    custom one (``{"name": ..., "model_cfg": {...}}`` in OpenCLIP's model-config format). A custom
    or packaged config reaches the trainer as ``--model local-dir:DIR`` with
    ``DIR/open_clip_config.json = {"model_cfg": ...}``: unlike ``open_clip.add_model_config`` it
    needs no code in the trainer's process, so it works the same under torchrun. The trainer's
    tokenizer takes its context length from ``text_cfg.context_length`` in that file.

Outputs
    ``out_checkpoint``: a copy of the trainer's final checkpoint (``{"epoch", "name",
    "state_dict", "optimizer"}``; keys prefixed ``module.`` after DDP), loadable with
    ``torch.load(weights_only=True)`` and as ``--pretrained`` by OpenCLIP and clip-benchmark.
    ``out_results``: JSON with the hyperparameters, argv, samples seen, steps, wall time,
    throughput, the logged loss curve and the final train loss.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import torch

from .devices import resolve_device
from .io import atomic_path, write_json
from .shards import count_training_samples

ARCH_DIR = Path(__file__).parent / "archs"
# Packaged tiny architectures for a 2-core CPU, as in the pilot of NOTES.md: a conv CLIP from
# OpenCLIP's ModifiedResNet and a small ViT, both 64 px, with a 2-layer text tower of context 16.
TINY_ARCHS = tuple(sorted(p.stem for p in ARCH_DIR.glob("*.json")))

# Paper settings where it states them (AdamW betas); OpenCLIP's ViT defaults for eps and weight
# decay (the LAION-5B recipe); the rest sized for the miniature study on a CPU.
DEFAULT_HPARAMS = {
    "batch_size": 64,          # per process
    "lr": 1e-3,
    "wd": 0.2,
    "beta1": 0.9,
    "beta2": 0.98,
    "eps": 1e-6,
    "warmup": 20,              # steps; OpenCLIP's default of 10,000 keeps a short run at lr ~ 0
    "epochs": 8,
    "workers": 1,              # dataloader workers per process (lowered to fit the shards)
    "gpus": 1,                 # processes on this node when on CUDA (torchrun when > 1)
    "precision": None,         # None: fp32 on CPU (amp is ~25x slower there), amp_bf16 on GPU
    "lr_scheduler": "cosine",
    "grad_clip_norm": None,
    "dataset_resampled": False,
    "log_every_n_steps": 10,
    "save_frequency": 1,       # every epoch, keeping only the latest (resumable, bounded disk)
    "local_loss": True,        # with several GPUs: --local-loss --gather-with-grad (LAION recipe)
    "extra_args": [],          # appended verbatim to the trainer's argv
}

# OpenCLIP's main, with its webdataset sample shuffle seeded (parrotscope/openclip_main.py):
# without that, two runs with the same seed train different models.
TRAINER_MODULE = "parrotscope.openclip_main"
RUN_NAME = "train"
RUN_MARKER = ".parrotscope-train"
_ALREADY_EXISTS = "Experiment already exists"
_TRAIN_LINE = re.compile(r"Train Epoch: (\d+) \[\s*(\d+)/(\d+)")
_LOSS = re.compile(r"(?<![\w])Loss: (\S+) \((\S+)\)")


class TrainError(RuntimeError):
    """The trainer did not produce a finished run; the message carries the end of its log."""


# ----------------------------------------------------------------------------------------------
# Architectures and models


def packaged_arch(name: str) -> dict:
    """The model config of a packaged tiny architecture (``parrotscope/archs/NAME.json``)."""
    path = ARCH_DIR / f"{name}.json"
    if not path.is_file():
        raise KeyError(f"no packaged architecture {name!r}; packaged: {list(TINY_ARCHS)}")
    return json.loads(path.read_text())


def resolve_arch(arch: str | dict) -> dict:
    """Normalise an architecture spec to ``{"name": str, "model_cfg": dict | None}``.

    ``model_cfg`` is None for OpenCLIP's built-in architectures, which the trainer knows by name.
    An explicit ``model_cfg`` wins over a packaged or built-in one of the same name.
    """
    import open_clip

    spec = {"name": arch} if isinstance(arch, str) else dict(arch)
    name = spec.get("name")
    if not name:
        raise ValueError(f"architecture spec {arch!r} has no name")
    if spec.get("model_cfg") is not None:
        cfg = spec["model_cfg"]
        missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in cfg]
        if missing:
            raise ValueError(f"model_cfg of architecture {name!r} lacks {missing}")
        return {"name": name, "model_cfg": cfg}
    if name in TINY_ARCHS:
        return {"name": name, "model_cfg": packaged_arch(name)}
    if name in open_clip.list_models():
        return {"name": name, "model_cfg": None}
    raise ValueError(
        f"unknown architecture {name!r}: not packaged ({list(TINY_ARCHS)}), not an OpenCLIP name, "
        f"and no model_cfg given")


def write_arch_dir(arch: dict, directory: str | os.PathLike) -> str:
    """Return the trainer's ``--model`` value for a resolved arch, writing a local-dir if custom.

    The directory must hold nothing else: OpenCLIP would load any ``*.bin|pth|safetensors`` there.
    """
    if arch["model_cfg"] is None:
        return arch["name"]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "open_clip_config.json").write_text(json.dumps({"model_cfg": arch["model_cfg"]}, indent=2))
    return f"local-dir:{directory.resolve()}"


@contextlib.contextmanager
def model_identifier(arch: str | dict) -> Iterator[str]:
    """Yield an OpenCLIP model name for ``arch``, backed by a temporary local-dir if custom."""
    resolved = resolve_arch(arch)
    if resolved["model_cfg"] is None:
        yield resolved["name"]
        return
    with tempfile.TemporaryDirectory(prefix="parrotscope-arch-") as tmp:
        yield write_arch_dir(resolved, tmp)


class _DropRandomInitWarnings(logging.Filter):
    """OpenCLIP warns that a local-dir model "initialized randomly"; here weights come next."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "no CLIP weights found" not in message and "initialized randomly" not in message


def build_model(arch: str | dict, device: str = "cpu", **create_kwargs):
    """A randomly initialised model in eval mode, its eval transform and its tokenizer.

    ``create_kwargs`` go to ``open_clip.create_model_and_transforms`` (e.g. ``force_quick_gelu``,
    ``image_mean``). Callers load weights themselves: see :func:`load_checkpoint_model`.
    """
    import open_clip

    quiet = _DropRandomInitWarnings()
    logging.getLogger().addFilter(quiet)
    try:
        with model_identifier(arch) as model_id:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_id, device=device, precision="fp32", **create_kwargs)
            tokenizer = open_clip.get_tokenizer(model_id)
    finally:
        logging.getLogger().removeFilter(quiet)
    model.eval()
    return model, preprocess, tokenizer


def read_state_dict(checkpoint_path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model weights of a trainer checkpoint or a bare state dict, ``module.`` prefixes removed.

    ``weights_only=True``: tensors and plain containers only, nothing else is unpickled.
    """
    obj = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    state = obj["state_dict"] if isinstance(obj, dict) and "state_dict" in obj else obj
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{checkpoint_path}: no state dict found")
    # DDP saves the wrapper's state dict, every key prefixed with "module.".
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def load_checkpoint_model(arch: str | dict, checkpoint_path: str | os.PathLike, device: str = "auto"):
    """``(model, preprocess, tokenizer)`` for a checkpoint written by :func:`train_clip`.

    The model is built from ``arch`` and the weights are loaded strictly, so a checkpoint of a
    different architecture fails loudly instead of scoring with half its weights.
    """
    device = resolve_device(device)
    model, preprocess, tokenizer = build_model(arch, device="cpu")
    model.load_state_dict(read_state_dict(checkpoint_path), strict=True)
    return model.to(device).eval(), preprocess, tokenizer


# ----------------------------------------------------------------------------------------------
# The trainer's command line


def overlay_hparams(defaults: dict, hparams: dict | None, what: str = "training") -> dict:
    """``defaults`` overlaid with ``hparams``; unknown keys are refused (a typo would silently do nothing)."""
    hparams = dict(hparams or {})
    unknown = sorted(set(hparams) - set(defaults))
    if unknown:
        raise ValueError(f"unknown {what} hyperparameters {unknown}; known: {sorted(defaults)}")
    return {**defaults, **hparams}


def resolve_hparams(hparams: dict | None) -> dict:
    """OpenCLIP trainer settings: :data:`DEFAULT_HPARAMS` overlaid with ``hparams``."""
    return overlay_hparams(DEFAULT_HPARAMS, hparams)


def plan_workers(n_shards: int, configured: int, world_size: int, resampled: bool) -> int:
    """Dataloader workers per process that satisfy the trainer's ``shards >= workers x world_size``.

    With ``resampled`` shards are drawn with replacement and any count works. With fewer shards
    than processes some ranks would get no data at all, which no worker count fixes.
    """
    if resampled:
        return configured
    if n_shards < world_size:
        raise ValueError(
            f"{n_shards} shard(s) for {world_size} training processes: every process needs at "
            f"least one shard. Write more, smaller shards, or set dataset_resampled: true.")
    return max(0, min(configured, n_shards // world_size))


def check_batches(n_samples: int, batch_size: int, workers: int, world_size: int) -> None:
    """Refuse a run whose data streams hold fewer samples than one batch.

    OpenCLIP's webdataset loader drops partial training batches and restarts a stream until it
    has produced its quota of batches, so a stream smaller than a batch never produces one and
    the trainer waits forever (seen here: a 60-sample subset with batch 64).
    """
    streams = max(1, workers) * world_size
    if n_samples // streams < batch_size:
        raise TrainError(
            f"{n_samples} samples over {streams} data stream(s) give fewer than one batch of "
            f"{batch_size} per stream, and OpenCLIP's trainer would wait forever. Lower "
            f"train.hparams.batch_size or workers, or raise the subset's size (curate.size / "
            f"curate.table_sizes).")


def local_url(url: str) -> str:
    """Absolute path for a local shard (the trainer may run elsewhere); URLs and pipes unchanged."""
    if url.startswith("pipe:") or "://" in url:
        return url
    return os.path.abspath(url)


def build_argv(train_shards: list[str], n_samples: int, model_id: str, hp: dict, logs_dir: str,
               device: str, seed: int, workers: int, resume: bool, world_size: int = 1) -> list[str]:
    """The argv of ``open_clip_train.main`` for one training run."""
    precision = hp["precision"] or ("fp32" if device == "cpu" else "amp_bf16")
    argv = [
        "--model", model_id,
        "--train-data", "::".join(local_url(u) for u in train_shards),
        "--train-num-samples", str(int(n_samples)),
        "--dataset-type", "webdataset",
        "--batch-size", str(int(hp["batch_size"])),
        "--lr", repr(float(hp["lr"])),
        "--wd", repr(float(hp["wd"])),
        "--beta1", repr(float(hp["beta1"])),
        "--beta2", repr(float(hp["beta2"])),
        "--eps", repr(float(hp["eps"])),
        "--warmup", str(int(hp["warmup"])),
        "--epochs", str(int(hp["epochs"])),
        "--lr-scheduler", hp["lr_scheduler"],
        "--workers", str(int(workers)),
        "--seed", str(int(seed)),
        "--logs", logs_dir,
        "--name", RUN_NAME,
        "--save-frequency", str(int(hp["save_frequency"])),
        "--delete-previous-checkpoint",
        "--log-every-n-steps", str(int(hp["log_every_n_steps"])),
        "--device", device,
        "--precision", precision,
        "--report-to", "",
        # No ImageNet here; evaluation is clip-benchmark's job (the trainer's zero-shot has
        # ImageNet class names hard-coded).
        "--zeroshot-frequency", "0",
    ]
    if hp["grad_clip_norm"] is not None:
        argv += ["--grad-clip-norm", repr(float(hp["grad_clip_norm"]))]
    if hp["dataset_resampled"]:
        argv.append("--dataset-resampled")
    if world_size > 1 and hp["local_loss"]:
        argv += ["--local-loss", "--gather-with-grad"]
    if resume:
        argv += ["--resume", "latest"]
    return argv + [str(a) for a in hp["extra_args"]]


def launch_command(argv: list[str], gpus: int) -> list[str]:
    """The full command: one Python process, or torchrun with one process per GPU on this node."""
    if gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", str(gpus), "-m", TRAINER_MODULE, *argv]
    return [sys.executable, "-m", TRAINER_MODULE, *argv]


# ----------------------------------------------------------------------------------------------
# Running and reading the trainer


def prepare_run_dir(run_dir: Path, resume: bool) -> None:
    """Empty ``run_dir`` for a fresh run (the trainer refuses to reuse a log directory).

    Only a directory this module created (it holds a marker file), or an empty one, is ever
    deleted, so a mistyped ``run_dir`` cannot wipe unrelated files.
    """
    if run_dir.exists() and not resume:
        if any(run_dir.iterdir()) and not (run_dir / RUN_MARKER).exists():
            raise TrainError(f"run directory {run_dir} is not empty and was not made by parrotscope; "
                             f"refusing to clear it")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_MARKER).touch()


def run_trainer(cmd: list[str], console_log: Path, env: dict, echo: bool = True) -> tuple[int, list[tuple[float, str]]]:
    """Run the trainer, teeing its output to ``console_log`` (and stderr); lines with arrival times.

    Arrival times (monotonic) give sub-second timings that the log's one-second timestamps lack.
    """
    lines: list[tuple[float, str]] = []
    with open(console_log, "w") as log, subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            lines.append((time.monotonic(), line.rstrip("\n")))
            log.write(line)
            if echo:
                sys.stderr.write(line)
        rc = proc.wait()
    return rc, lines


def parse_train_log(lines: list[tuple[float, str]], global_batch: int) -> dict:
    """Steps, samples seen, throughput and the loss curve from the trainer's console lines.

    The trainer logs every ``log_every_n_steps`` steps and at each epoch's last step, as
    ``Train Epoch: E [N/TOTAL (P%)] ... Loss: VALUE (EPOCH_MEAN_OF_LOGGED)``.
    """
    curve, last_per_epoch = [], {}
    t_start = next((t for t, s in lines if "Start epoch" in s), None)
    t_last = None
    for t, text in lines:
        m = _TRAIN_LINE.search(text)
        loss = _LOSS.search(text)
        if not m or not loss:
            continue
        epoch, seen_in_epoch, per_epoch = int(m.group(1)), int(m.group(2)), int(m.group(3))
        last_per_epoch[epoch] = seen_in_epoch
        # The trainer's own step count: every epoch has the same number of batches.
        step = epoch * (per_epoch // global_batch) + seen_in_epoch // global_batch
        curve.append({"epoch": epoch, "step": step,
                      "loss": float(loss.group(1)), "epoch_mean_loss": float(loss.group(2))})
        t_last = t
    samples = sum(last_per_epoch.values())
    # None rather than NaN where nothing was logged: results are written as strict JSON.
    train_s = (t_last - t_start) if (t_start is not None and t_last is not None) else None
    return {
        "samples_seen": samples,
        "steps": samples // global_batch,
        "epochs_logged": len(last_per_epoch),
        "train_loop_s": train_s,
        "samples_per_s": samples / train_s if train_s else None,
        "final_loss": curve[-1]["loss"] if curve else None,
        "final_epoch_mean_loss": curve[-1]["epoch_mean_loss"] if curve else None,
        "loss_curve": curve,
    }


def _tail(lines: list[tuple[float, str]], n: int = 30) -> str:
    return "\n".join(s for _, s in lines[-n:])


def train_clip(train_shards: list[str], n_samples: int, arch: str | dict, hparams: dict, run_dir: str,
               out_checkpoint: str, out_results: str, device: str = "auto", seed: int = 0,
               resume: bool = False, threads: int | None = None, echo: bool = True) -> dict:
    """Train a CLIP model with OpenCLIP's trainer on ``train_shards`` and record the run.

    ``n_samples`` is the number of samples in the shards (the trainer cannot count them).
    ``hparams`` overlays :data:`DEFAULT_HPARAMS` (unknown keys raise); ``gpus`` is ignored off
    CUDA. ``run_dir`` holds the trainer's logs and checkpoints; it is emptied first unless
    ``resume`` (then the trainer continues from its latest checkpoint there). ``threads`` caps the
    trainer's intra-op CPU threads (OMP/MKL); ``echo`` copies its console to stderr (it is always
    kept in ``run_dir/console.log``). Returns the results dict that is also written to
    ``out_results``; raises :class:`TrainError` when the trainer fails, trains nothing, reuses an
    old experiment or ends with a non-finite loss (then neither output is written).
    """
    t0 = time.monotonic()
    hp = resolve_hparams(hparams)
    resolved = resolve_arch(arch)
    device = resolve_device(device)
    gpus = int(hp["gpus"]) if device.startswith("cuda") else 1
    if gpus > 1 and torch.cuda.device_count() < gpus:
        raise TrainError(f"{gpus} GPUs requested, {torch.cuda.device_count()} visible")
    if not train_shards:
        raise ValueError("no training shards")
    workers = plan_workers(len(train_shards), int(hp["workers"]), gpus, bool(hp["dataset_resampled"]))
    check_batches(int(n_samples), int(hp["batch_size"]), workers, gpus)

    run_path = Path(run_dir)
    prepare_run_dir(run_path, resume)
    model_id = write_arch_dir(resolved, run_path / "arch")
    argv = build_argv(train_shards, n_samples, model_id, hp, str(run_path.resolve()), device, seed,
                      workers, resume, world_size=gpus)
    cmd = launch_command(argv, gpus)

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # OpenMP threads spin while waiting; when another process holds a core, a 2-thread trainer on
    # 2 cores measured 9x slower (15 vs 130 samples/s). Passive waiting removes that collapse.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    rc, lines = run_trainer(cmd, run_path / "console.log", env, echo=echo)
    if any(_ALREADY_EXISTS in s for _, s in lines):
        # The trainer prints this and still exits 0 when its log directory is reused.
        raise TrainError(f"the trainer found an existing experiment in {run_path / RUN_NAME} and did "
                         f"not train:\n{_tail(lines)}")
    if rc != 0:
        raise TrainError(f"trainer exited with {rc}; command: {' '.join(cmd)}\n{_tail(lines)}")
    final = run_path / RUN_NAME / "checkpoints" / f"epoch_{int(hp['epochs'])}.pt"
    if not final.is_file():
        raise TrainError(f"trainer exited 0 but wrote no final checkpoint {final}:\n{_tail(lines)}")

    global_batch = int(hp["batch_size"]) * gpus
    parsed = parse_train_log(lines, global_batch)
    if resume:
        parsed["note"] = "resumed run: samples and steps count only the epochs trained in this call"
    if parsed["epochs_logged"] and not math.isfinite(parsed["final_loss"]):
        raise TrainError(f"final train loss is {parsed['final_loss']} (diverged):\n{_tail(lines)}")
    if not parsed["epochs_logged"] and not resume:
        raise TrainError(f"the trainer logged no training step:\n{_tail(lines)}")

    with atomic_path(out_checkpoint, suffix=".pt") as tmp:
        shutil.copyfile(final, tmp)
    precision = argv[argv.index("--precision") + 1]
    results = {
        "arch": resolved,
        "hparams": hp,
        "n_samples": int(n_samples),
        "n_shards": len(train_shards),
        "workers": workers,
        "world_size": gpus,
        # Each dataloader stream repeats or truncates its own shards to the same batch count, so
        # an uneven split over-samples the streams with fewer samples.
        "even_shard_split": len(train_shards) % (max(1, workers) * gpus) == 0,
        "device": device,
        "precision": precision,
        "seed": int(seed),
        "resume": bool(resume),
        **parsed,
        "wall_s": time.monotonic() - t0,
        "checkpoint": str(out_checkpoint),
        "command": cmd,
        "versions": _versions(),
    }
    write_json(results, out_results)
    return results


def _versions() -> dict:
    import open_clip
    import webdataset

    return {"open_clip": open_clip.__version__, "torch": torch.__version__,
            "webdataset": getattr(webdataset, "__version__", "unknown")}


def check_training_shards(train_shards: list[str], counts_json: str) -> None:
    """Refuse training shards that are truncated, garbled, hold other sample counts than their
    ``sizes.json`` says, or carry members OpenCLIP's loader would unpickle.

    OpenCLIP's loader logs and skips what it cannot read, and tarfile stops silently at a garbled
    header, so a damaged shard would train a different model without an error. Its decoder
    (webdataset's defaults) also unpickles every ``.pyd``/``.pickle`` member of a sample: code
    execution from the data. Only local shards can be checked (header-only, data is seeked over).
    Sample counts are compared for subset shards; a dataset's own shards are read to their end by
    ingest, which reruns whenever one changes. A dataset shard that ingest recorded as truncated
    (``parts.json``) is scanned up to its cut: the trainer reads the same whole samples, and the
    pool's sample count is ingest's ``ok``.
    """
    from .io import read_json
    from .shards import FAIL, RECORD, scan_shard

    counts = read_json(counts_json)
    sizes = {} if "parts" in counts else counts
    recorded_cut = set(counts.get("shards_truncated", [])) if "parts" in counts else set()
    for shard in train_shards:
        if not os.path.isfile(shard):
            continue  # a URL or pipe: the trainer streams it, nothing to scan here
        scan = scan_shard(shard, RECORD if shard in recorded_cut else FAIL)
        if scan.unpickled_members:
            raise TrainError(
                f"shard {shard} has members that OpenCLIP's loader would unpickle (code execution "
                f"from the data): {scan.unpickled_members[:3]}. parrotscope never reads such members; "
                f"remove them from the shard, or train on a curated subset (its shards carry only "
                f"image, txt and json).")
        expected = sizes.get(os.path.basename(shard))
        if expected is not None and scan.n_samples != int(expected):
            raise TrainError(f"shard {shard} holds {scan.n_samples} samples, {counts_json} says {expected}: "
                             f"rebuild the subset's shards")


def train_from_counts(train_shards: list[str], counts_json: str, arch: str | dict, hparams: dict,
                      run_dir: str, out_checkpoint: str, out_results: str, device: str = "auto",
                      seed: int = 0, threads: int | None = None) -> dict:
    """:func:`train_clip` with the sample count read from ``counts_json``."""
    check_training_shards(train_shards, counts_json)
    return train_clip(train_shards, count_training_samples(counts_json), arch, hparams, run_dir,
                      out_checkpoint, out_results, device=device, seed=seed, threads=threads)
