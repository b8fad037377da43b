"""CoTR (paper Algorithm 1) and its fuzzy variant against hand-worked cases."""

import pandas as pd
import pytest

from parrotscope.match import (Normalisation, co_embedded_fuzzy, match_caption, match_table,
                               normalise_word, word_set)

PAPER = Normalisation(lowercase=False, strip_punctuation=False, strip_accents=False)
DEFAULT = Normalisation()


def test_paper_example_be_mine_wall_clock():
    # Paper Table 16: caption "Be Mine Wall Clock", spotted "Be Mine" -> co-emb "Be Mine", 2/4.
    m = match_caption("Be Mine Wall Clock", "Be Mine", PAPER, 0.8)
    assert m["co_words"] == ["Be", "Mine"]
    assert m["cotr"] == pytest.approx(0.5)
    assert m["is_parrot"] and m["has_text"]


def test_algorithm1_uses_word_sets_so_duplicates_count_once():
    # cap set {sale, sale!, big} -> with the paper's rule "sale!" != "sale": 1/3
    m = match_caption("sale sale sale! big", "SALE sale", PAPER, 0.8)
    assert m["n_caption_words"] == 3
    assert m["cotr"] == pytest.approx(1 / 3)
    # default normalisation: {sale, big}, spotted {sale}: 1/2
    assert match_caption("sale sale sale! big", "SALE sale", DEFAULT, 0.8)["cotr"] == pytest.approx(0.5)


def test_case_is_significant_only_without_normalisation():
    assert match_caption("OPEN now", "open", PAPER, 0.8)["cotr"] == 0.0
    assert match_caption("OPEN now", "open", DEFAULT, 0.8)["cotr"] == pytest.approx(0.5)


def test_normalise_word_strips_edges_accents_and_case():
    assert normalise_word("“Mine!”", DEFAULT) == "mine"
    assert normalise_word("ápple", DEFAULT) == "apple"
    assert normalise_word("e-mail", DEFAULT) == "e-mail"
    assert word_set("-- ... Hi", DEFAULT) == {"hi"}


def test_no_text_and_empty_caption():
    m = match_caption("a red circle", "", DEFAULT, 0.8)
    assert m == {**m, "cotr": 0.0, "cotr_fuzzy": 0.0, "has_text": False, "is_parrot": False}
    assert match_caption("!!!", "sale", DEFAULT, 0.8)["cotr"] == 0.0


def test_fuzzy_threshold_on_normalised_levenshtein():
    # "coffee" vs "cofee": distance 1, similarity 1 - 1/6 = 0.833
    assert co_embedded_fuzzy({"coffee"}, {"cofee"}, 0.8) == {"coffee"}
    assert co_embedded_fuzzy({"coffee"}, {"cofee"}, 0.9) == set()
    m = match_caption("fresh coffee daily", "FRESH COFEE", DEFAULT, 0.8)
    assert m["cotr"] == pytest.approx(1 / 3)
    assert m["cotr_fuzzy"] == pytest.approx(2 / 3)
    assert m["co_words_fuzzy"] == ["coffee", "fresh"]


def test_match_table_joins_by_key_and_carries_skips():
    samples = pd.DataFrame({
        "__key__": ["b", "a", "c"],
        "caption": ["big sale", "a red circle", ""],
        "meta": ['{"truth": {"words": ["big", "sale"]}}', '{"truth": {"words": []}}', ""],
    })
    # spot rows in another order: the join must be by key
    spots = pd.DataFrame({
        "__key__": ["c", "a", "b"],
        "status": ["skipped", "ok", "ok"],
        "error": ["empty_caption", "", ""],
        "text": ["", "", "SALE"],
    })
    t = match_table(samples, spots, DEFAULT, 0.8).set_index("__key__")
    assert t.loc["b", "cotr"] == pytest.approx(0.5) and t.loc["b", "gt_cotr"] == pytest.approx(1.0)
    assert t.loc["a", "cotr"] == 0.0 and not t.loc["a", "gt_has_text"]
    assert t.loc["c", "status"] == "skipped" and pd.isna(t.loc["c", "cotr"])


def test_match_table_refuses_mismatched_keys():
    samples = pd.DataFrame({"__key__": ["a"], "caption": ["x"], "meta": [""]})
    spots = pd.DataFrame({"__key__": ["z"], "status": ["ok"], "error": [""], "text": [""]})
    with pytest.raises(ValueError, match="disagree"):
        match_table(samples, spots, DEFAULT, 0.8)


@pytest.mark.parametrize("caption, spotted", [("sales", "sale"), ("caffe", "cafe"), ("shops", "shop"),
                                              ("sale", "sales")])
def test_fuzzy_threshold_is_at_least_exactly(caption, spotted):
    # one edit in five letters: similarity exactly 0.8, which "at least 0.8" accepts
    assert co_embedded_fuzzy({caption}, {spotted}, 0.8) == {caption}


def test_fuzzy_just_below_the_threshold_is_rejected():
    # one edit in four letters: 0.75 < 0.8; two edits in nine letters: 0.777... < 0.8
    assert co_embedded_fuzzy({"cafe"}, {"cafx"}, 0.8) == set()
    assert co_embedded_fuzzy({"abcdefghi"}, {"abcdefgxx"}, 0.8) == set()
    assert co_embedded_fuzzy({"cafe"}, {"cafx"}, 0.75) == {"cafe"}
