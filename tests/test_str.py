"""CLIP4STR transfer: permutation masks, decoders, predict-and-refine, STR LMDBs, word accuracy,
the word renderer, demo crops, a tiny training run with evaluation and probe, and the workflow."""

import io
import json
import math

import lmdb
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from parrotscope.str_data import (
    CHARSET_36, LmdbWords, RenderConfig, benchmark_label, bpe_lexicon, charset_label, crops_from_sample,
    demo_word_crops, polygon_crop_box, render_word, skip_reason, synthetic_words, word_accuracy, write_lmdb)
from parrotscope.str_model import (
    CLIP4STR, PermutedDecoder, STRConfig, Tokenizer, UnsupportedCLIP, attention_masks, cloze_mask,
    image_tokens, left_to_right_mask, permutations, text_tokens)
from parrotscope.str_train import (
    evaluate_str, letterbox, param_groups, probe_str, train_str, warmup_cosine)
from parrotscope.tables import build_str_table
from parrotscope.train import build_model
from workflow import planned_jobs, snakemake, tiny_config, write_config

INF = float("-inf")


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Every test of this module runs with one torch thread (see conftest)."""


def tiny_recogniser(arch="tiny-rn", image_size=(32, 128), **kw):
    torch.manual_seed(0)
    clip, _, tokenizer = build_model(arch)
    cfg = STRConfig(image_size=image_size, max_label_length=kw.pop("max_label_length", 6), heads=4, **kw)
    return CLIP4STR(clip, tokenizer, cfg)


# ----------------------------------------------------------------------------------------------
# Permutations and masks


def test_attention_masks_of_a_hand_checked_ordering():
    # Two characters, read second-then-first: [BOS]=0, c1=1, c2=2, [EOS]=3 in the order 0, 2, 1, 3.
    content, query = attention_masks(torch.tensor([0, 2, 1, 3]))
    # Query rows predict c1, c2, [EOS]; columns are the context [BOS], c1, c2.
    # c1 comes after c2: it sees [BOS] and c2. c2 comes first: only [BOS]. [EOS] sees everything.
    assert query.tolist() == [[0, INF, 0],
                              [0, INF, INF],
                              [0, 0, 0]]
    # Context tokens see themselves and what precedes them in the ordering.
    assert content.tolist() == [[0, INF, INF],
                                [0, 0, 0],
                                [0, INF, 0]]


def test_left_to_right_ordering_gives_the_causal_mask():
    _, query = attention_masks(torch.arange(6))
    assert torch.equal(query, left_to_right_mask(5))
    assert left_to_right_mask(3).tolist() == [[0, INF, INF], [0, 0, INF], [0, 0, 0]]


def test_reverse_ordering_predicts_eos_from_bos_alone():
    perms = permutations(3, 6, mirrored=True, rng=np.random.default_rng(0))
    assert perms[1].tolist() == [0, 4, 3, 2, 1]
    _, query = attention_masks(perms[1])
    assert query[-1].tolist() == [0, INF, INF, INF]        # [EOS]: only [BOS]
    assert query[2].tolist() == [0, INF, INF, INF]         # c3 is read first: only [BOS]
    assert query[0].tolist() == [0, INF, 0, 0]             # c1 is read last: all but itself


def test_cloze_mask_hides_only_the_token_being_predicted():
    assert cloze_mask(3).tolist() == [[0, INF, 0], [0, 0, INF], [0, 0, 0]]


@pytest.mark.parametrize("n, k, expected", [(1, 6, 1), (2, 6, 2), (3, 6, 6), (5, 6, 6), (9, 6, 6), (4, 3, 3)])
def test_permutations_are_distinct_mirrored_and_start_left_to_right(n, k, expected):
    perms = permutations(n, k, mirrored=True, rng=np.random.default_rng(1))
    assert perms.shape == (expected, n + 2)
    assert perms[0].tolist() == list(range(n + 2))
    rows = [tuple(p) for p in perms.tolist()]
    assert len(set(rows)) == len(rows)
    for row in rows:
        assert row[0] == 0 and sorted(row) == list(range(n + 2))
    # From the third on, each pair is an ordering of the characters and its reverse.
    for a, b in zip(rows[2::2], rows[3::2]):
        assert a[1:-1] == b[1:-1][::-1] and a[-1] == b[-1] == n + 1


# ----------------------------------------------------------------------------------------------
# Tokens, decoder and features


def test_tokenizer_round_trip_and_charset_reduction():
    tok = Tokenizer(CHARSET_36)
    ids = tok.encode(["Café-7", "ab"])
    assert ids.shape == (2, 7)                                   # "cafe7" + [BOS] + [EOS]
    assert ids[0, 0] == tok.bos and ids[0, 6] == tok.eos and ids[1, 3] == tok.eos and ids[1, 4] == tok.pad
    assert tok.decode(ids[:, 1:]) == ["cafe7", "ab"]
    assert charset_label("Café-7", CHARSET_36) == "cafe7"
    assert charset_label("Café-7", "CaefÉ7") == "Cafe7"            # a cased charset keeps case


def test_decoder_shapes_and_masks_take_effect():
    torch.manual_seed(0)
    dec = PermutedDecoder(width=32, heads=4, mlp_ratio=2, dropout=0.0, depth=1, n_tokens=39, n_classes=37,
                          max_steps=8).eval()
    memory = torch.randn(2, 5, 32)
    context = torch.tensor([[37, 3, 4, 5], [37, 6, 7, 8]])      # [BOS] + three characters
    mask = left_to_right_mask(4)
    out = dec(context, memory, mask, mask)
    assert out.shape == (2, 4, 37)
    one = dec(context[:, :2], memory, mask[1:2, :2], mask[:2, :2], positions=slice(1, 2))
    assert one.shape == (2, 1, 37)
    torch.testing.assert_close(one[:, 0], out[:, 1])             # one query at a time = all at once
    # Changing a context token hidden by the mask leaves the masked outputs unchanged.
    changed = context.clone()
    changed[:, 3] = 20
    out2 = dec(changed, memory, mask, mask)
    torch.testing.assert_close(out2[:, :3], out[:, :3])
    assert not torch.allclose(out2[:, 3], out[:, 3])


@pytest.mark.parametrize("arch, size, tokens", [("tiny-rn", None, 1 + 2 * 2), ("tiny-rn", (32, 128), 1 + 1 * 4),
                                                ("tiny-vit", None, 1 + 8 * 8), ("tiny-vit", (32, 128), 1 + 4 * 16)])
def test_image_tokens_live_in_the_clip_embedding(arch, size, tokens):
    model = tiny_recogniser(arch, size).eval()
    h, w = model.image_size
    x = torch.randn(2, 3, h, w)
    with torch.no_grad():
        feats = image_tokens(model.clip.visual, x)
        assert feats.shape == (2, tokens, 64)
        if size is None:  # the first token is CLIP's own image embedding
            torch.testing.assert_close(feats[:, 0], model.clip.encode_image(x), atol=1e-5, rtol=1e-4)


def test_text_tower_is_partly_frozen_and_image_tower_trainable():
    model = tiny_recogniser()
    assert model.text_frozen == 1                                # half of tiny-rn's 2 text blocks
    assert not model.clip.token_embedding.weight.requires_grad
    assert not any(p.requires_grad for p in model.clip.transformer.resblocks[0].parameters())
    assert all(p.requires_grad for p in model.clip.transformer.resblocks[1].parameters())
    assert all(p.requires_grad for p in model.clip.visual.parameters())


def test_cross_branch_sends_no_gradient_to_the_image_encoder():
    model = tiny_recogniser(dropout=0.0)
    x = torch.randn(2, 3, 32, 128)
    memory = model.encode_image(x)
    ctx = model.tokenizer.encode(["ab", "c"])
    visual = model.visual_decoder(ctx[:, :-1], memory)
    cross = model.cross_decoder(ctx[:, :-1], model.cross_memory(visual, memory))
    cross.sum().backward()
    assert all(p.grad is None for p in model.clip.visual.parameters())
    assert model.clip.transformer.resblocks[1].mlp.c_fc.weight.grad is not None


# ----------------------------------------------------------------------------------------------
# Predict and refine


def test_predict_and_refine_on_a_tiny_model_learns_two_words():
    model = tiny_recogniser(dropout=0.0, max_label_length=4)
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 32, 128, generator=gen)
    labels = ["ab", "cd"]
    opt = torch.optim.AdamW(param_groups(model, 3e-3, 3e-3, 0.0))
    model.train()
    for _ in range(150):  # memorising two words: about 100 steps
        loss, info = model.loss(images, labels, rng)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert info["perms"] == 2                                     # "ab": forward and reverse only
    model.eval()
    out = model.predict(images)
    assert set(out) == {"visual", "visual_ar", "cross_ar", "refined"}
    assert out["visual"] == labels and out["refined"] == labels
    assert all(len(s) <= 4 for v in out.values() for s in v)


# ----------------------------------------------------------------------------------------------
# Labels and accuracy


def test_benchmark_labels_and_word_accuracy_by_hand():
    assert benchmark_label("Café-2!") == "cafe2"
    assert benchmark_label("  ") == ""
    # HELLO = hello; w0rld != world; "Park!" = park; "" != "a"
    assert word_accuracy(["HELLO", "w0rld", "Park!", ""], ["hello", "world", "park", "a"]) == 0.5
    assert word_accuracy(["it's"], ["ITS"]) == 1.0
    assert math.isnan(word_accuracy([], []))
    with pytest.raises(ValueError):
        word_accuracy(["a"], [])
    assert skip_reason("!!", CHARSET_36, 5) == "empty_label"
    assert skip_reason("abcdef", CHARSET_36, 5) == "label_too_long"
    assert skip_reason("Ab-c", CHARSET_36, 3) is None


# ----------------------------------------------------------------------------------------------
# LMDB


def test_lmdb_reader_reads_the_standard_layout_written_by_hand(tmp_path):
    path = tmp_path / "IIIT5k"
    env = lmdb.open(str(path), map_size=1 << 24)
    red = io.BytesIO()
    Image.new("RGB", (40, 12), (200, 0, 0)).save(red, format="PNG")
    with env.begin(write=True) as txn:
        txn.put(b"num-samples", b"2")
        txn.put(b"image-000000001", red.getvalue())
        txn.put(b"label-000000001", "Straße".encode())
        txn.put(b"image-000000002", red.getvalue())
        txn.put(b"label-000000002", b"OPEN")
    env.close()
    words = LmdbWords(path)
    assert len(words) == 2 and words.labels() == ["Straße", "OPEN"]
    image, label = words[1]
    assert label == "OPEN" and image.size == (40, 12) and image.getpixel((0, 0)) == (200, 0, 0)
    with pytest.raises(IndexError):
        words[2]
    with pytest.raises(FileNotFoundError):
        LmdbWords(tmp_path / "missing")


def test_lmdb_writer_round_trip(tmp_path):
    items = [(b"\x89PNG-not-decoded", "a"), (b"xyz", "Zebra 7")]
    assert write_lmdb(iter(items), tmp_path / "set.lmdb") == 2
    env = lmdb.open(str(tmp_path / "set.lmdb"), readonly=True, lock=False)
    with env.begin() as txn:
        assert txn.get(b"num-samples") == b"2"
        assert txn.get(b"image-000000002") == b"xyz" and txn.get(b"label-000000002") == "Zebra 7".encode()
        assert txn.get(b"image-000000000") is None                # one-based, as the benchmarks
    assert not list(tmp_path.glob(".*.tmp"))


# ----------------------------------------------------------------------------------------------
# Word renderer and demo crops


def test_renderer_draws_the_label_it_returns():
    cfg = RenderConfig.from_dict({"rotation_deg": 4})
    lexicon = bpe_lexicon(8, 500)
    assert "the" in lexicon and all(1 <= len(w) <= 8 and w.isalnum() for w in lexicon)
    rng = np.random.default_rng(3)
    for _ in range(20):
        data, label = render_word(rng, cfg, lexicon, 8)
        image = Image.open(io.BytesIO(data))
        assert image.format == "JPEG" and image.mode == "RGB"
        # Crops are tight around the ink: a lone "e" is only x-height tall (about 0.5 x font size).
        assert 0.4 * cfg.font_px[0] <= image.height <= 3 * cfg.font_px[1]
        assert image.width >= 4 and 1 <= len(label) <= 10
        assert benchmark_label(label) == label.lower()
        # Not a blank canvas: the word adds contrast.
        assert np.asarray(image.convert("L"), dtype=float).std() > 5
    again = list(synthetic_words(3, 0, 1, cfg, 8))
    assert again == list(synthetic_words(3, 0, 1, cfg, 8))       # reproducible by (seed, stream, i)
    assert [x[1] for x in again] != [x[1] for x in synthetic_words(3, 0, 2, cfg, 8)]
    with pytest.raises(ValueError, match="unknown"):
        RenderConfig.from_dict({"font_size": 3})


def test_excluded_words_are_never_rendered():
    cfg = RenderConfig.from_dict({"random_word_prob": 0.0, "lexicon_size": 30})
    banned = set(bpe_lexicon(16, 30)[:25])
    labels = {label.lower() for _, label in synthetic_words(40, 0, 0, cfg, 16, exclude=banned)}
    assert labels and not labels & banned


def test_demo_crops_follow_the_ground_truth_polygons():
    assert polygon_crop_box([[10, 20], [50, 20], [50, 30], [10, 30]], 128, 128) == (8, 18, 52, 32)
    assert polygon_crop_box([[120, 0], [140, 0], [140, 10], [120, 10]], 128, 128) == (118, 0, 128, 12)
    image = Image.new("RGB", (64, 64))
    truth = {"words": ["sale", "open"], "word_polygons": [[[2, 2], [30, 2], [30, 12], [2, 12]],
                                                         [[5, 40], [60, 40], [60, 56], [5, 56]]]}
    crops = crops_from_sample(image, truth)
    assert [w for _, w in crops] == ["sale", "open"] and crops[1][0].size == (59, 20)
    crops = list(demo_word_crops({"image_size": 96}, 4))
    vocab = {w.lower() for w in __import__("parrotscope.demo", fromlist=["DEFAULTS"]).DEFAULTS["vocabulary"]}
    assert crops and all(label.lower() in vocab for _, label in crops)
    assert all(Image.open(io.BytesIO(b)).size[0] <= 96 for b, _ in crops)


# ----------------------------------------------------------------------------------------------
# Training, evaluation, probe, table


def test_schedule_and_parameter_groups():
    assert warmup_cosine(0, 100, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 0.1) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 0.1) == pytest.approx(0.0)
    groups = param_groups(tiny_recogniser(), 1e-3, 5e-3, 0.1)
    assert {(g["lr"], g["weight_decay"]) for g in groups} == {(1e-3, 0.1), (1e-3, 0.0), (5e-3, 0.1), (5e-3, 0.0)}


@pytest.fixture(scope="module")
def tiny_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("str")
    cfg = RenderConfig.from_dict({"lexicon_size": 200})
    write_lmdb(synthetic_words(24, 0, 0, cfg, 6), root / "train.lmdb")
    bench = list(synthetic_words(5, 0, 1, cfg, 6)) + [(b"unused", "!!!"), (b"unused", "toolongword")]
    write_lmdb(iter(bench), root / "bench.lmdb")
    return root


def test_tiny_str_train_evaluate_and_probe(tiny_sets, tmp_path):
    spec = {"name": "scratch/tiny-rn", "arch": "tiny-rn", "init": "random"}
    cfg = STRConfig(image_size=(32, 64), max_label_length=6, heads=4)
    record = train_str(spec, str(tiny_sets / "train.lmdb"), cfg, {"steps": 3, "batch_size": 8, "log_every": 1},
                       str(tmp_path / "model.pt"), str(tmp_path / "train.json"), device="cpu", progress=False)
    assert record["samples_seen"] == 24 and len(record["loss_curve"]) == 3
    assert record["train_usable"] + sum(record["train_skipped"].values()) == record["train_samples"] == 24
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    assert payload["config"]["image_size"] == [32, 64] and payload["source"] == spec
    assert json.loads((tmp_path / "train.json").read_text())["final_loss"] == record["final_loss"]

    metrics = evaluate_str(str(tmp_path / "model.pt"), str(tiny_sets / "bench.lmdb"), str(tmp_path / "e.json"),
                           str(tmp_path / "e.parquet"), "bench", batch_size=2, device="cpu", progress=False)
    assert (metrics["samples_in"], metrics["processed"], metrics["skipped"]) == (7, 5, 2)
    assert metrics["skipped_by_reason"] == {"empty_label": 1, "label_too_long": 1}
    rows = pd.read_parquet(tmp_path / "e.parquet")
    assert rows["__key__"].tolist() == [f"{i:09d}" for i in range(1, 8)]
    ok = rows[rows["status"] == "ok"]
    assert metrics["acc_refined"] == pytest.approx(ok["correct_refined"].astype(bool).mean())
    assert rows.loc[rows["status"] != "ok", "refined"].isna().all()

    probe = probe_str(spec, str(tiny_sets / "bench.lmdb"), str(tmp_path / "p.json"), str(tmp_path / "p.parquet"),
                      "bench", max_length=6, device="cpu", progress=False)
    assert probe["vocabulary"] == len({benchmark_label(x) for x in ok["label"]})
    assert probe["chance"] == pytest.approx(1 / probe["vocabulary"]) and 0 <= probe["acc_probe"] <= 1
    assert probe["samples_in"] == probe["processed"] + probe["skipped"] == 7


def test_letterbox_keeps_the_whole_word():
    image = Image.new("RGB", (100, 20), (255, 255, 255))
    boxed = letterbox(image, 64)
    assert boxed.size == (64, 64)
    assert boxed.getpixel((0, 32)) == (255, 255, 255) and boxed.getpixel((63, 32)) == (255, 255, 255)


def test_str_table_by_hand():
    def entry(source, bench, vis, ref, probe, n):
        return {"source": source, "arch": "tiny-rn", "benchmark": bench, "eval": {"acc_visual": vis,
                "acc_refined": ref, "processed": n}, "probe": {"acc_probe": probe}}

    table = build_str_table([entry("random", "synth", 0.5, 0.6, 0.1, 10), entry("random", "demo", 0.2, 0.3, 0.05, 4),
                             entry("scratch", "synth", 0.1, 0.1, 0.0, 10)])
    assert table["source"].tolist() == ["random", "scratch"]
    assert table.loc[0, "synth refined"] == 0.6 and table.loc[0, "demo zero-shot"] == 0.05
    assert math.isnan(table.loc[1, "demo visual"])


def test_str_table_over_seeds_is_mean_and_std():
    def entry(seed, vis, probe):
        return {"source": "random", "arch": "tiny-rn", "benchmark": "synth", "seed": seed,
                "eval": {"acc_visual": vis, "acc_refined": vis, "processed": 10}, "probe": {"acc_probe": probe}}

    table = build_str_table([entry(0, 0.2, 0.1), entry(1, 0.4, 0.1), entry(2, 0.6, 0.4)])
    row = table.iloc[0]
    assert row["synth visual"] == pytest.approx(0.4) and row["synth visual seed std"] == pytest.approx(0.2)
    assert row["synth zero-shot"] == pytest.approx(0.2) and row["synth zero-shot seed std"] == pytest.approx(0.1732, abs=1e-4)
    assert row["synth n"] == 10 and row["seeds"] == 3 and "synth n seed std" not in table.columns


# ----------------------------------------------------------------------------------------------
# The workflow


def str_tiny_config(**str_cfg):
    cfg = tiny_config()
    cfg["str"] = {**cfg.get("str", {}), **str_cfg}
    return cfg


def test_default_str_plan_fine_tunes_table3s_clips(tmp_path):
    write_config(tmp_path, tiny_config())
    jobs = planned_jobs(tmp_path, "results/table_str.csv")
    assert jobs["train"] == 3 and jobs["str_train"] == 4          # random, no_text, text_only + scratch
    assert jobs["str_eval"] == jobs["str_probe"] == 8 and jobs["str_data"] == 3


def test_str_plan_has_a_recogniser_per_training_seed(tmp_path):
    cfg = tiny_config()
    cfg["train"]["seeds"] = [0, 7]
    write_config(tmp_path, cfg)
    jobs = planned_jobs(tmp_path, "results/table_str.csv")
    assert jobs["train"] == 6 and jobs["str_train"] == 8          # 3 subsets x 2 seeds; 4 sources x 2 seeds
    assert jobs["str_eval"] == jobs["str_probe"] == 16


def test_str_config_mistakes_stop_the_plan(tmp_path):
    write_config(tmp_path, str_tiny_config(sources=["nonexistent"]))
    proc = snakemake(tmp_path, "-n", "results/table_str.csv", check=False)
    assert proc.returncode != 0 and "nonexistent" in proc.stderr + proc.stdout


def test_demo_crops_on_real_data_fail_only_the_str_table(tmp_path):
    """A config for real shards keeps `demo` in str.benchmarks by default: every other table still
    plans, and asking for the STR table names the key to change."""
    shard = tmp_path / "real-000.tar"
    shard.write_bytes(b"")
    cfg = tiny_config({"real": {"shards": str(shard), "shards_per_part": 1}})
    write_config(tmp_path, cfg)
    assert planned_jobs(tmp_path, "results/table1.csv")
    proc = snakemake(tmp_path, "-n", "results/table_str.csv", check=False)
    assert proc.returncode != 0 and "str.benchmarks" in proc.stderr + proc.stdout


@pytest.mark.slow
def test_table_str_on_the_tiny_config(tmp_path):
    # The reference CLIP of the pool: a workflow-trained source without the curation chain.
    write_config(tmp_path, str_tiny_config(sources=["pool"], scratch=False))
    snakemake(tmp_path, "-c", "2", "results/table_str.csv", timeout=1800)
    table = pd.read_csv(tmp_path / "results" / "table_str.csv").set_index("source")
    assert table.index.tolist() == ["pool"]
    str_results = tmp_path / "results" / "str"
    for bench in ("synth", "demo"):
        # Each cell is the measure its evaluation wrote (rounded to the table's 4 decimals).
        m = json.loads((str_results / "eval" / "pool" / "tiny-rn" / "seed0" / f"{bench}.json").read_text())
        probe = json.loads((str_results / "probe" / "pool" / "tiny-rn" / "seed0" / f"{bench}.json").read_text())
        assert m["samples_in"] == m["processed"] + m["skipped"] > 0
        row = table.loc["pool"]
        assert row[f"{bench} n"] == m["processed"]
        for kind, value in (("visual", m["acc_visual"]), ("refined", m["acc_refined"]), ("zero-shot", probe["acc_probe"])):
            assert row[f"{bench} {kind}"] == pytest.approx(round(value, 4), abs=1e-9), (bench, kind)
            # an accuracy is a share of the processed words: k / n for a whole k
            k = value * m["processed"] if kind != "zero-shot" else value * probe["processed"]
            assert abs(k - round(k)) < 1e-6, (bench, kind, value)
    assert planned_jobs(tmp_path, "results/table_str.csv") == {}


def test_towers_the_recogniser_cannot_read_are_named():
    with pytest.raises(UnsupportedCLIP, match="image tower Conv2d is not supported"):
        image_tokens(torch.nn.Conv2d(3, 8, 3), torch.zeros(1, 3, 32, 32))
    coca_like = torch.nn.Module()
    coca_like.cls_emb = torch.nn.Parameter(torch.zeros(8))
    with pytest.raises(UnsupportedCLIP, match="class token"):
        text_tokens(coca_like, torch.zeros(1, 4, dtype=torch.long))
