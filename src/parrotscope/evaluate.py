"""Stage ``evaluate``: zero-shot benchmark of a trained CLIP, with clip-benchmark, DataComp-style.

The paper (Sec. 6.1, Tables 3-4, 10, 12) reports each CLIP on the **DataComp benchmark**: 38
zero-shot classification and retrieval tasks, summarised as ImageNet (IN), ImageNet dist. shifts,
VTAB, Retrieval (Ret.) and the average over all 38 tasks. This module runs those tasks, or the
demo's held-out stand-ins, and writes one JSON per model.

How clip-benchmark is used
    Through its Python API, with the model object this workflow loads, exactly as DataComp's own
    evaluation code does (``eval_utils/wds_eval.py`` and ``retr_eval.py`` in mlfoundations/datacomp):
    ``clip_benchmark.datasets.builder.build_dataset`` reads the evaluation set (``wds/NAME`` in
    clip-benchmark's local webdataset layout), a ``DataLoader(dataset.batched(B), batch_size=None)``
    feeds it as in clip-benchmark's CLI, and ``clip_benchmark.metrics.zeroshot_classification.evaluate``
    or ``zeroshot_retrieval.evaluate`` computes the metrics. Nothing here computes a metric itself,
    except the mean of two recalls that DataComp defines as the retrieval main metric.

    Not the CLI, because its loader (``clip_benchmark/models/open_clip.py``) only calls
    ``open_clip.create_model_and_transforms(model_name, pretrained=...)``: the packaged tiny archs
    are not OpenCLIP names (they would need a ``local-dir:`` written for the call), and OpenAI
    weights from a local file would silently lose QuickGELU and their preprocessing settings.
    ``parrotscope.score.load_scorer`` handles both, so the CLI's and the workflow's models could
    differ. The CLI also picks CUDA by itself and runs amp (bf16 autocast on a CPU).

Main metric per task (DataComp's ``tasklist.yml`` and ``evaluate.py``)
    classification: ``acc1``, except ``mean_per_class_recall`` for Caltech-101, FGVC Aircraft,
    Flowers-102 and Oxford-IIIT Pet; retrieval: ``mean_recall@1`` = mean of clip-benchmark's
    ``image_retrieval_recall@1`` and ``text_retrieval_recall@1`` (``retr_eval.py``), with recall at
    1, 5 and 10 recorded.

Groups (DataComp's ``aggregate_scores.py``)
    ImageNet = ImageNet 1k; ImageNet dist. shifts = ImageNet Sketch, v2, -A, -O, -R, ObjectNet;
    VTAB = 13 tasks (Caltech-101, CIFAR-100, CLEVR Counts and Distance, DTD, EuroSAT, KITTI,
    Flowers-102, Pets, PCam, RESISC45, SVHN, SUN397); Retrieval = Flickr30k, MSCOCO, WinoGAViL;
    Average = all 38 tasks (the 40 of ``tasklist.yml`` less FairFace and UTKFace, which have no
    main metric). 5 of the 38 have a main metric clip-benchmark does not compute (WinoGAViL's
    Jaccard score, iWildCam's macro F1, FMoW's worst-region and GeoDE's / Dollar Street's
    worst-group accuracies): they are listed, reported as NaN and counted as missing, never
    replaced by another metric. A group is NaN when none of its tasks has a value; a partial
    group is the mean of the tasks it has, with the counts beside it.

The embedded default
    The demo's two held-out, text-free sets (``parrotscope.demo.write_eval_set``): ``concepts``
    (zero-shot concept classification) stands in the ImageNet column, ``retrieval`` (image-caption
    retrieval) in the Retrieval column; the other two groups are NaN and the Average is over those
    two tasks only.

Output JSON::

    {"model": {model spec}, "device", "batch_size", "amp", "clip_benchmark_version", "seconds",
     "tasks": {NAME: {"dataset", "root", "task", "group", "status": "ok" | "missing" | "unsupported",
                      "main_metric_name", "main_metric", "metrics": {clip-benchmark's metrics},
                      "n_images", "n_texts", "seconds", "note"}},
     "groups": {"ImageNet" | "ImageNet dist. shifts" | "VTAB" | "Retrieval" | "Average":
                {"value", "n_tasks", "n_expected", "tasks"}}}

NaN is written as ``null`` (strict JSON, as the other stages write it).
"""

