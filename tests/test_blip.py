"""BLIP for Table 7: the downstream layouts, the metrics by hand, the pre-training losses, a tiny
pre-training / fine-tuning / scoring run, the table, and the workflow's plan."""

import io
import json
import os
import tarfile

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from parrotscope.blip_data import (DEMO_SETS, READING_SETS, TABLE7_COLUMNS, CaptionSet, LayoutError,
                                   configured_spec, demo_spec, read_set, write_demo_set)
from parrotscope.blip_metrics import caption_tokens, cider, normalize_answer, recall_at_1, vqa_accuracy
from parrotscope.blip_model import (DEC, ENC, BlipPretrainer, BlipSize, blip_config, build_tokenizer, captioner,
                                    hard_negatives, lm_labels, load_tokenizer, same_text, tokenize, train_tokenizer,
                                    vqa_model)
from parrotscope.blip_train import evaluate_blip, finetune_blip, most_common_answer, pretrain_blip, shard_pairs
from parrotscope.demo.pool import write_demo_shard
from parrotscope.tables import READING_MARK, build_table7
from workflow import ROOT, planned_jobs, snakemake, tiny_config, write_config

TINY = dict(image_size=32, patch_size=8, hidden_size=32, vision_layers=1, text_layers=1, heads=2,
            intermediate_size=64, embed_dim=16, max_length=16)
