"""Hand-computed golden cases for qa_serving.data.metrics (parity with the official scripts lives in
test_metrics_official.py)."""

from __future__ import annotations

import doctest

import pytest

from qa_serving.data import metrics
from qa_serving.data.metrics import (
    compute_metrics,
    exact_match_score,
    exact_match_score_korquad,
    exact_match_score_v2,
    f1_score,
    f1_score_korquad,
    f1_score_v2,
    korquad_v1,
    normalize_answer,
    normalize_answer_korquad,
    references_from_dataset,
    squad_v1,
    squad_v2,
)
from qa_serving.errors import QAError


def test_docstring_examples() -> None:
    assert doctest.testmod(metrics).failed == 0


# --- normalization ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ""),
        ("   ", ""),
        ("x", "x"),
        ("The Cat", "cat"),
        ("Hello, World!", "hello world"),
        ("U.S.A.", "usa"),  # punctuation is deleted, not turned into spaces
        ("rock'n'roll", "rocknroll"),
        ("The.", ""),  # "the." -> "the" -> article -> nothing left
        ("a\tthe\nan", ""),  # articles and every kind of whitespace
        ("an apple a day", "apple day"),
        ("Anna theory another", "anna theory another"),  # articles only as whole words
        ("the-the", "thethe"),  # hyphen goes first, leaving one word
        ("Café  AU lait", "café au lait"),
        ("¿Qué?", "¿qué"),  # only ASCII punctuation is removed
        ("“quoted”", "“quoted”"),  # curly quotes are not ASCII punctuation
        ("theé", "theé"),  # \b is Unicode-aware: é is a word character, so no article here
        ("서울의 the 봄", "서울의 봄"),
        ("🙂 The end", "🙂 end"),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ""),
        ("《서울》(Seoul)", "서울 seoul"),
        ("서울(한국)", "서울 한국"),  # brackets become spaces, unlike SQuAD's "서울한국"
        ("The Beatles", "the beatles"),  # no article removal
        ("\u2018노아\u2019", "노아"),  # curly single quotes
        ('"A" & B.', "a b"),  # quotes -> spaces first, then & and . are deleted
        ("〈홍길동전〉  은", "홍길동전 은"),
    ],
)
def test_normalize_answer_korquad(text: str, expected: str) -> None:
    assert normalize_answer_korquad(text) == expected


def test_korquad_and_squad_normalization_differ_on_brackets() -> None:
    assert normalize_answer("서울(한국)") == "서울한국"
    assert normalize_answer_korquad("서울(한국)") == "서울 한국"


# --- per-answer EM / F1 -------------------------------------------------------------------------------


def test_exact_match_ignores_case_punctuation_and_articles() -> None:
    assert exact_match_score("The Dog!", "dog")
    assert not exact_match_score("dogs", "dog")
    assert exact_match_score_v2("The Dog!", "dog") == 1
    assert exact_match_score_v2("", "") == 1


@pytest.mark.parametrize(
    ("prediction", "gold", "expected"),
    [
        # pred [big, red, dog], gold [red, dog]: 2 shared, P=2/3, R=1, F1=2*(2/3)/(5/3)=0.8
        ("the big red dog", "red dog", 0.8),
        # pred [dog, dog], gold [dog]: shared counts are min(2, 1)=1, P=1/2, R=1, F1=2/3
        ("dog dog", "dog", 2 / 3),
        # pred [red], gold [big, red, dog]: P=1, R=1/3, F1=(2/3)/(4/3)=0.5
        ("Red.", "a big red dog", 0.5),
        ("cat", "dog", 0.0),
        ("Paris", "paris!", 1.0),
    ],
)
def test_f1_partial_overlap(prediction: str, gold: str, expected: float) -> None:
    assert f1_score(prediction, gold) == pytest.approx(expected, abs=1e-12)
    assert f1_score_v2(prediction, gold) == pytest.approx(expected, abs=1e-12)


def test_f1_when_a_side_has_no_tokens_differs_between_v1_and_v2() -> None:
    # v1.1: no shared token -> 0, even though EM says "the" == "a" (both normalize to "").
    assert f1_score("the", "a") == 0.0
    assert exact_match_score("the", "a")
    # v2.0: either side empty -> 1 if both are, else 0.
    assert f1_score_v2("the", "a") == 1.0
    assert f1_score_v2("", "") == 1.0
    assert f1_score_v2("Paris", "") == 0.0
    assert f1_score_v2("", "Paris") == 0.0