from __future__ import annotations

import logging
import math
import os
import time
from importlib.metadata import version

from .devices import resolve_device, set_torch_threads
from .io import write_json

log = logging.getLogger(__name__)

CLASSIFICATION = "zeroshot_classification"
RETRIEVAL = "zeroshot_retrieval"
TASK_TYPES = (CLASSIFICATION, RETRIEVAL)

GROUPS = ("ImageNet", "ImageNet dist. shifts", "VTAB", "Retrieval")
AVERAGE = "Average"
MEAN_RECALL_AT_1 = "mean_recall@1"
DEFAULT_RECALL_K = (1, 5, 10)  # DataComp's retr_eval.py
DEFAULT_MAIN_METRIC = {CLASSIFICATION: "acc1", RETRIEVAL: MEAN_RECALL_AT_1}

TASK_KEYS = ("name", "dataset", "root", "task", "group", "main_metric", "recall_k", "required",
             "split", "note")

_IN, _SHIFT, _VTAB, _RET = GROUPS
_MPCR = "mean_per_class_recall"
_UNSUPPORTED = "main metric {metric} is not computed by clip-benchmark"

# DataComp's 38 scored tasks, in tasklist.yml order: (DataComp key, clip-benchmark dataset, task,
# group, main metric). task None: clip-benchmark has no evaluator for the main metric.
_DATACOMP_TABLE = (
    ("vtab/caltech101", "wds/vtab/caltech101", CLASSIFICATION, _VTAB, _MPCR),
    ("cifar10", "wds/cifar10", CLASSIFICATION, None, "acc1"),
    ("vtab/cifar100", "wds/vtab/cifar100", CLASSIFICATION, _VTAB, "acc1"),
    ("vtab/clevr_count_all", "wds/vtab/clevr_count_all", CLASSIFICATION, _VTAB, "acc1"),
    ("vtab/clevr_closest_object_distance", "wds/vtab/clevr_closest_object_distance", CLASSIFICATION,
     _VTAB, "acc1"),
    ("country211", "wds/country211", CLASSIFICATION, None, "acc1"),
    ("vtab/dtd", "wds/vtab/dtd", CLASSIFICATION, _VTAB, "acc1"),
    ("vtab/eurosat", "wds/vtab/eurosat", CLASSIFICATION, _VTAB, "acc1"),
    ("fgvc_aircraft", "wds/fgvc_aircraft", CLASSIFICATION, None, _MPCR),
    ("food101", "wds/food101", CLASSIFICATION, None, "acc1"),
    ("gtsrb", "wds/gtsrb", CLASSIFICATION, None, "acc1"),
    ("imagenet1k", "wds/imagenet1k", CLASSIFICATION, _IN, "acc1"),
    ("imagenet_sketch", "wds/imagenet_sketch", CLASSIFICATION, _SHIFT, "acc1"),
    ("imagenetv2", "wds/imagenetv2", CLASSIFICATION, _SHIFT, "acc1"),
    ("imagenet-a", "wds/imagenet-a", CLASSIFICATION, _SHIFT, "acc1"),
    ("imagenet-o", "wds/imagenet-o", CLASSIFICATION, _SHIFT, "acc1"),
    ("imagenet-r", "wds/imagenet-r", CLASSIFICATION, _SHIFT, "acc1"),
    ("vtab/kitti_closest_vehicle_distance", "wds/vtab/kitti_closest_vehicle_distance", CLASSIFICATION,
     _VTAB, "acc1"),
    ("mnist", "wds/mnist", CLASSIFICATION, None, "acc1"),
    ("objectnet", "wds/objectnet", CLASSIFICATION, _SHIFT, "acc1"),
    ("vtab/flowers", "wds/vtab/flowers", CLASSIFICATION, _VTAB, _MPCR),
    ("vtab/pets", "wds/vtab/pets", CLASSIFICATION, _VTAB, _MPCR),
    ("voc2007", "wds/voc2007", CLASSIFICATION, None, "acc1"),
    ("vtab/pcam", "wds/vtab/pcam", CLASSIFICATION, _VTAB, "acc1"),
    ("renderedsst2", "wds/renderedsst2", CLASSIFICATION, None, "acc1"),
    ("vtab/resisc45", "wds/vtab/resisc45", CLASSIFICATION, _VTAB, "acc1"),
    ("cars", "wds/cars", CLASSIFICATION, None, "acc1"),
    ("stl10", "wds/stl10", CLASSIFICATION, None, "acc1"),
    ("sun397", "wds/sun397", CLASSIFICATION, _VTAB, "acc1"),
    ("vtab/svhn", "wds/vtab/svhn", CLASSIFICATION, _VTAB, "acc1"),
    # DataComp reads these two from Hugging Face (nlphuji/flickr_1k_test_image_text_retrieval,
    # mscoco_2014_5k_test_image_text_retrieval): the Karpathy test splits, which clip-benchmark's
    # wds_flickr30k and wds_mscoco_captions test splits also are.
    ("retrieval/flickr30k", "wds/flickr30k", RETRIEVAL, _RET, MEAN_RECALL_AT_1),
    ("retrieval/mscoco_2014_5k_test_image_text_retrieval", "wds/mscoco_captions", RETRIEVAL, _RET,
     MEAN_RECALL_AT_1),
    ("misc/winogavil", "wds/winogavil", None, _RET, "jaccard_score_10-12"),
    ("wilds/iwildcam", "wds/wilds/iwildcam", None, None, "F1-macro_all"),
    ("wilds/camelyon17", "wds/wilds/camelyon17", CLASSIFICATION, None, "acc1"),
    ("wilds/fmow", "wds/wilds/fmow", None, None, "acc_worst_region"),
    ("fairness/dollar_street", "wds/dollar_street", None, None, "acc_top5_wg"),
    ("fairness/geode", "wds/geode", None, None, "acc_wg"),
)