HP = dict(epochs=1, batch_size=8, lr=1e-3, weight_decay=0.0, warmup_steps=0)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Every test of this module runs with one torch thread (see conftest)."""


@pytest.fixture(scope="module")
def generator():
    return yaml.safe_load((ROOT / "config.yaml").read_text())["datasets"]["demo"]["generator"]


@pytest.fixture(scope="module")
def sets(generator, tmp_path_factory):
    """Every demo set, 6 training and 4 test images each."""
    root = tmp_path_factory.mktemp("blip-sets")
    specs = {}
    for name in DEMO_SETS:
        write_demo_set(generator, name, 6, 4, str(root / name))
        specs[name] = demo_spec(root / name)
    return specs


@pytest.fixture(scope="module")
def tokenizer_dir(sets, tmp_path_factory):
    out = tmp_path_factory.mktemp("blip-tok") / "tokenizer"
    folders = {n: str(spec["images"]).split("/images", 1)[0] for n, spec in sets.items()}
    build_tokenizer({"vocab_size": 200, "captions": 0}, [], {n: "demo" for n in sets}, folders, 0, str(out))
    return str(out)


def tiny_blip(tok):
    torch.manual_seed(0)
    return BlipPretrainer(blip_config(BlipSize(**TINY), tok), tok.convert_tokens_to_ids(ENC))


# --- layouts -----------------------------------------------------------------------------------


def test_demo_sets_read_back_in_their_layouts(sets):
    layouts = {name: spec["layout"] for name, spec in sets.items()}
    assert layouts == {"coco": "coco_karpathy", "textcaps": "textcaps", "vqav2": "vqav2", "textvqa": "textvqa",
                       "stvqa": "stvqa"}
    for name, spec in sets.items():
        data = read_set(spec)
        if isinstance(data, CaptionSet):
            assert len(data.train) == 6 * 5 and len(data.test) == 4   # five captions per training image
            assert all(len(r["captions"]) == 5 for r in data.test)
        else:
            assert len(data.train) == 6 and len(data.test) == 4
        images = [r["image"] for r in data.test] + [p[0] if isinstance(p, tuple) else p["image"] for p in data.train]
        assert all(os.path.isfile(p) for p in images), name


def test_seeing_sets_ask_about_the_shape_and_reading_sets_about_the_word(sets):
    vqa = read_set(sets["vqav2"])
    assert {r["question"] for r in vqa.train + vqa.test} <= {"what shape is this?", "what color is the shape?"}
    for name in ("textvqa", "stvqa"):
        for r in read_set(sets[name]).test:
            assert "word" in r["question"] or "text" in r["question"]
    textcaps = read_set(sets["textcaps"])
    for r in textcaps.test:  # every reference holds the image's word: the answer to its VQA twin's question
        words = [set(c.split()) for c in r["captions"]]
        assert set.intersection(*words), r["captions"]
    coco = read_set(sets["coco"])
    assert not any(w in c for w in ("word", "text", "says") for r in coco.test for c in r["captions"])
    assert set(READING_SETS) == {"textcaps", "textvqa", "stvqa"}


def test_real_layouts_written_by_hand(tmp_path):
    (tmp_path / "val2014").mkdir()
    questions = {"data_subtype": "val2014", "questions": [{"image_id": 42, "question": "what is it?", "question_id": 7}]}
    annotations = {"annotations": [{"question_id": 7, "answers": [{"answer": "cat"}] * 10}]}
    (tmp_path / "q.json").write_text(json.dumps(questions))
    (tmp_path / "a.json").write_text(json.dumps(annotations))
    spec = {"layout": "vqav2", "images": str(tmp_path), "train": {"questions": str(tmp_path / "q.json"),
                                                                 "annotations": str(tmp_path / "a.json")}}
    spec["test"] = spec["train"]
    (r,) = read_set(configured_spec(spec, None)).test
    assert r["image"] == str(tmp_path / "val2014" / "COCO_val2014_000000000042.jpg") and r["answers"] == ["cat"] * 10
    textcaps = {"data": [{"image_id": "ab", "image_path": "train/ab.jpg", "caption_str": "x", "reference_strs": ["x", "y"]},
                         {"image_id": "ab", "image_path": "train/ab.jpg", "caption_str": "y", "reference_strs": ["x", "y"]}]}
    (tmp_path / "tc.json").write_text(json.dumps(textcaps))
    data = read_set({"layout": "textcaps", "images": str(tmp_path), "train": str(tmp_path / "tc.json"),
                     "test": str(tmp_path / "tc.json")})
    assert len(data.train) == 2 and len(data.test) == 1 and data.test[0]["captions"] == ["x", "y"]


def test_malformed_annotations_are_named(tmp_path):
    (tmp_path / "bad.json").write_text('{"data": [{"question": "q"}]}')
    spec = {"layout": "textvqa", "images": str(tmp_path), "train": str(tmp_path / "bad.json"),
            "test": str(tmp_path / "bad.json")}
    with pytest.raises(LayoutError, match="image_id"):
        read_set(spec)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(LayoutError, match="broken.json"):
        read_set({**spec, "train": str(tmp_path / "broken.json")})
    with pytest.raises(LayoutError, match="unknown layout"):
        read_set({**spec, "layout": "gqa"})
    with pytest.raises(LayoutError, match="needs"):
        configured_spec({"layout": "textvqa"}, None)


# --- metrics by hand ---------------------------------------------------------------------------


def test_cider_by_hand():
    # Candidates equal to every reference, in vocabularies the two images do not share: every
    # n-gram's tf-idf vectors are equal, the length penalty is 1, so each n scores 10 (CIDEr-D's
    # scale), x100 as papers print it.
    refs = {"a": ["red circle on blue sky"] * 2, "b": ["green square near yellow sun"] * 2}
    score, per = cider(refs, {"a": "red circle on blue sky", "b": "green square near yellow sun"})
    assert score == pytest.approx(1000.0) and per == pytest.approx({"a": 1000.0, "b": 1000.0})
    # No shared n-gram: 0.
    score, per = cider(refs, {"a": "green square near yellow sun", "b": "red circle on blue sky"})
    assert score == pytest.approx(0.0)
    assert caption_tokens("A Sign, that says: SALE!") == "a sign that says sale"


def test_vqa_accuracy_by_hand():
    answers = ["two"] * 3 + ["three"] * 7
    # "2" matches the three "two"s: leaving one of them out leaves 2 matches (2/3), else 3 (1).
    assert vqa_accuracy("2", answers) == pytest.approx((3 * 2 / 3 + 7 * 1) / 10)
    assert vqa_accuracy("Three.", answers) == pytest.approx(1.0)
    assert vqa_accuracy("one", answers) == 0.0
    assert vqa_accuracy("a cat", ["cat"]) == 1.0          # a single answer (ST-VQA's) is an exact match
    assert normalize_answer("The  Two Dogs!") == "2 dogs"
    assert most_common_answer(["b", "a", "a", "b", "c"]) == "b"  # a tie goes to the first given


def test_recall_at_1_by_hand():
    sim = np.array([[0.9, 0.4, 0.2], [0.3, 0.2, 0.8]])  # image 0 owns text 0, image 1 texts 1 and 2; text 1 misses
    assert recall_at_1(sim, [0, 1, 1]) == (1.0, pytest.approx(2 / 3))
    t2i = np.array([[0.9, 0.1, 0.2], [0.3, 0.5, 0.8]])
    assert recall_at_1(sim, [0, 1, 1], t2i)[1] == 1.0


# --- losses ------------------------------------------------------------------------------------


def test_a_hard_negative_is_harder_than_a_random_one():
    gen = torch.Generator().manual_seed(0)
    n = 8
    sim = torch.randn(n, n, generator=gen)
    sim[torch.arange(n), (torch.arange(n) + 1) % n] += 4.0  # each row has one confusable column
    same = torch.eye(n, dtype=torch.bool)
    drawn = torch.stack([hard_negatives(sim, same, gen) for _ in range(200)])
    assert not (drawn == torch.arange(n)).any()                       # never the positive
    hard = sim.gather(1, drawn.t()).mean()
    off = sim.masked_select(~same).mean()                              # a uniformly random negative
    assert hard > off + 2.0
    assert ((drawn == (torch.arange(n) + 1) % n).float().mean() > 0.7)


def test_identical_captions_are_never_each_others_negative():
    ids = torch.tensor([[2, 5, 3], [2, 5, 3], [2, 6, 3]])
    same = same_text(ids)
    assert same.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    drawn = torch.stack([hard_negatives(torch.zeros(3, 3), same) for _ in range(50)])
    assert set(drawn[:, 0].tolist()) == {2} and set(drawn[:, 2].tolist()) <= {0, 1}


def test_the_losses_fall_on_a_batch_they_overfit():
    tok = train_tokenizer(["a red circle", "a blue square", "sale", "open now"] * 4, 100)
    net = tiny_blip(tok)
    captions = ["a red circle", "a blue square", "sale", "open now"]
    px = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    text, dec = tokenize(tok, captions, 16), tokenize(tok, captions, 16, DEC)
    assert (dec["input_ids"][:, 0] == tok.bos_token_id).all()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    history = []
    for _ in range(40):
        out = net(px, text["input_ids"], text["attention_mask"], dec["input_ids"], lm_labels(tok, dec["input_ids"]))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in out.items()})
    assert history[-1]["lm"] < 0.5 * history[0]["lm"]
    assert history[-1]["itc"] < history[0]["itc"]
    # The downstream models carry the pre-trained weights by name.
    cap = captioner(net)
    for name, p in net.text_decoder.state_dict().items():
        assert torch.equal(cap.text_decoder.state_dict()[name], p)
    vqa = vqa_model(net)
    assert torch.equal(vqa.text_encoder.embeddings.word_embeddings.weight,
                       net.retrieval.text_encoder.embeddings.word_embeddings.weight)


def test_tokenizer_has_blips_tokens_and_round_trips(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    assert tok.bos_token == DEC and ENC in tok.get_vocab()
    ids = tokenize(tok, ["what word is written?"], 16, ENC)["input_ids"][0]
    assert ids[0] == tok.convert_tokens_to_ids(ENC)
    assert tok.decode(ids, skip_special_tokens=True) == "what word is written?"


# --- a tiny run --------------------------------------------------------------------------------


def _bad_shard(path, good_shard):
    """The good shard's samples plus one with a garbled image and one with an empty caption."""
    with tarfile.open(good_shard) as src, tarfile.open(path, "w") as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m))
        for name, data in (("bad1.jpg", b"not a jpeg"), ("bad1.txt", b"a caption"),
                           ("bad2.jpg", src.extractfile(src.getmembers()[1]).read()), ("bad2.txt", b"  ")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))