def test_korquad_character_f1() -> None:
    # chars pred 서울특별시 (5), gold 서울시 (3): 3 shared, P=3/5, R=1, F1=1.2/1.6=0.75
    assert f1_score_korquad("서울특별시", "서울시") == pytest.approx(0.75, abs=1e-12)
    assert not exact_match_score_korquad("서울특별시", "서울시")
    # token F1 sees two different words
    assert f1_score("서울특별시", "서울시") == 0.0
    # spaces do not count as characters, but EM still sees them
    assert f1_score_korquad("대한 민국", "대한민국") == 1.0
    assert not exact_match_score_korquad("대한 민국", "대한민국")
    # repeated characters count up to the smaller multiplicity: pred 하하하 (3), gold 하 (1), P=1/3, R=1
    assert f1_score_korquad("하하하", "하") == pytest.approx(0.5, abs=1e-12)
    assert f1_score_korquad("", "서울") == 0.0


# --- dataset-level: SQuAD v1.1 and KorQuAD ----------------------------------------------------------


def test_squad_v1_max_over_golds() -> None:
    # vs "dog": P=1/3, R=1 -> 0.5; vs "red dog": P=2/3, R=1 -> 0.8; vs "cat": 0. Max 0.8, no EM.
    out = squad_v1({"q": "big red dog"}, {"q": ["dog", "red dog", "cat"]})
    assert out == {"exact_match": 0.0, "f1": pytest.approx(80.0, abs=1e-9), "total": 1}
    # an exact gold anywhere in the list wins
    assert squad_v1({"q": "Cat."}, {"q": ["dog", "red dog", "cat"]})["exact_match"] == 100.0


def test_squad_v1_missing_prediction_scores_zero_and_extra_ids_are_ignored() -> None:
    # q1 right, q2 missing: 1/2 -> 50%; "extra" is not a reference question and changes nothing.
    out = squad_v1({"q1": "Paris", "extra": "x"}, {"q1": ["Paris"], "q2": ["Rome"]})
    assert out == {"exact_match": 50.0, "f1": 50.0, "total": 2}


def test_squad_v1_mixed_questions() -> None:
    refs = {"a": ["Paris"], "b": ["red dog"], "c": ["1984"], "d": ["Rome"]}
    preds = {"a": "paris", "b": "the big red dog", "c": "", "d": "Berlin"}
    # EM 1,0,0,0 -> 25%; F1 1, 0.8, 0, 0 -> 1.8/4 -> 45%
    out = squad_v1(preds, refs)
    assert out["exact_match"] == 25.0
    assert out["f1"] == pytest.approx(45.0, abs=1e-9)
    assert out["total"] == 4


def test_korquad_v1() -> None:
    refs = {"k1": ["서울시", "서울특별시"], "k2": ["노아"], "k3": ["1945년"]}
    preds = {"k1": "서울특별시", "k2": "노아의 방주"}  # k3 missing
    # k1: EM 1, F1 1. k2: pred chars 노아의방주 (5), gold 노아 (2): P=2/5, R=1 -> 0.8/1.4 = 4/7. k3: 0.
    out = korquad_v1(preds, refs)
    assert out["exact_match"] == pytest.approx(100 / 3, abs=1e-9)
    assert out["f1"] == pytest.approx(100 * (1 + 4 / 7) / 3, abs=1e-9)
    assert out["total"] == 3


# --- dataset-level: SQuAD v2.0 -----------------------------------------------------------------------

V2_REFS = {"a": ["Paris"], "b": ["red dog", "dog"], "c": [], "d": []}
# a right; b partial ("big dog" vs "dog": P=1/2, R=1 -> 2/3, better than 1/2 vs "red dog");
# c right (no answer); d wrong (answers an unanswerable question).
V2_PREDS = {"a": "Paris", "b": "big dog", "c": "", "d": "London"}
V2_NA = {"a": 0.1, "b": 0.6, "c": 0.9, "d": 0.7}


def test_squad_v2_has_ans_no_ans_split() -> None:
    out = squad_v2(V2_PREDS, V2_REFS)
    expected = {
        "exact": 50.0,  # a, c
        "f1": 100.0 * (1 + 2 / 3 + 1 + 0) / 4,
        "total": 4,
        "HasAns_exact": 50.0,
        "HasAns_f1": 100.0 * (1 + 2 / 3) / 2,
        "HasAns_total": 2,
        "NoAns_exact": 50.0,
        "NoAns_f1": 50.0,
        "NoAns_total": 2,
    }
    assert list(out) == list(expected)  # the official key order, and no best_* without na_probs
    assert out == pytest.approx(expected, abs=1e-9)