def datacomp_dir(name: str, dataset: str) -> str:
    """The folder of a DataComp task under one evaluation root.

    Classification sets: the names DataComp's ``download_evalsets.py`` gives the Hugging Face
    ``djghosh/wds_*_test`` copies (``wds_vtab-cifar100_test``; ``fairness/`` dropped). Retrieval:
    the names of clip-benchmark's own copies (``clip-benchmark/wds_flickr30k``,
    ``wds_mscoco_captions``), since DataComp keeps those in a Hugging Face datasets cache instead.
    """
    if name.startswith("retrieval/"):
        return "wds_" + dataset.removeprefix("wds/")
    return f"wds_{name.removeprefix('fairness/').replace('/', '-')}_test"


def _datacomp_tasks() -> tuple[dict, ...]:
    tasks = []
    for name, dataset, task, group, metric in _DATACOMP_TABLE:
        entry = {"name": name, "dataset": dataset, "task": task, "group": group,
                 "main_metric": metric, "dir": datacomp_dir(name, dataset)}
        if task is None:
            entry["note"] = _UNSUPPORTED.format(metric=metric)
        tasks.append(entry)
    return tuple(tasks)


#: DataComp's 38 tasks with their group and main metric; ``dir`` is the default folder name.
DATACOMP_TASKS = _datacomp_tasks()


# ----------------------------------------------------------------------------------------------
# Task lists


def normalise_task(task: dict) -> dict:
    """A task with every key filled in; unknown keys, task types and groups are refused."""
    unknown = sorted(set(task) - set(TASK_KEYS))
    if unknown:
        raise ValueError(f"evaluation task {task.get('name')!r}: unknown keys {unknown}; known: {list(TASK_KEYS)}")
    for key in ("name", "dataset"):
        if not task.get(key):
            raise ValueError(f"evaluation task {task!r} has no {key!r}")
    kind = task.get("task")
    if kind is not None and kind not in TASK_TYPES:
        raise ValueError(f"evaluation task {task['name']!r}: task must be one of {TASK_TYPES} or null, got {kind!r}")
    if not task["dataset"].startswith("wds/"):
        # The loader is built the wds way (``dataset.batched``); clip-benchmark's other builders also
        # download (torchvision, tfds) or fetch annotation files, which an offline node cannot.
        raise ValueError(f"evaluation task {task['name']!r}: dataset {task['dataset']!r} is not a local "
                         f"webdataset (wds/NAME); convert it with clip_benchmark_export_wds")
    group = task.get("group")
    if group is not None and group not in GROUPS:
        raise ValueError(f"evaluation task {task['name']!r}: group must be one of {GROUPS} or null, got {group!r}")
    out = {
        "name": str(task["name"]),
        "dataset": task["dataset"],
        "root": task.get("root"),
        "task": kind,
        "group": group,
        "main_metric": task.get("main_metric") or DEFAULT_MAIN_METRIC.get(kind),
        "recall_k": [int(k) for k in task.get("recall_k") or DEFAULT_RECALL_K],
        "required": bool(task.get("required", True)),
        "split": task.get("split", "test"),
        "note": task.get("note"),
    }
    if kind is not None and out["required"] and out["root"] is None:
        raise ValueError(f"evaluation task {out['name']!r} has no root")
    return out