def test_tiny_pretrain_finetune_and_score(generator, sets, tokenizer_dir, tmp_path):
    good = tmp_path / "good.tar"
    write_demo_shard({**generator, "samples_per_shard": 12}, 0, str(good))
    shard = tmp_path / "shard.tar"
    _bad_shard(shard, good)
    from collections import Counter
    counts = Counter()
    assert len(list(shard_pairs([str(shard)], counts))) == 12
    assert counts == {"read": 14, "used": 12, "skipped: undecodable image": 1, "skipped: empty caption": 1}

    pre = pretrain_blip([str(shard)], 14, tokenizer_dir, TINY, {**HP, "epochs": 2}, 0, str(tmp_path / "pre.pt"),
                        str(tmp_path / "pre.json"))
    # Two passes over 14 samples: every read sample is used or skipped with its reason, each pass.
    assert pre["steps"] == 4 and pre["passes"] == 2
    assert pre["counts"] == {"read": 28, "used": 24, "skipped: undecodable image": 2, "skipped: empty caption": 2}
    assert json.loads((tmp_path / "pre.json").read_text())["steps"] == 4
    for task, name in {(t, s) for _, t, s, _ in TABLE7_COLUMNS}:
        out = tmp_path / f"{task}_{name}"
        ft = finetune_blip(task, sets[name], str(tmp_path / "pre.pt"), tokenizer_dir, HP, 0, str(out / "model.pt"),
                           str(out / "train.json"))
        assert ft["steps"] >= 1 and np.isfinite(ft["last_loss"])
        metrics = evaluate_blip(sets[name], str(out / "model.pt"), tokenizer_dir,
                                {"num_beams": 2, "max_new_tokens": 5, "rerank_k": 2}, str(out / "eval.json"),
                                str(out / "eval.parquet"))
        table = pd.read_parquet(out / "eval.parquet")
        assert len(table) == 4 and metrics["task"] == task
        if task == "vqa":
            assert metrics["accuracy"] == pytest.approx(100 * table["accuracy"].mean())
        elif task == "caption":
            assert 0 <= metrics["cider"] and metrics["n_images"] == 4
        else:
            assert {"i2t_r1", "t2i_r1", "i2t_r1_itc", "t2i_r1_itc"} <= set(metrics)
            assert metrics["i2t_r1"] == pytest.approx(100 * table["hit"].mean())
    with pytest.raises(ValueError, match="captioning layout"):
        finetune_blip("caption", sets["vqav2"], str(tmp_path / "pre.pt"), tokenizer_dir, HP, 0,
                      str(tmp_path / "x.pt"), str(tmp_path / "x.json"))


