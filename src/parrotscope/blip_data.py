"""BLIP's downstream sets (Table 7): the standard datasets' layouts, read, and the demo's miniatures.

Layouts (a set is a dict: ``layout``, ``train`` and ``test`` annotation files, ``images`` folder)
    ``coco_karpathy``  BLIP's COCO Karpathy-split files: train ``[{"image", "caption", "image_id"}]``
                       (one entry per caption), test ``[{"image", "caption": [references]}]``;
                       ``image`` relative to ``images``.
    ``textcaps``       TextCaps 0.1: ``{"data": [{"image_id", "image_path", "caption_str",
                       "reference_strs"}]}``; train entries are read per caption (``caption_str``),
                       test (TextCaps' val, whose captions are public) per image (``reference_strs``).
    ``vqav2``          VQAv2: ``train``/``test`` are ``{"questions", "annotations"}`` files:
                       ``{"data_subtype", "questions": [{"image_id", "question", "question_id"}]}``
                       and ``{"annotations": [{"question_id", "answers": [{"answer"}]}]}``; images
                       ``{images}/{data_subtype}/COCO_{data_subtype}_{image_id:012d}.jpg``.
    ``textvqa``        TextVQA 0.5.1: ``{"data": [{"image_id", "question", "question_id",
                       "answers": [10 strings]}]}``; images ``{images}/{image_id}.jpg``.
    ``stvqa``          ST-VQA: ``{"data": [{"file_path", "question", "question_id", "answers"}]}``;
                       images ``{images}/{file_path}``.

Every reader returns the same records (:class:`CaptionSet`, :class:`VqaSet`), so training and
scoring never see a layout.

The demo's miniatures (:func:`write_demo_set`) are drawn by the demo generator from held-out
rng streams, in these layouts. "Seeing" sets show a text-free shape; their captions and questions
are about the shape and its colour. "Reading" sets show one rendered poster word beside the
shape; their captions hold the word and their questions ask for it.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
from PIL import Image

from .demo.captions import RETRIEVAL_TEMPLATE, VISUAL_TEMPLATES, visual_description
from .demo.concepts import Concept
from .demo.config import demo_config
from .demo.fonts import check_fonts
from .demo.samples import EVAL_SEED_OFFSET, make_sample
from .io import atomic_dir

LAYOUTS = ("coco_karpathy", "textcaps", "vqav2", "textvqa", "stvqa")
CAPTION_LAYOUTS = ("coco_karpathy", "textcaps")
#: The demo's sets: name -> (layout, reads). Each set's rng stream is counted from DEMO_STREAM.
DEMO_SETS = {
    "coco": ("coco_karpathy", False),
    "textcaps": ("textcaps", True),
    "vqav2": ("vqav2", False),
    "textvqa": ("textvqa", True),
    "stvqa": ("stvqa", True),
}
# Beyond the pool's shards, the demo's CLIP evaluation sets (EVAL_SEED_OFFSET + 0, 1) and the STR
# crops (stream 100): the BLIP sets' images are drawn from streams EVAL_SEED_OFFSET + 200 + i.
DEMO_STREAM = EVAL_SEED_OFFSET + 200
READING_CAPTIONS = ("a {color} {shape} with the word {word}", "a sign that says {word}",
                    "the word {word} written next to a {shape}", "{word} written beside a {color} {shape}",
                    "a picture with the text {word}")
SEEING_QUESTIONS = (("what shape is this?", "shape"), ("what color is the shape?", "color"))
READING_QUESTIONS = ("what word is written?", "what does the text say?")
N_ANSWERS = 10  # VQAv2 and TextVQA collect ten human answers per question
#: Table 7's columns: (column, task, set, metric). The sets that need reading (the paper greys
#: their columns) are READING_SETS.
TABLE7_COLUMNS = (
    ("VQAv2", "vqa", "vqav2", "accuracy"),
    ("TextVQA", "vqa", "textvqa", "accuracy"),
    ("ST-VQA", "vqa", "stvqa", "accuracy"),
    ("Cap COCO", "caption", "coco", "cider"),
    ("Cap TextCaps", "caption", "textcaps", "cider"),
    ("T2I COCO", "retrieval", "coco", "t2i_r1"),
    ("T2I TextCaps", "retrieval", "textcaps", "t2i_r1"),
    ("I2T COCO", "retrieval", "coco", "i2t_r1"),
    ("I2T TextCaps", "retrieval", "textcaps", "i2t_r1"),
)
READING_SETS = tuple(name for name, (_, reads) in DEMO_SETS.items() if reads)


class LayoutError(ValueError):
    """An annotation file that does not have its layout's fields."""