def demo_tasks(dataset: str) -> list[dict]:
    """The demo's held-out sets, written by rule ``demo_eval`` under ``results/DATASET/eval/``."""
    return [
        normalise_task({"name": "concepts", "dataset": "wds/concepts",
                        "root": f"results/{dataset}/eval/concepts", "task": CLASSIFICATION, "group": _IN}),
        normalise_task({"name": "retrieval", "dataset": "wds/retrieval",
                        "root": f"results/{dataset}/eval/retrieval", "task": RETRIEVAL, "group": _RET}),
    ]


def datacomp_tasks(root: str | None = None, dataset_roots: dict[str, str] | None = None) -> list[dict]:
    """DataComp's 38 tasks, each under ``root/<dir>`` or at ``dataset_roots[name]``.

    Keys of ``dataset_roots`` are DataComp task names (``imagenet1k``, ``vtab/cifar100``,
    ``retrieval/flickr30k``). Tasks are optional (``required: False``): a cluster may hold only
    some sets, and a missing one is reported as missing (NaN) rather than stopping the others.
    """
    dataset_roots = dict(dataset_roots or {})
    known = {t["name"] for t in DATACOMP_TASKS}
    unknown = sorted(set(dataset_roots) - known)
    if unknown:
        raise ValueError(f"evaluate.dataset_roots: unknown DataComp tasks {unknown}; known: {sorted(known)}")
    if root is None and not dataset_roots:
        raise ValueError("DataComp evaluation needs evaluate.datacomp_root (one folder per task) or "
                         "evaluate.dataset_roots")
    tasks = []
    for entry in DATACOMP_TASKS:
        spec = {k: v for k, v in entry.items() if k != "dir"}
        spec["root"] = dataset_roots.get(entry["name"]) or (os.path.join(root, entry["dir"]) if root else None)
        spec["required"] = False
        tasks.append(normalise_task(spec))
    return tasks


def tasks_for(config: dict, dataset: str) -> list[dict]:
    """The evaluation tasks of models trained on ``dataset``, from the workflow config.

    ``evaluate.tasks`` (an explicit list) wins. Otherwise ``evaluate.suite``: ``demo`` (the
    demo's held-out sets; generated datasets only), ``datacomp`` (the 38 tasks under
    ``evaluate.datacomp_root`` / ``evaluate.dataset_roots``), or ``auto``: demo for a generated
    dataset, DataComp otherwise.
    """
    ev = config.get("evaluate") or {}
    if ev.get("tasks"):
        tasks = [normalise_task(t) for t in ev["tasks"]]
        names = [t["name"] for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"evaluate.tasks: duplicate task names in {names}")
        return tasks
    generated = "generator" in config["datasets"][dataset]
    suite = ev.get("suite", "auto")
    if suite == "auto":
        suite = "demo" if generated else "datacomp"
    if suite == "demo":
        if not generated:
            raise ValueError(f"evaluate.suite is demo, but dataset {dataset!r} is not generated by the "
                             f"demo and has no held-out sets; use datacomp or evaluate.tasks")
        return demo_tasks(dataset)
    if suite == "datacomp":
        return datacomp_tasks(ev.get("datacomp_root"), ev.get("dataset_roots"))
    raise ValueError(f"evaluate.suite must be auto, demo or datacomp, got {suite!r}")