def test_pretraining_under_torchrun_splits_the_shards(generator, tokenizer_dir, tmp_path):
    """Two Gloo processes on CPU (what blip.gpus: 2 starts with NCCL on a GPU node): each reads
    its own shard, the counts add up over both, process 0 writes a model that loads."""
    from parrotscope.blip_model import load_pretrainer
    from parrotscope.blip_train import launch_pretrain

    shards = []
    for i in range(2):
        write_demo_shard({**generator, "samples_per_shard": 8}, i, str(tmp_path / f"{i}.tar"))
        shards.append(str(tmp_path / f"{i}.tar"))
    kwargs = dict(shards=shards, n_samples=16, tokenizer_dir=tokenizer_dir, model=TINY, hparams=HP, seed=0,
                  out_model=str(tmp_path / "pre.pt"), out_json=str(tmp_path / "pre.json"), device="cpu", threads=1)
    result = launch_pretrain(kwargs, 2)
    assert result["processes"] == 2 and result["steps"] == 1            # 16 samples, 2 x 8 per step
    assert result["counts"] == {"read": 16, "used": 16}
    load_pretrainer(tmp_path / "pre.pt")
    with pytest.raises(Exception, match="cannot feed 2 processes"):
        launch_pretrain({**kwargs, "shards": shards[:1]}, 2)


# --- the table and the plan --------------------------------------------------------------------


def _entries(values_by_seed):
    entries = []
    for seed, base in values_by_seed.items():
        for subset in ("random", "text_only"):
            for _, task, name, metric in TABLE7_COLUMNS:
                value = base + (10 if subset == "text_only" and name in READING_SETS else 0)
                metrics = {"accuracy": value, "cider": value, "i2t_r1": value, "t2i_r1": value + 1}
                entries.append({"subset": subset, "seed": seed, "task": task, "set": name, "eval": metrics,
                                "train": {"n_samples": 100}})
    return entries