@dataclass
class CaptionSet:
    """Captioning / retrieval records: ``train`` (image, caption) pairs; ``test`` one entry per
    image with its reference captions."""

    train: list[tuple[str, str]] = field(default_factory=list)
    test: list[dict] = field(default_factory=list)  # {"image_id", "image", "captions"}


@dataclass
class VqaSet:
    """VQA records: ``{"question_id", "image", "question", "answers"}`` per question."""

    train: list[dict] = field(default_factory=list)
    test: list[dict] = field(default_factory=list)


# --- reading the layouts -----------------------------------------------------------------------


def _load(path: str | Path) -> object:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LayoutError(f"cannot read annotation file {path}: {exc}") from exc


def _field(entry: Mapping, name: str, path) -> object:
    if name not in entry:
        raise LayoutError(f"{path}: an entry has no {name!r} (keys {sorted(entry)[:8]})")
    return entry[name]


def _entries(doc: object, path, key: str | None = "data") -> list:
    entries = doc.get(key) if key and isinstance(doc, dict) else doc
    if not isinstance(entries, list):
        raise LayoutError(f"{path}: expected a list{f' under {key!r}' if key else ''}")
    return entries


def read_caption_set(spec: Mapping) -> CaptionSet:
    """A ``coco_karpathy`` or ``textcaps`` set's training pairs and test references."""
    layout, images = spec["layout"], Path(spec["images"])
    out = CaptionSet()
    if layout == "coco_karpathy":
        for e in _entries(_load(spec["train"]), spec["train"], None):
            out.train.append((str(images / _field(e, "image", spec["train"])), str(_field(e, "caption", spec["train"]))))
        for e in _entries(_load(spec["test"]), spec["test"], None):
            refs = _field(e, "caption", spec["test"])
            image = str(_field(e, "image", spec["test"]))
            out.test.append({"image_id": image, "image": str(images / image),
                             "captions": [refs] if isinstance(refs, str) else list(refs)})
    elif layout == "textcaps":
        for e in _entries(_load(spec["train"]), spec["train"]):
            out.train.append((str(images / _field(e, "image_path", spec["train"])),
                              str(_field(e, "caption_str", spec["train"]))))
        seen: dict[str, dict] = {}
        for e in _entries(_load(spec["test"]), spec["test"]):
            image_id = str(_field(e, "image_id", spec["test"]))
            if image_id not in seen:  # TextCaps repeats an image's references on each of its captions
                seen[image_id] = {"image_id": image_id, "image": str(images / _field(e, "image_path", spec["test"])),
                                  "captions": list(_field(e, "reference_strs", spec["test"]))}
        out.test = list(seen.values())
    else:
        raise LayoutError(f"{layout!r} is not a captioning layout; captioning layouts: {CAPTION_LAYOUTS}")
    return out


def _vqav2_split(files: Mapping, images: Path) -> list[dict]:
    questions_doc = _load(files["questions"])
    subtype = str(_field(questions_doc, "data_subtype", files["questions"]))
    answers = {a["question_id"]: [x["answer"] for x in _field(a, "answers", files["annotations"])]
               for a in _entries(_load(files["annotations"]), files["annotations"], "annotations")}
    records = []
    for q in _entries(questions_doc, files["questions"], "questions"):
        qid = _field(q, "question_id", files["questions"])
        if qid not in answers:
            raise LayoutError(f"{files['annotations']}: no answers for question {qid}")
        image = images / subtype / f"COCO_{subtype}_{int(_field(q, 'image_id', files['questions'])):012d}.jpg"
        records.append({"question_id": qid, "image": str(image), "question": str(q["question"]),
                        "answers": answers[qid]})
    return records


def _flat_vqa_split(path, images: Path, layout: str) -> list[dict]:
    records = []
    for e in _entries(_load(path), path):
        image = (images / f"{_field(e, 'image_id', path)}.jpg" if layout == "textvqa"
                 else images / str(_field(e, "file_path", path)))
        records.append({"question_id": _field(e, "question_id", path), "image": str(image),
                        "question": str(_field(e, "question", path)), "answers": list(_field(e, "answers", path))})
    return records


def read_vqa_set(spec: Mapping) -> VqaSet:
    """A ``vqav2``, ``textvqa`` or ``stvqa`` set's questions with their answers."""
    layout, images = spec["layout"], Path(spec["images"])
    if layout == "vqav2":
        return VqaSet(_vqav2_split(spec["train"], images), _vqav2_split(spec["test"], images))
    if layout in ("textvqa", "stvqa"):
        return VqaSet(_flat_vqa_split(spec["train"], images, layout), _flat_vqa_split(spec["test"], images, layout))
    raise LayoutError(f"{layout!r} is not a VQA layout; VQA layouts: vqav2, textvqa, stvqa")


