"""Zero-shot evaluation through clip-benchmark: demo sets, an oracle model, DataComp groups, JSON."""

import io
import json
import math
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

from parrotscope.demo import demo_config, write_eval_set
from parrotscope.evaluate import (
    AVERAGE, DATACOMP_TASKS, GROUPS, aggregate_groups, datacomp_tasks, demo_tasks, evaluate_model,
    evaluate_tasks, main_metric_value, normalise_task, tasks_for, workflow_inputs)
from parrotscope.train import build_model

# clip-benchmark's own accuracy() converts a 1-element array with float(), which numpy deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning")

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Every test of this module runs with one torch thread (see conftest)."""


# ----------------------------------------------------------------------------------------------
# Fixtures: the demo's eval sets, a tiny random checkpoint, a colour oracle and its eval sets


@pytest.fixture(scope="module")
def demo_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    cfg = demo_config({"eval_concepts_per_class": 3, "eval_retrieval_pairs": 20})
    for kind in ("concepts", "retrieval"):
        write_eval_set(cfg, kind, str(root / kind))
    return root


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model, _, _ = build_model("tiny-rn")
    path = tmp_path_factory.mktemp("model") / "checkpoint.pt"
    torch.save({"state_dict": model.state_dict(), "epoch": 1}, path)
    return str(path)


def demo_task_list(root):
    return [dict(t, root=str(root / t["name"])) for t in demo_tasks("demo")]


def _png(rgb) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), rgb).save(buf, format="PNG")  # lossless: the oracle sees exact colours
    return buf.getvalue()


def write_wds(root, kind: str, samples: list[tuple[str, str]]) -> str:
    """A clip-benchmark wds set: ``samples`` of (colour, label-or-caption), one shard."""
    (root / "test").mkdir(parents=True)
    with tarfile.open(root / "test" / "0.tar", "w") as tar:
        for i, (colour, extra) in enumerate(samples):
            for ext, data in (("png", _png(COLOURS[colour])), ("cls" if kind == "classification" else "txt",
                                                                 extra.encode())):
                info = tarfile.TarInfo(f"{i:04d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    (root / "test" / "nshards.txt").write_text("1\n")
    (root / "dataset_type.txt").write_text(kind + "\n")
    (root / "classnames.txt").write_text("".join(f"{c}\n" for c in COLOURS))
    (root / "zeroshot_classification_templates.txt").write_text("a photo of a {c} thing\n{c}\n")
    return str(root)


class ColourOracle(torch.nn.Module):
    """Image embedding = mean colour, text embedding = one-hot of the colour word: they agree exactly."""

    def encode_image(self, images):
        return images.mean(dim=(2, 3))

    def encode_text(self, tokens):
        return F.one_hot(tokens[:, 0], len(COLOURS)).float()


def colour_tokenizer(texts):
    names = list(COLOURS)
    return torch.tensor([[next(i for i, c in enumerate(names) if c in t)] for t in texts])


@pytest.fixture(scope="module")
def oracle_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("oracle")
    labels = [0, 1, 2, 2, 1, 0, 0, 2]
    names = list(COLOURS)
    cls = write_wds(root / "cls", "classification", [(names[y], str(y)) for y in labels])
    ret = write_wds(root / "ret", "retrieval", [(c, f"a {c} square") for c in names])
    return cls, ret


# ----------------------------------------------------------------------------------------------
# clip-benchmark on the demo's eval sets


def test_tiny_model_on_demo_sets_writes_the_expected_json(demo_sets, tiny_checkpoint, tmp_path):
    out = tmp_path / "eval" / "benchmark.json"
    spec = {"name": "tiny", "arch": "tiny-rn", "checkpoint": tiny_checkpoint}
    result = evaluate_model(spec, demo_task_list(demo_sets), str(out), batch_size=16, device="cpu")

    written = json.loads(out.read_text())
    assert [p.name for p in out.parent.iterdir()] == ["benchmark.json"]  # no temporary left behind
    assert written["model"] == spec and written["device"] == "cpu" and written["batch_size"] == 16
    assert set(written["tasks"]) == {"concepts", "retrieval"}

    concepts, retrieval = written["tasks"]["concepts"], written["tasks"]["retrieval"]
    assert concepts["status"] == retrieval["status"] == "ok"
    assert concepts["n_images"] == 16 * 3 and retrieval["n_images"] == retrieval["n_texts"] == 20
    assert set(concepts["metrics"]) == {"acc1", "acc5", "mean_per_class_recall"}
    assert set(retrieval["metrics"]) == {f"{d}_retrieval_recall@{k}" for d in ("image", "text") for k in (1, 5, 10)}
    for record in (concepts, retrieval):
        assert all(0.0 <= v <= 1.0 for v in record["metrics"].values())
    assert concepts["main_metric"] == concepts["metrics"]["acc1"]
    assert retrieval["main_metric"] == pytest.approx(
        (retrieval["metrics"]["image_retrieval_recall@1"] + retrieval["metrics"]["text_retrieval_recall@1"]) / 2)

    groups = written["groups"]
    assert list(groups) == [*GROUPS, AVERAGE]
    assert groups["ImageNet"]["value"] == concepts["main_metric"]
    assert groups["Retrieval"]["value"] == retrieval["main_metric"]
    assert groups["VTAB"]["value"] is None and groups["ImageNet dist. shifts"]["value"] is None  # NaN as null
    assert groups[AVERAGE]["value"] == pytest.approx((concepts["main_metric"] + retrieval["main_metric"]) / 2)
    assert math.isnan(result["groups"]["VTAB"]["value"])


def test_failed_evaluation_leaves_no_output(demo_sets, tiny_checkpoint, tmp_path):
    out = tmp_path / "benchmark.json"
    tasks = demo_task_list(demo_sets) + [{"name": "gone", "dataset": "wds/gone", "root": str(tmp_path / "gone"),
                                          "task": "zeroshot_classification", "group": "VTAB"}]
    with pytest.raises(FileNotFoundError, match="gone"):
        evaluate_model({"name": "tiny", "arch": "tiny-rn", "checkpoint": tiny_checkpoint}, tasks, str(out), 16, "cpu")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# An oracle whose image and text embeddings agree perfectly


def test_perfect_embeddings_score_one(oracle_sets):
    cls, ret = oracle_sets
    tasks = [{"name": "colours", "dataset": "wds/colours", "root": cls, "task": "zeroshot_classification",
              "group": "ImageNet"},
             {"name": "pairs", "dataset": "wds/pairs", "root": ret, "task": "zeroshot_retrieval",
              "group": "Retrieval", "recall_k": [1]}]
    out = evaluate_tasks(ColourOracle(), transforms.ToTensor(), colour_tokenizer, tasks, batch_size=3, device="cpu")
    colours, pairs = out["tasks"]["colours"], out["tasks"]["pairs"]
    assert colours["metrics"]["acc1"] == 1.0 and colours["metrics"]["mean_per_class_recall"] == 1.0
    assert math.isnan(colours["metrics"]["acc5"])  # clip-benchmark's acc5 needs at least 5 classes
    assert pairs["metrics"] == {"image_retrieval_recall@1": 1.0, "text_retrieval_recall@1": 1.0}
    assert colours["n_images"] == 8 and pairs["main_metric"] == 1.0
    assert out["groups"][AVERAGE] == {"value": 1.0, "n_tasks": 2, "n_expected": 2, "tasks": ["colours", "pairs"]}


def test_an_empty_set_is_an_error_naming_it(tmp_path):
    root = write_wds(tmp_path / "empty", "classification", [])
    task = {"name": "empty", "dataset": "wds/empty", "root": root, "task": "zeroshot_classification"}
    with pytest.raises(ValueError, match="no samples read"):
        evaluate_tasks(ColourOracle(), transforms.ToTensor(), colour_tokenizer, [task], 4, "cpu")


# ----------------------------------------------------------------------------------------------
# DataComp's task list and groups


def test_datacomp_task_list_matches_datacomp():
    names = [t["name"] for t in DATACOMP_TASKS]
    assert len(names) == len(set(names)) == 38
    by_group = {g: [t["name"] for t in DATACOMP_TASKS if t["group"] == g] for g in GROUPS}
    assert by_group["ImageNet"] == ["imagenet1k"]
    assert sorted(by_group["ImageNet dist. shifts"]) == sorted(
        ["imagenet_sketch", "imagenetv2", "imagenet-a", "imagenet-o", "imagenet-r", "objectnet"])
    assert len(by_group["VTAB"]) == 13 and "sun397" in by_group["VTAB"]
    assert len(by_group["Retrieval"]) == 3 and "misc/winogavil" in by_group["Retrieval"]
    unsupported = {t["name"] for t in DATACOMP_TASKS if t["task"] is None}
    assert unsupported == {"misc/winogavil", "wilds/iwildcam", "wilds/fmow", "fairness/dollar_street",
                           "fairness/geode"}
    dirs = {t["name"]: t["dir"] for t in DATACOMP_TASKS}
    assert dirs["vtab/cifar100"] == "wds_vtab-cifar100_test" and dirs["retrieval/flickr30k"] == "wds_flickr30k"


def test_datacomp_with_one_set_present_reports_the_rest_as_missing(oracle_sets, tmp_path):
    cls, _ = oracle_sets
    tasks = datacomp_tasks(str(tmp_path / "absent"), {"imagenet1k": cls})
    out = evaluate_tasks(ColourOracle(), transforms.ToTensor(), colour_tokenizer, tasks, 4, "cpu")
    status = {n: r["status"] for n, r in out["tasks"].items()}
    assert status["imagenet1k"] == "ok" and status["vtab/cifar100"] == "missing"
    assert status["misc/winogavil"] == "unsupported"
    groups = out["groups"]
    assert groups["ImageNet"]["value"] == 1.0
    for g in ("ImageNet dist. shifts", "VTAB", "Retrieval"):
        assert math.isnan(groups[g]["value"]) and groups[g]["n_tasks"] == 0
    assert (groups["VTAB"]["n_expected"], groups["Retrieval"]["n_expected"]) == (13, 3)
    assert groups[AVERAGE] == {"value": 1.0, "n_tasks": 1, "n_expected": 38, "tasks": [t["name"] for t in tasks]}

    only_imagenet = datacomp_tasks(None, {"imagenet1k": cls})
    out = evaluate_tasks(ColourOracle(), transforms.ToTensor(), colour_tokenizer, only_imagenet, 4, "cpu")
    assert out["tasks"]["imagenetv2"]["status"] == "missing"
    assert out["tasks"]["imagenetv2"]["note"] == "no root configured"


def test_aggregate_groups_on_hand_values():
    results = {"in": 0.5, "sketch": 0.2, "v2": None, "flickr": 0.3, "coco": 0.1, "wino": float("nan"), "mnist": 0.9}
    groups = {"in": "ImageNet", "sketch": "ImageNet dist. shifts", "v2": "ImageNet dist. shifts",
              "flickr": "Retrieval", "coco": "Retrieval", "wino": "Retrieval", "mnist": None}
    out = aggregate_groups(results, groups)
    assert out["ImageNet"]["value"] == 0.5
    assert out["ImageNet dist. shifts"]["value"] == 0.2 and out["ImageNet dist. shifts"]["n_tasks"] == 1
    assert out["Retrieval"]["value"] == pytest.approx(0.2) and out["Retrieval"]["n_expected"] == 3
    assert math.isnan(out["VTAB"]["value"]) and out["VTAB"]["n_expected"] == 0
    assert out[AVERAGE]["value"] == pytest.approx((0.5 + 0.2 + 0.3 + 0.1 + 0.9) / 5)
    assert (out[AVERAGE]["n_tasks"], out[AVERAGE]["n_expected"]) == (5, 7)

    strict = aggregate_groups(results, groups, require_complete=True)
    assert strict["ImageNet"]["value"] == 0.5
    assert math.isnan(strict["Retrieval"]["value"]) and math.isnan(strict[AVERAGE]["value"])
    with pytest.raises(ValueError, match="unknown groups"):
        aggregate_groups({"x": 1.0}, {"x": "Imagenet"})


def test_main_metric_of_retrieval_is_the_mean_of_both_recalls_at_1():
    metrics = {"image_retrieval_recall@1": 0.2, "text_retrieval_recall@1": 0.4, "image_retrieval_recall@5": 0.9}
    assert main_metric_value(metrics, "mean_recall@1") == pytest.approx(0.3)
    assert main_metric_value({"acc1": 0.7, "mean_per_class_recall": 0.6}, "mean_per_class_recall") == 0.6
    assert math.isnan(main_metric_value({"acc1": 0.7}, "F1-macro_all"))
    assert math.isnan(main_metric_value({}, "mean_recall@1"))


# ----------------------------------------------------------------------------------------------
# Task lists from the workflow config


def test_tasks_for_picks_demo_sets_datacomp_or_an_explicit_list(tmp_path):
    config = {"datasets": {"demo": {"generator": {}}, "laion": {"shards": "/data/{0..9}.tar"}}, "evaluate": {}}
    demo = tasks_for(config, "demo")
    assert [(t["name"], t["group"], t["task"]) for t in demo] == [
        ("concepts", "ImageNet", "zeroshot_classification"), ("retrieval", "Retrieval", "zeroshot_retrieval")]
    assert workflow_inputs(demo) == ["results/demo/eval/concepts", "results/demo/eval/retrieval"]

    with pytest.raises(ValueError, match="datacomp_root"):
        tasks_for(config, "laion")
    config["evaluate"] = {"datacomp_root": "/evalsets"}
    laion = tasks_for(config, "laion")
    assert len(laion) == 38 and workflow_inputs(laion) == []
    assert next(t for t in laion if t["name"] == "imagenet1k")["root"] == "/evalsets/wds_imagenet1k_test"
    with pytest.raises(ValueError, match="not generated"):
        tasks_for({**config, "evaluate": {"suite": "demo"}}, "laion")

    explicit = [{"name": "mine", "dataset": "wds/mine", "root": "/x", "task": "zeroshot_retrieval", "group": "Retrieval"}]
    config["evaluate"] = {"tasks": explicit}
    assert tasks_for(config, "demo")[0]["main_metric"] == "mean_recall@1"
    with pytest.raises(ValueError, match="duplicate"):
        tasks_for({**config, "evaluate": {"tasks": explicit * 2}}, "demo")


@pytest.mark.parametrize("bad, message", [
    ({"name": "a", "dataset": "wds/a", "root": "/a", "task": "zeroshot_classification", "colour": 1}, "unknown keys"),
    ({"name": "a", "dataset": "cifar10", "root": "/a", "task": "zeroshot_classification"}, "not a local webdataset"),
    ({"name": "a", "dataset": "wds/a", "root": "/a", "task": "linear_probe"}, "task must be"),
    ({"name": "a", "dataset": "wds/a", "root": "/a", "task": "zeroshot_classification", "group": "IN"}, "group"),
    ({"name": "a", "dataset": "wds/a", "task": "zeroshot_classification"}, "no root"),
])
def test_malformed_tasks_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        normalise_task(bad)


def test_parsing_the_workflow_does_not_import_torch():
    """Every snakemake start (and every Slurm job) parses the Snakefile: the modules the rules
    import at parse time must not pull in torch (~3 s and ~650 MB each time)."""
    rules = (Path(__file__).resolve().parents[1] / "rules").glob("*.smk")
    modules = sorted({m for path in rules for m in re.findall(r"^\s*from (parrotscope\.\w+) import",
                                                                path.read_text(), re.M)})
    assert "parrotscope.evaluate" in modules
    code = f"import sys; import {', '.join(modules)}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", modules
