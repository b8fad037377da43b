"""Training through OpenCLIP's trainer: argv, run-directory handling, one real tiny CPU run."""

import io
import json
import math
import sys

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from parrotscope import train
from parrotscope.train import (
    DEFAULT_HPARAMS, TrainError, build_argv, launch_command, load_checkpoint_model, parse_train_log,
    plan_workers, read_state_dict, resolve_arch, resolve_hparams, train_clip)

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 60, 220), "yellow": (230, 220, 30)}
TINY = {"batch_size": 16, "epochs": 1, "workers": 2, "warmup": 2, "log_every_n_steps": 1}


def write_square_shards(directory, n_shards=4, per_shard=16, size=64, seed=0):
    """img2dataset-layout shards (KEY.jpg, KEY.txt, KEY.json) of coloured squares with captions."""
    rng = np.random.default_rng(seed)
    paths = []
    for s in range(n_shards):
        path = str(directory / f"{s:05d}.tar")
        with wds.TarWriter(path) as sink:
            for i in range(per_shard):
                colour = list(COLORS)[rng.integers(len(COLORS))]
                image = np.full((size, size, 3), 128, np.uint8)
                x, y = rng.integers(0, size // 2, 2)
                image[y:y + size // 2, x:x + size // 2] = COLORS[colour]
                buf = io.BytesIO()
                Image.fromarray(image).save(buf, format="JPEG")
                sink.write({"__key__": f"{s:05d}{i:04d}", "jpg": buf.getvalue(),
                            "txt": f"a {colour} square", "json": json.dumps({"colour": colour}).encode()})
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_square_shards(tmp_path_factory.mktemp("shards"))


@pytest.fixture(scope="module")
def trained(shards, tmp_path_factory):
    """One real 1-epoch run of the tiny conv CLIP on CPU, shared by the tests below."""
    root = tmp_path_factory.mktemp("train")
    paths = {"run_dir": root / "run", "ckpt": root / "out" / "model.pt", "results": root / "out" / "results.json"}
    results = train_clip(shards, 64, {"name": "tiny-rn"}, TINY, str(paths["run_dir"]), str(paths["ckpt"]),
                         str(paths["results"]), device="cpu", seed=0, threads=1, echo=False)
    return paths, results


def test_argv_on_cpu_follows_the_paper_and_the_notes():
    hp = resolve_hparams({"batch_size": 16, "workers": 8})
    workers = plan_workers(n_shards=3, configured=hp["workers"], world_size=1, resampled=False)
    argv = build_argv(["a.tar", "pipe:cat b.tar", "s3://x/c.tar"], 300, "local-dir:/x", hp, "/logs",
                      "cpu", 7, workers, resume=False)
    opt = {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}
    assert opt["--precision"] == "fp32" and opt["--device"] == "cpu"
    assert float(opt["--beta1"]) == 0.9 and float(opt["--beta2"]) == 0.98
    assert opt["--dataset-type"] == "webdataset" and opt["--train-num-samples"] == "300"
    assert int(opt["--workers"]) == 3  # lowered to the number of shards
    assert opt["--report-to"] == "" and opt["--seed"] == "7" and opt["--name"] == train.RUN_NAME
    shards = opt["--train-data"].split("::")
    assert shards[0].startswith("/") and shards[1] == "pipe:cat b.tar" and shards[2] == "s3://x/c.tar"
    assert "--resume" not in argv and "--local-loss" not in argv


def test_argv_on_gpus_uses_amp_bf16_torchrun_and_local_loss():
    hp = resolve_hparams({"gpus": 4})
    argv = build_argv(["a.tar"] * 8, 1000, "RN50", hp, "/logs", "cuda", 0, 2, resume=True, world_size=4)
    assert argv[argv.index("--precision") + 1] == "amp_bf16"
    assert "--local-loss" in argv and "--gather-with-grad" in argv
    assert argv[argv.index("--resume") + 1] == "latest"
    cmd = launch_command(argv, gpus=4)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    # OpenCLIP's main behind parrotscope.openclip_main, which seeds its sample shuffle.
    assert cmd[cmd.index("--nproc_per_node") + 1] == "4" and "parrotscope.openclip_main" in cmd
    assert launch_command(argv, gpus=1)[:3] == [sys.executable, "-m", "parrotscope.openclip_main"]


def test_workers_fit_the_shards():
    assert plan_workers(4, 2, 1, False) == 2
    assert plan_workers(4, 8, 2, False) == 2  # 4 shards >= 2 workers x 2 processes
    assert plan_workers(1, 8, 4, True) == 8  # resampled: any count
    with pytest.raises(ValueError, match="dataset_resampled"):
        plan_workers(2, 1, 4, False)


def test_hparams_and_archs_are_checked():
    assert resolve_hparams({})["beta2"] == 0.98 and DEFAULT_HPARAMS["warmup"] < 10000
    with pytest.raises(ValueError, match="unknown training hyperparameters"):
        resolve_hparams({"learning_rate": 1e-3})
    assert resolve_arch("RN50") == {"name": "RN50", "model_cfg": None}
    rn = resolve_arch({"name": "tiny-rn"})["model_cfg"]
    assert rn["vision_cfg"]["layers"] == [1, 1, 1, 1] and rn["text_cfg"]["context_length"] == 16
    assert resolve_arch("tiny-vit")["model_cfg"]["vision_cfg"]["patch_size"] == 8
    custom = {"name": "mine", "model_cfg": {**rn, "embed_dim": 32}}
    assert resolve_arch(custom)["model_cfg"]["embed_dim"] == 32
    with pytest.raises(ValueError, match="unknown architecture"):
        resolve_arch("no-such-arch")


def test_log_parsing_follows_the_trainer_steps():
    head = "2026-11-23,12:43:28 | INFO | "
    tail = "Data (t): 0.1 Batch (t): 0.5, 128.0/s, 128.0/s/gpu LR: 0.001 Logit Scale: 14.2"
    lines = [(10.0, head + "Start epoch 1"),  # a resumed run: epoch 0 was trained earlier
             (11.0, head + f"Train Epoch: 1 [ 64/256 (25%)] {tail} Contrastive_loss: 2.5 (2.5) Loss: 2.5 (2.5)"),
             (13.0, head + f"Train Epoch: 1 [256/256 (100%)] {tail} Contrastive_loss: 2.0 (2.25) Loss: 2.0 (2.25)")]
    out = parse_train_log(lines, global_batch=64)
    assert [c["step"] for c in out["loss_curve"]] == [5, 8]
    assert out["samples_seen"] == 256 and out["steps"] == 4 and out["epochs_logged"] == 1
    assert out["final_loss"] == 2.0 and out["final_epoch_mean_loss"] == 2.25
    assert out["samples_per_s"] == 256 / 3.0
    assert parse_train_log([(0.0, "Start epoch 0")], 64)["final_loss"] is None


def test_training_writes_checkpoint_and_results(trained):
    paths, results = trained
    on_disk = json.loads(paths["results"].read_text())
    assert on_disk["samples_seen"] == 64 and on_disk["steps"] == 4
    assert math.isfinite(on_disk["final_loss"]) and 0 < on_disk["final_loss"] < 10
    assert on_disk["precision"] == "fp32" and on_disk["workers"] == 2 and on_disk["world_size"] == 1
    assert on_disk["even_shard_split"] is True
    assert on_disk["hparams"]["beta2"] == 0.98 and on_disk["arch"]["name"] == "tiny-rn"
    assert [p["step"] for p in on_disk["loss_curve"]] == [1, 2, 3, 4]
    assert on_disk["samples_per_s"] > 0 and on_disk["wall_s"] >= on_disk["train_loop_s"]
    assert results == on_disk

    raw = torch.load(paths["ckpt"], map_location="cpu", weights_only=True)
    assert raw["epoch"] == 1 and "state_dict" in raw
    model, preprocess, tokenizer = load_checkpoint_model("tiny-rn", paths["ckpt"], device="cpu")
    assert tokenizer(["a red square"]).shape == (1, 16)  # the arch's context length, as in training
    state = read_state_dict(paths["ckpt"])
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    x = preprocess(Image.new("RGB", (64, 64), (220, 30, 30))).unsqueeze(0)
    assert x.shape == (1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.isfinite(model.encode_image(x)).all()


def test_rerun_clears_the_run_directory(trained, shards):
    paths, first = trained
    stale = paths["run_dir"] / "train" / "stale.txt"
    stale.write_text("from an earlier run")
    again = train_clip(shards, 64, "tiny-rn", TINY, str(paths["run_dir"]), str(paths["ckpt"]),
                       str(paths["results"]), device="cpu", seed=1, threads=1, echo=False)
    assert not stale.exists()
    assert again["samples_seen"] == 64 and math.isfinite(again["final_loss"])


def test_existing_experiment_is_an_error(tmp_path, monkeypatch, shards):
    # The trainer prints this and exits 0 when its log directory is reused.
    fake = [sys.executable, "-c", "print('Error. Experiment already exists. Use --name {} to specify')"]
    monkeypatch.setattr(train, "launch_command", lambda argv, gpus: fake)
    with pytest.raises(TrainError, match="existing experiment"):
        train_clip(shards, 64, "tiny-rn", TINY, str(tmp_path / "run"), str(tmp_path / "m.pt"),
                   str(tmp_path / "r.json"), device="cpu", echo=False)
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "r.json").exists()


def test_failed_trainer_is_an_error(tmp_path, monkeypatch, shards):
    fake = [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"]
    monkeypatch.setattr(train, "launch_command", lambda argv, gpus: fake)
    with pytest.raises(TrainError, match="exited with 3"):
        train_clip(shards, 64, "tiny-rn", TINY, str(tmp_path / "run"), str(tmp_path / "m.pt"),
                   str(tmp_path / "r.json"), device="cpu", echo=False)


def test_foreign_directory_is_never_cleared(tmp_path, shards):
    precious = tmp_path / "data" / "keep.txt"
    precious.parent.mkdir()
    precious.write_text("not ours")
    with pytest.raises(TrainError, match="refusing to clear"):
        train_clip(shards, 64, "tiny-rn", TINY, str(precious.parent), str(tmp_path / "m.pt"),
                   str(tmp_path / "r.json"), device="cpu", echo=False)
    assert precious.read_text() == "not ours"


def test_a_stream_smaller_than_a_batch_is_refused():
    from parrotscope.train import TrainError, check_batches

    check_batches(64, 64, workers=1, world_size=1)
    with pytest.raises(TrainError, match="curate.table_sizes"):
        check_batches(60, 64, workers=1, world_size=1)
    with pytest.raises(TrainError, match="2 data stream"):
        check_batches(100, 64, workers=2, world_size=1)