def read_set(spec: Mapping) -> CaptionSet | VqaSet:
    """Any layout's records."""
    if spec.get("layout") not in LAYOUTS:
        raise LayoutError(f"unknown layout {spec.get('layout')!r}; layouts: {LAYOUTS}")
    return read_caption_set(spec) if spec["layout"] in CAPTION_LAYOUTS else read_vqa_set(spec)


def task_of(layout: str) -> str:
    """``caption`` (captioning and retrieval) or ``vqa``."""
    return "caption" if layout in CAPTION_LAYOUTS else "vqa"


def load_image(path: str) -> Image.Image:
    """An annotation's image as RGB."""
    with Image.open(path) as img:
        return img.convert("RGB")


# --- the demo's miniatures ---------------------------------------------------------------------


def _demo_image(cfg: dict, seed: int, stream: int, i: int, reads: bool) -> tuple[bytes, dict]:
    """Image ``i`` of a set and its ground truth: text-free, or with one rendered word."""
    rng = np.random.default_rng([seed, stream, i])
    sample = make_sample(rng, cfg, f"{i:06d}", f"demo://seed{seed}/blip/{stream}/{i}", with_text=reads)
    return sample["jpg"], sample["json"]["truth"]


def _concept(truth: dict) -> Concept:
    """The drawn shape as a :class:`Concept`, from the ground truth the generator records."""
    x0, y0, x1, y1 = truth["shape_box"]
    return Concept(truth["shape"], truth["color"], ((x0 + x1) / 2, (y0 + y1) / 2), x1 - x0, 0.0)


def _captions(rng: np.random.Generator, cfg: dict, truth: dict, n: int, reads: bool) -> list[str]:
    """``n`` distinct reference captions: visual descriptions, or captions holding the rendered word."""
    if reads:
        word = truth["words"][0].lower()
        order = rng.permutation(len(READING_CAPTIONS))[:n]
        return [READING_CAPTIONS[j].format(word=word, color=truth["color"], shape=truth["shape"]) for j in order]
    templates = [RETRIEVAL_TEMPLATE, *VISUAL_TEMPLATES]
    order = rng.permutation(len(templates))[:n]
    return [visual_description(rng, _concept(truth), truth["background"], cfg, templates[j]) for j in order]


def _answers(truth: dict, question: int, reads: bool) -> tuple[str, list[str]]:
    """A question and its ten answers (the annotators agree: the ground truth)."""
    if reads:
        return READING_QUESTIONS[question % len(READING_QUESTIONS)], [truth["words"][0].lower()] * N_ANSWERS
    text, key = SEEING_QUESTIONS[question % len(SEEING_QUESTIONS)]
    return text, [truth[key]] * N_ANSWERS


def write_demo_set(generator: Mapping, name: str, n_train: int, n_test: int, out_dir: str,
                   n_captions: int = 5) -> dict:
    """Write demo set ``name`` (:data:`DEMO_SETS`) in its layout under ``out_dir``: ``images/``, the
    annotation files and ``set.json`` (the set's spec, paths relative to the folder). Built
    beside ``out_dir`` and renamed into place when complete."""
    if name not in DEMO_SETS:
        raise ValueError(f"unknown demo set {name!r}; sets: {list(DEMO_SETS)}")
    layout, reads = DEMO_SETS[name]
    cfg = demo_config(dict(generator))
    if reads:  # one legible word, so that the answer is the word
        cfg = demo_config({**dict(generator), "words_per_image_probs": [1.0]})
    check_fonts(cfg)
    seed, stream = int(cfg["seed"]), DEMO_STREAM + list(DEMO_SETS).index(name)
    with atomic_dir(out_dir) as tmp:
        splits = {}
        for split, n, offset in (("train", n_train, 0), ("test", n_test, n_train)):
            folder = {"vqav2": f"{split}2014", "textvqa": "train_images"}.get(layout, split)
            (tmp / "images" / folder).mkdir(parents=True, exist_ok=True)
            entries = []
            for i in range(offset, offset + n):
                jpg, truth = _demo_image(cfg, seed, stream, i, reads)
                rel = (f"{folder}/COCO_{folder}_{i:012d}.jpg" if layout == "vqav2"
                       else f"{folder}/{i:06d}.jpg")
                (tmp / "images" / rel).write_bytes(jpg)
                entries.append((i, rel, truth))
            splits[split] = _write_annotations(tmp, cfg, layout, split, entries, stream, reads, n_captions)
        # TextVQA keeps train and val images in one folder, named by image_id
        spec = {"layout": layout, "images": "images/train_images" if layout == "textvqa" else "images", **splits}
        (tmp / "set.json").write_text(json.dumps(spec, indent=1))
    return {"name": name, "layout": layout, "reads": reads, "n_train": n_train, "n_test": n_test}