def workflow_inputs(tasks: list[dict]) -> list[str]:
    """Evaluation sets the workflow itself writes (under ``results/``): inputs of the rule."""
    return sorted({t["root"] for t in tasks if t["task"] and str(t["root"]).startswith("results/")})


# ----------------------------------------------------------------------------------------------
# Running clip-benchmark


class _CountingLoader:
    """Passes a DataLoader through, counting images and captions, so a short read is visible.

    Keeps ``.dataset``: clip-benchmark's classification reads ``dataloader.dataset.classes``.
    """

    def __init__(self, loader):
        self.loader = loader
        self.dataset = loader.dataset
        self.n_images = 0
        self.n_texts = 0

    def __iter__(self):
        import torch

        for images, targets in self.loader:
            self.n_images += len(images)
            if not torch.is_tensor(targets):  # retrieval: a list of caption lists per image
                self.n_texts += sum(len(t) for t in targets)
            yield images, targets


def build_loader(task: dict, preprocess, batch_size: int, num_workers: int = 0):
    """clip-benchmark's dataset for ``task`` and the DataLoader its CLI would build for it."""
    import torch
    from clip_benchmark.datasets.builder import build_dataset

    dataset = build_dataset(dataset_name=task["dataset"], root=str(task["root"]), transform=preprocess,
                            split=task["split"], download=False, task=task["task"])
    loader = torch.utils.data.DataLoader(dataset.batched(batch_size), batch_size=None, shuffle=False,
                                         num_workers=num_workers)
    return dataset, loader


def main_metric_value(metrics: dict, name: str | None) -> float:
    """The task's DataComp main metric from clip-benchmark's metrics; NaN where absent."""
    if name == MEAN_RECALL_AT_1:
        keys = ("image_retrieval_recall@1", "text_retrieval_recall@1")
        if all(k in metrics for k in keys):
            return 0.5 * (float(metrics[keys[0]]) + float(metrics[keys[1]]))
        return math.nan
    value = metrics.get(name) if name else None
    return math.nan if value is None else float(value)


def autocast_device(device: str) -> str:
    """The device string clip-benchmark gets: a device *type*, since it calls ``torch.autocast(device)``.

    For ``cuda:N`` the current CUDA device is set to N, so ``.to("cuda")`` lands there.
    """
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is not None:
        torch.cuda.set_device(dev.index)
    return dev.type


def run_task(model, preprocess, tokenizer, task: dict, batch_size: int, device: str,
             num_workers: int = 0, amp: bool = False) -> dict:
    """Evaluate one task with clip-benchmark; the record written under ``tasks.NAME``."""
    from clip_benchmark.metrics import zeroshot_classification, zeroshot_retrieval

    record = {k: task[k] for k in ("dataset", "root", "task", "group")}
    record.update(main_metric_name=task["main_metric"], main_metric=math.nan, metrics={},
                  n_images=0, n_texts=0, seconds=0.0, note=task["note"])
    if task["task"] is None:
        return dict(record, status="unsupported")
    root = task["root"]
    if root is None or ("://" not in str(root) and not os.path.isdir(root)):
        why = "no root configured" if root is None else f"{root} not found"
        if task["required"]:
            raise FileNotFoundError(f"evaluation task {task['name']!r}: {why}")
        log.warning("evaluation task %s: %s, reported as missing", task["name"], why)
        return dict(record, status="missing", note=why)

    start = time.monotonic()
    dataset, loader = build_loader(task, preprocess, batch_size, num_workers)
    counted = _CountingLoader(loader)
    cb_device = autocast_device(device)
    try:
        if task["task"] == CLASSIFICATION:
            metrics = zeroshot_classification.evaluate(
                model, counted, tokenizer, dataset.classes, dataset.templates, device=cb_device, amp=amp)
        else:
            metrics = zeroshot_retrieval.evaluate(
                model, counted, tokenizer, device=cb_device, amp=amp, recall_k_list=task["recall_k"])
    except (RuntimeError, ValueError, IndexError) as exc:
        if counted.n_images == 0:  # clip-benchmark fails on empty input with an unrelated message
            raise ValueError(f"evaluation task {task['name']!r}: no samples read from {task['root']} "
                             f"(split {task['split']!r})") from exc
        raise
    metrics = {k: float(v) for k, v in metrics.items()}
    record.update(status="ok", metrics=metrics, main_metric=main_metric_value(metrics, task["main_metric"]),
                  n_images=counted.n_images, n_texts=counted.n_texts, seconds=time.monotonic() - start)
    log.info("%s: %s = %.4f (%d images, %.1f s)", task["name"], task["main_metric"], record["main_metric"],
             counted.n_images, record["seconds"])
    return record