def test_squad_v2_best_threshold_search() -> None:
    out = squad_v2(V2_PREDS, V2_REFS, na_probs=V2_NA)
    # Sweep by rising na_prob: a(0.1) b(0.6) d(0.7) c(0.9), starting from "all no-answer" = 2 points
    # (the two NoAns questions).
    #   exact: a +1 -> 3 (best, thresh 0.1); b +0 -> 3; d -1 (non-empty answer) -> 2; c +0 -> 2.
    #   f1:    a +1 -> 3; b +2/3 -> 3.667 (best, thresh 0.6); d -1 -> 2.667; c +0 -> 2.667.
    assert out["best_exact"] == pytest.approx(75.0, abs=1e-9)
    assert out["best_exact_thresh"] == 0.1
    assert out["best_f1"] == pytest.approx(100.0 * (3 + 2 / 3) / 4, abs=1e-9)
    assert out["best_f1_thresh"] == 0.6
    assert list(out)[-4:] == ["best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"]
    # the default threshold 1.0 switches nothing to "no answer"
    assert out["exact"] == 50.0


def test_squad_v2_na_prob_thresh() -> None:
    # thresh 0.5: b, d, c count as "no answer" -> b 0 (has an answer), d 1, c 1; a keeps its 1.
    out = squad_v2(V2_PREDS, V2_REFS, na_probs=V2_NA, na_prob_thresh=0.5)
    assert out["exact"] == out["f1"] == 75.0
    assert out["HasAns_exact"] == out["HasAns_f1"] == 50.0
    assert out["NoAns_exact"] == out["NoAns_f1"] == 100.0
    # best_* come from the raw scores and do not depend on the threshold
    assert out["best_f1_thresh"] == 0.6


def test_squad_v2_keys_follow_the_data() -> None:
    assert list(squad_v2({"q": "x"}, {"q": ["x"]})) == [
        "exact",
        "f1",
        "total",
        "HasAns_exact",
        "HasAns_f1",
        "HasAns_total",
    ]
    assert list(squad_v2({"q": ""}, {"q": []})) == [
        "exact",
        "f1",
        "total",
        "NoAns_exact",
        "NoAns_f1",
        "NoAns_total",
    ]


def test_squad_v2_gold_that_normalizes_to_nothing() -> None:
    # The dev set has golds like "."; the v2.0 script drops them and scores against "" instead, but the
    # question still counts as HasAns.
    out = squad_v2({"q": ""}, {"q": ["."]})
    assert out["exact"] == out["f1"] == out["HasAns_exact"] == 100.0
    assert "NoAns_total" not in out


def test_squad_v2_best_threshold_uses_the_raw_prediction_string() -> None:
    # x is unanswerable and predicted "the": normalized that is "", so it scores 1 ...
    refs = {"x": [], "y": ["Paris"]}
    preds = {"x": "the", "y": "Paris"}
    out = squad_v2(preds, refs, na_probs={"x": 0.1, "y": 0.9})
    assert out["exact"] == 100.0
    # ... but the sweep charges it -1 because the raw string is non-empty (official find_best_thresh):
    # start 1 (x null); x -> 0; y +1 -> 1; never above 1, so best = 1/2 at thresh 0.0.
    assert out["best_exact"] == 50.0
    assert out["best_exact_thresh"] == 0.0


def test_squad_v2_ties_in_na_probs_are_swept_in_mapping_order() -> None:
    # Same na_prob for both: the script still takes them one at a time, in the mapping's order.
    refs = {"h": ["Paris"], "n": []}
    preds = {"h": "Paris", "n": "London"}
    # h first: start 1, h +1 -> 2 (best, thresh 0.5), n -1 -> 1  => 100%
    assert squad_v2(preds, refs, na_probs={"h": 0.5, "n": 0.5})["best_exact"] == 100.0
    # n first: start 1, n -1 -> 0, h +1 -> 1, never above 1       => 50% at 0.0
    out = squad_v2(preds, refs, na_probs={"n": 0.5, "h": 0.5})
    assert (out["best_exact"], out["best_exact_thresh"]) == (50.0, 0.0)


def test_squad_v2_missing_prediction_scores_zero() -> None:
    # c (unanswerable) has no prediction: wrong, not "no answer"; total still counts it.
    out = squad_v2({"a": "Paris"}, {"a": ["Paris"], "c": []}, na_probs={"a": 0.2})
    assert out["exact"] == out["f1"] == 50.0
    assert out["total"] == 2
    assert out["NoAns_exact"] == 0.0
    # sweep over predicted questions only: start 0 (no predicted NoAns), a +1 -> 1 at 0.2; 1/2 = 50%
    assert (out["best_exact"], out["best_exact_thresh"]) == (50.0, 0.2)