def _write_annotations(folder: Path, cfg: dict, layout: str, split: str, entries: list, stream: int, reads: bool,
                       n_captions: int):
    """One split's annotation file(s) in ``layout``; returns their names (relative to ``folder``)."""
    def rng(i: int) -> np.random.Generator:
        return np.random.default_rng([int(cfg["seed"]), stream, i, 1])

    def dump(doc, name: str) -> str:
        (folder / name).write_text(json.dumps(doc))
        return name

    if layout in CAPTION_LAYOUTS:
        refs = {i: _captions(rng(i), cfg, truth, n_captions, reads) for i, _, truth in entries}
        if layout == "coco_karpathy":
            doc = ([{"image": rel, "caption": c, "image_id": f"demo_{i}"} for i, rel, _ in entries for c in refs[i]]
                   if split == "train" else [{"image": rel, "caption": refs[i]} for i, rel, _ in entries])
            return dump(doc, f"coco_karpathy_{split}.json")
        data = [{"image_id": f"{i:06d}", "image_path": rel, "caption_str": c, "reference_strs": refs[i],
                 "caption_id": i * n_captions + j, "set_name": "train" if split == "train" else "val"}
                for i, rel, _ in entries for j, c in enumerate(refs[i])]
        return dump({"dataset_type": split, "dataset_name": "textcaps", "data": data}, f"TextCaps_0.1_{split}.json")
    qa = []
    for i, rel, truth in entries:
        question, answers = _answers(truth, int(rng(i).integers(1 << 30)), reads)
        qa.append({"question_id": i, "image_id": i, "rel": rel, "question": question, "answers": answers})
    if layout == "vqav2":
        subtype = f"{split}2014"
        questions = {"data_subtype": subtype, "questions": [
            {"image_id": q["image_id"], "question": q["question"], "question_id": q["question_id"]} for q in qa]}
        annotations = {"annotations": [
            {"question_id": q["question_id"], "image_id": q["image_id"],
             "answers": [{"answer": a, "answer_id": j + 1} for j, a in enumerate(q["answers"])],
             "multiple_choice_answer": Counter(q["answers"]).most_common(1)[0][0]} for q in qa]}
        return {"questions": dump(questions, f"v2_OpenEnded_mscoco_{subtype}_questions.json"),
                "annotations": dump(annotations, f"v2_mscoco_{subtype}_annotations.json")}
    if layout == "textvqa":
        data = [{"image_id": Path(q["rel"]).stem, "question": q["question"],
                 "question_id": q["question_id"], "answers": q["answers"], "set_name": split} for q in qa]
        return dump({"dataset_name": "textvqa", "dataset_type": split, "data": data}, f"TextVQA_0.5.1_{split}.json")
    data = [{"file_path": q["rel"], "question": q["question"], "question_id": q["question_id"],
             "answers": q["answers"][:2], "dataset": "demo"} for q in qa]
    return dump({"dataset": "ST-VQA", "data": data}, f"stvqa_{split}_task_1.json")


def resolve_spec(spec: Mapping, folder: str | Path | None = None) -> dict:
    """A set's spec with its paths absolute (relative ones are read from ``folder``)."""
    base = Path(folder) if folder else Path(".")

    def absolute(value):
        if isinstance(value, Mapping):
            return {k: absolute(v) for k, v in value.items()}
        return str(base / value) if not Path(str(value)).is_absolute() else str(value)

    return {k: (v if k == "layout" else absolute(v)) for k, v in spec.items()}


def demo_spec(folder: str | Path) -> dict:
    """The spec of a demo set written by :func:`write_demo_set`."""
    return resolve_spec(json.loads((Path(folder) / "set.json").read_text()), folder)


def configured_spec(setting: str | Mapping, demo_folder: str | None) -> dict:
    """A set as ``blip.sets`` gives it: ``demo`` (the folder the demo wrote) or a layout's files."""
    if setting == "demo":
        if not demo_folder:
            raise LayoutError("a `demo` set needs the folder blip_data wrote")
        return demo_spec(demo_folder)
    missing = [k for k in ("layout", "train", "test", "images") if k not in setting]
    if missing:
        raise LayoutError(f"a configured BLIP set needs {missing}: {dict(setting)}")
    return resolve_spec(setting)


def training_texts(spec: Mapping) -> list[str]:
    """A set's training captions, questions and answers (for a tokenizer's vocabulary)."""
    data = read_set(spec)
    if isinstance(data, CaptionSet):
        return [caption for _, caption in data.train]
    return [t for r in data.train for t in (r["question"], *r["answers"])]


def decode_jpeg(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")