# ----------------------------------------------------------------------------------------------
# Aggregation and the stage's entry point


def aggregate_groups(results: dict[str, float | None], groups: dict[str, str | None],
                     require_complete: bool = False) -> dict[str, dict]:
    """DataComp's group scores: the mean main metric of each group's tasks, and their Average.

    ``results``: task -> main metric (None or NaN when missing); ``groups``: task -> group (or
    None for tasks only in the Average). Every task named in ``groups`` counts as expected; a
    group with no value at all is NaN, and so is a partial one with ``require_complete``. Each
    group reports ``value``, ``n_tasks`` (with a value), ``n_expected`` and its ``tasks``.
    """
    unknown = sorted({g for g in groups.values() if g is not None} - set(GROUPS))
    if unknown:
        raise ValueError(f"unknown groups {unknown}; DataComp groups: {GROUPS}")
    members = {g: [t for t, tg in groups.items() if tg == g] for g in GROUPS}
    members[AVERAGE] = list(groups)
    out = {}
    for group, tasks in members.items():
        values = [float(results[t]) for t in tasks if _is_number(results.get(t))]
        complete = len(values) == len(tasks)
        value = (sum(values) / len(values)) if values and (complete or not require_complete) else math.nan
        out[group] = {"value": value, "n_tasks": len(values), "n_expected": len(tasks), "tasks": tasks}
    return out


def _is_number(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def _strict(obj):
    """NaN and infinities as None, recursively: strict JSON, as the other stages write."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    return obj


def evaluate_tasks(model, preprocess, tokenizer, tasks: list[dict], batch_size: int, device: str,
                   num_workers: int = 0, amp: bool = False) -> dict:
    """Run every task on a loaded model; ``{"tasks": {NAME: record}, "groups": {...}}``."""
    tasks = [normalise_task(t) for t in tasks]
    names = [t["name"] for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate evaluation task names in {names}")
    records = {t["name"]: run_task(model, preprocess, tokenizer, t, batch_size, device, num_workers, amp)
               for t in tasks}
    groups = aggregate_groups({n: r["main_metric"] for n, r in records.items()},
                              {t["name"]: t["group"] for t in tasks})
    return {"tasks": records, "groups": groups}


def evaluate_model(model_spec: dict, tasks: list[dict], out_json: str, batch_size: int, device: str = "auto",
                   num_workers: int = 0, amp: bool = False, threads: int | None = None) -> dict:
    """Load the model of ``model_spec``, evaluate it on ``tasks`` with clip-benchmark, write ``out_json``.

    ``model_spec``: ``{"name", "arch", "checkpoint" | "pretrained"}`` as
    :func:`parrotscope.score.load_scorer` takes it. ``amp`` (autocast) is off by default: on a CPU
    it means bfloat16, and DataComp scores classification in fp32. Returns what is written, with
    NaN where the JSON has null.
    """
    from .score import load_scorer

    set_torch_threads(threads)
    device = resolve_device(device)
    start = time.monotonic()
    scorer = load_scorer(model_spec, device=device)
    result = {
        "model": dict(model_spec),
        "device": device,
        "batch_size": int(batch_size),
        "amp": bool(amp),
        "clip_benchmark_version": version("clip_benchmark"),
    }
    result.update(evaluate_tasks(scorer.model, scorer.preprocess, scorer.tokenizer, tasks, batch_size,
                                 device, num_workers, amp))
    result["seconds"] = time.monotonic() - start
    for group, g in result["groups"].items():
        log.info("%s: %s (%d/%d tasks)", group, g["value"], g["n_tasks"], g["n_expected"])
    write_json(_strict(result), out_json)
    return result