def test_table7_by_hand_and_over_seeds():
    table = build_table7(_entries({0: 50.0}), ["random", "text_only"]).set_index("subset")
    assert table.loc["text_only", "TextVQA" + READING_MARK] == 60.0
    assert table.loc["text_only", "VQAv2"] == 50.0
    assert table.loc["random", "T2I TextCaps" + READING_MARK] == 51.0
    assert list(table.columns[:3]) == ["pre-training samples", "VQAv2", "TextVQA" + READING_MARK]
    two = build_table7(_entries({0: 50.0, 1: 54.0}), ["random", "text_only"]).set_index("subset")
    assert two.loc["random", "VQAv2"] == 52.0 and two.loc["random", "VQAv2 seed std"] == pytest.approx(np.std([50, 54], ddof=1))
    assert (two["seeds"] == 2).all()


def test_table7_plan_on_the_tiny_config(tmp_path):
    write_config(tmp_path, tiny_config())
    jobs = planned_jobs(tmp_path, "results/table7.csv")
    assert jobs["blip_train"] == 3 and jobs["blip_finetune"] == jobs["blip_eval"] == 21
    assert jobs["blip_data"] == 5 and jobs["blip_tokenizer"] == jobs["table7"] == 1
    assert "train" not in jobs           # BLIP needs the subsets' shards, not their CLIPs


def test_demo_sets_on_real_data_fail_only_table7(tmp_path):
    """A config for real shards keeps the default `demo` sets: every other table still plans, and
    asking for Table 7 names the key to change."""
    shard = tmp_path / "real-000.tar"
    shard.write_bytes(b"")
    write_config(tmp_path, tiny_config({"real": {"shards": str(shard), "shards_per_part": 1}}))
    assert planned_jobs(tmp_path, "results/table1.csv")
    proc = snakemake(tmp_path, "-n", "results/table7.csv", check=False)
    assert proc.returncode != 0 and "blip.sets" in proc.stderr + proc.stdout


def test_blip_config_mistakes_stop_the_plan(tmp_path):
    cfg = tiny_config()
    cfg["blip"] = {"subsets": ["nonexistent"]}
    write_config(tmp_path, cfg)
    proc = snakemake(tmp_path, "-n", "results/table7.csv", check=False)
    assert proc.returncode != 0 and "blip.subsets" in proc.stderr + proc.stdout


@pytest.mark.slow
def test_table7_on_the_tiny_default(tiny_default):
    """The rules and scripts end to end on the tiny default's own subsets (one subset, to keep it short)."""
    one = tiny_default / "blip_one_subset.yaml"
    one.write_text("blip:\n  subsets: [text_only]\n")
    # Absolute paths: a relative --configfile is read from the current directory (the repository,
    # whose config.yaml is the embedded default), not from --directory.
    args = ("--configfile", str(tiny_default / "config.yaml"), str(one), "--", "results/table7.csv")
    snakemake(tiny_default, "-c", "2", *args, timeout=1800)
    table = pd.read_csv(tiny_default / "results" / "table7.csv")
    assert table["subset"].tolist() == ["text_only"]
    assert [c for c in table.columns if c.endswith(READING_MARK)] == [
        "TextVQA (reading)", "ST-VQA (reading)", "Cap TextCaps (reading)", "T2I TextCaps (reading)",
        "I2T TextCaps (reading)"]
    runs = tiny_default / "results" / "blip"
    train = json.loads((runs / "models" / "demo" / "text_only" / "seed0" / "train.json").read_text())
    counts = train["counts"]
    assert counts["read"] == counts["used"] + sum(v for k, v in counts.items() if k.startswith("skipped"))
    assert train["n_samples"] == table.loc[0, "pre-training samples"]
    for column, task, name, metric in TABLE7_COLUMNS:
        scores = json.loads((runs / "eval" / "demo" / "text_only" / "seed0" / f"{task}_{name}.json").read_text())
        label = column + (READING_MARK if name in READING_SETS else "")
        assert table.loc[0, label] == pytest.approx(round(scores[metric], 4), abs=1e-9), column
    assert planned_jobs(tiny_default, *args) == {}
    # The shared tiny run is as the other workflow tests expect it: nothing of it was redone.
    assert planned_jobs(tiny_default) == {}