# --- dispatcher and references ------------------------------------------------------------------------


def test_compute_metrics_dispatch() -> None:
    assert compute_metrics("squad", {"q": "a cat"}, {"q": ["cat"]}) == squad_v1(
        {"q": "a cat"}, {"q": ["cat"]}
    )
    assert compute_metrics("korquad", {"q": "노아"}, {"q": ["노아"]})["exact_match"] == 100.0
    assert compute_metrics("squad_v2", V2_PREDS, V2_REFS, V2_NA) == squad_v2(V2_PREDS, V2_REFS, V2_NA)


def test_references_from_records() -> None:
    rows = [
        {"id": "q1", "question": "?", "answers": {"text": ["Paris", "paris"], "answer_start": [0, 0]}},
        {"id": "q2", "answers": {"text": [], "answer_start": []}},
        {"id": "q3", "answers": [{"text": "Rome", "answer_start": 3}]},  # official JSON layout
    ]
    assert references_from_dataset(rows) == {"q1": ["Paris", "paris"], "q2": [], "q3": ["Rome"]}
    assert references_from_dataset(iter(rows)) == references_from_dataset(rows)


def test_references_from_hf_dataset() -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict(
        {
            "id": ["q1", "q2"],
            "context": ["Paris is nice.", "x"],
            "answers": [{"text": ["Paris"], "answer_start": [0]}, {"text": [], "answer_start": []}],
        }
    )
    assert references_from_dataset(ds) == {"q1": ["Paris"], "q2": []}
    with pytest.raises(QAError, match="answers"):
        references_from_dataset(ds.remove_columns("answers"))


@pytest.mark.parametrize(
    "rows",
    [
        [{"id": "q1"}],
        [{"answers": {"text": ["x"]}}],
        [{"id": 1, "answers": {"text": ["x"]}}],
        [{"id": "q1", "answers": {"text": "x"}}],
        [{"id": "q1", "answers": "x"}],
        [{"id": "q1", "answers": {"text": ["x"]}}, {"id": "q1", "answers": {"text": ["y"]}}],
        ["q1"],
        "q1",
        {"id": "q1", "answers": {"text": ["x"]}},
        42,
    ],
)
def test_references_from_dataset_rejects_bad_rows(rows: object) -> None:
    with pytest.raises(QAError):
        references_from_dataset(rows)


# --- bad input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "references",
    [
        [("q", ["x"])],  # not a mapping
        {"q": "Paris"},  # a bare string, not a list of answers
        {"q": [1]},
        {"q": None},
        {1: ["x"]},
        {},
    ],
)
@pytest.mark.parametrize("kind", ["squad", "squad_v2", "korquad"])
def test_bad_references_raise(kind: str, references: object) -> None:
    with pytest.raises(QAError):
        compute_metrics(kind, {"q": "x"}, references)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["squad", "korquad"])
def test_unanswerable_reference_outside_v2_raises(kind: str) -> None:
    with pytest.raises(QAError, match="squad_v2"):
        compute_metrics(kind, {"q": ""}, {"q": []})  # type: ignore[arg-type]


def test_bad_predictions_and_options_raise() -> None:
    refs = {"q": ["x"]}
    with pytest.raises(QAError):
        squad_v1([("q", "x")], refs)  # type: ignore[arg-type]
    with pytest.raises(QAError, match="must be a string"):
        squad_v1({"q": None}, refs)  # type: ignore[dict-item]
    with pytest.raises(QAError, match="na_probs has no entry"):
        squad_v2({"q": "x"}, refs, na_probs={"other": 0.5})
    with pytest.raises(QAError, match="must be a number"):
        squad_v2({"q": "x"}, refs, na_probs={"q": "0.5"})  # type: ignore[dict-item]
    with pytest.raises(QAError):
        squad_v2({"q": "x"}, refs, na_probs=[0.5])  # type: ignore[arg-type]
    with pytest.raises(QAError, match="unknown metric kind"):
        compute_metrics("squad_v3", {"q": "x"}, refs)  # type: ignore[arg-type]
    with pytest.raises(QAError, match="only applies"):
        compute_metrics("squad", {"q": "x"}, refs, na_probs={"q": 0.5})
    # QAError is a ValueError, so generic callers catch it too
    with pytest.raises(ValueError):
        squad_v1({"q": "x"}, {})
