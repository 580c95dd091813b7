"""Synthetic SQuAD / KorQuAD generator (qa_serving/synthetic.py)."""

from __future__ import annotations

import re

import pytest

from qa_serving.data.loading import load_examples
from qa_serving.data.synthetic import _particle, generate_squad, write_squad
from qa_serving.errors import QAError

CASES = [("en", False), ("en", True), ("ko", False), ("ko", True)]


def _qas(doc):
    return [(p["context"], qa) for a in doc["data"] for p in a["paragraphs"] for qa in p["qas"]]


@pytest.mark.parametrize("lang, version_2", CASES)
def test_answers_are_exact_spans_and_ids_unique(lang, version_2):
    doc = generate_squad(40, lang=lang, version_2=version_2, seed=3)
    qas = _qas(doc)
    assert len(qas) > 300
    for context, qa in qas:
        for answer in qa["answers"] + qa.get("plausible_answers", []):
            start, text = answer["answer_start"], answer["text"]
            assert context[start : start + len(text)] == text, qa["id"]
            assert text == text.strip() and text
        assert qa["question"].endswith("?")
        assert ("is_impossible" in qa) == version_2
        assert (not qa["answers"]) == qa.get("is_impossible", False)
    ids = [qa["id"] for _, qa in qas]
    assert len(set(ids)) == len(ids)
    titles = [a["title"] for a in doc["data"]]
    assert len(set(titles)) == len(titles)  # split_by_article groups by title
    assert all(len(a["paragraphs"]) == 3 for a in doc["data"])
    questions = [(context, qa["question"]) for context, qa in qas]
    assert len(set(questions)) == len(questions)


@pytest.mark.parametrize("fraction", [0.0, 0.33, 0.5])
def test_unanswerable_fraction_is_roughly_as_asked(fraction):
    qas = _qas(generate_squad(60, version_2=True, unanswerable_fraction=fraction, seed=1))
    share = sum(qa["is_impossible"] for _, qa in qas) / len(qas)
    assert abs(share - fraction) < 0.06
    if fraction:
        # both kinds: unstated attribute (no plausible answer) and another entity (plausible answer)
        kinds = {bool(qa.get("plausible_answers")) for _, qa in qas if qa["is_impossible"]}
        assert kinds == {True, False}


def test_v1_has_no_unanswerable_questions():
    assert all(qa["answers"] for _, qa in _qas(generate_squad(20, unanswerable_fraction=0.9)))


def test_deterministic_per_seed_and_names_unseen_across_seeds():
    assert generate_squad(10, seed=7) == generate_squad(10, seed=7)
    assert generate_squad(10, seed=7, lang="ko") == generate_squad(10, seed=7, lang="ko")
    assert generate_squad(10, seed=7) != generate_squad(10, seed=8)
    for lang in ("en", "ko"):
        a, b = generate_squad(100, seed=0, lang=lang), generate_squad(100, seed=1, lang=lang)
        titles_a, titles_b = {x["title"] for x in a["data"]}, {x["title"] for x in b["data"]}
        assert len(titles_a & titles_b) <= 2
        answers_a = {ans["text"] for _, qa in _qas(a) for ans in qa["answers"]}
        answers_b = {ans["text"] for _, qa in _qas(b) for ans in qa["answers"]}
        # names are new; what repeats is closed-class (occupations, industries) and some numbers
        assert len(answers_b - answers_a) / len(answers_b) > 0.6
    ids_a = {qa["id"] for _, qa in _qas(generate_squad(5, seed=0))}
    ids_b = {qa["id"] for _, qa in _qas(generate_squad(5, seed=1))}
    assert not ids_a & ids_b  # sets from two seeds can be merged


# Hangul packs more per character: 700 characters of Korean are well over 384 tokens
@pytest.mark.parametrize("lang, min_chars, short_chars", [("en", 1500, 100), ("ko", 700, 40)])
def test_some_contexts_are_long(lang, min_chars, short_chars):
    contexts = [p["context"] for a in generate_squad(40, lang=lang, seed=2)["data"] for p in a["paragraphs"]]
    n_long = sum(len(c) > min_chars for c in contexts)
    assert 0.05 < n_long / len(contexts) < 0.5
    assert min(len(c) for c in contexts) > short_chars  # 4+ facts even when short


def test_korean_answers_carry_no_particle():
    # the particle goes after the span: "1923년에" -> "1923년", "3,400명을" -> "3,400명"
    qas = _qas(generate_squad(40, lang="ko", seed=4))
    n_numeric = 0
    for context, qa in qas:
        assert re.search(r"[가-힣]", qa["question"])
        for answer in qa["answers"]:
            text = answer["text"]
            if re.match(r"\d", text):
                n_numeric += 1
                assert re.fullmatch(
                    r"\d{3,4}년( \d{1,2}월 \d{1,2}일)?|[\d,]+(명|억 원|킬로미터|제곱킬로미터|미터)|.+호", text
                ), text
    assert n_numeric > 50


@pytest.mark.parametrize(
    "word, particle, expected",
    [
        ("회사", "은", "는"),
        ("바른홀트 산업", "은", "은"),
        ("1923년", "이", "이"),
        ("엘레나", "이", "가"),
        ("서울", "으로", "로"),
        ("트레사호", "으로", "로"),
        ("본사", "을", "를"),
        ("300", "이다", "이다"),
        ("40", "이다", "이다"),
        ("2", "이다", "다"),
        ("강", "의", "의"),
    ],
)
def test_korean_particles(word, particle, expected):
    assert _particle(word, particle) == expected


@pytest.mark.parametrize("lang, version_2", CASES)
def test_loads_through_load_examples(tmp_path, lang, version_2):
    path = write_squad(
        tmp_path / "syn" / f"{lang}.json", n_articles=8, lang=lang, version_2=version_2, seed=5
    )
    doc = generate_squad(8, lang=lang, version_2=version_2, seed=5)
    ds, report = load_examples(path, on_bad_start="error", return_report=True)
    qas = _qas(doc)
    assert len(ds) == len(qas) and report.n_bad_start == 0
    assert report.n_unanswerable == sum(not qa["answers"] for _, qa in qas)
    assert list(ds["id"]) == [qa["id"] for _, qa in qas]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_articles": 0},
        {"n_articles": 2, "lang": "fr"},
        {"n_articles": 2, "unanswerable_fraction": 1.5},
        {"n_articles": 2, "paragraphs_per_article": 0},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(QAError):
        generate_squad(**kwargs)
