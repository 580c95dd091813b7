"""Postprocess against the SQuAD reference loop (``bench.reference_postprocess``: Hugging Face
``utils_qa.postprocess_qa_predictions``),
hand-computed golden cases, softmax overflow, and the vectorized span search against a double loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.reference_postprocess import reference_postprocess
from qa_serving.core.postprocess import (
    decode_spans,
    postprocess,
    postprocess_example,
    postprocess_stock,
    stock_probabilities,
    window_candidates,
)
from qa_serving.core.windowing import NO_OFFSET

# --- random windows -----------------------------------------------------------------------------------


def random_example(rng: np.random.Generator, integer_logits: bool = False):
    """A context of words and 1-4 overlapping windows: ``[CLS] question [SEP] context slice [SEP]``.

    A few random context tokens are masked too, so the context mask is not one contiguous run.
    Returns ``(context, windows)`` with windows as ``(start, end, offsets)`` (offsets -1 outside context).
    """
    n_words = int(rng.integers(3, 60))
    words = ["".join(rng.choice(list("abcdefgh"), size=int(rng.integers(1, 6)))) for _ in range(n_words)]
    spans, pos = [], 0
    for w in words:
        spans.append((pos, pos + len(w)))
        pos += len(w) + 1
    context = " ".join(words)
    n_windows = int(rng.integers(1, 5))
    windows = []
    for _ in range(n_windows):
        lo = int(rng.integers(0, n_words))
        hi = int(rng.integers(lo + 1, n_words + 1))
        q_len = int(rng.integers(1, 8))
        offsets = np.full((1 + q_len + 1 + (hi - lo) + 1, 2), NO_OFFSET, dtype=np.int64)
        offsets[q_len + 2 : q_len + 2 + hi - lo] = spans[lo:hi]
        masked = rng.random(len(offsets)) < 0.1
        offsets[masked] = NO_OFFSET
        n = len(offsets)
        if integer_logits:  # many ties: tie order must match the reference too
            start, end = (
                rng.integers(-2, 3, size=n).astype(np.float64),
                rng.integers(-2, 3, size=n).astype(np.float64),
            )
        else:
            start, end = rng.normal(0, 3, size=n), rng.normal(0, 3, size=n)
        windows.append((start, end, offsets))
    return context, windows


def _as_reference(windows):
    return [
        (s, e, [None if o[0] == NO_OFFSET else (int(o[0]), int(o[1])) for o in offs])
        for s, e, offs in windows
    ]


def _has_span(windows, n_best_size, max_answer_len) -> bool:
    return any(window_candidates(s, e, o, n_best_size, max_answer_len)[0].size for s, e, o in windows)


SETTINGS = [
    (n_best, max_len, v2, threshold)
    for n_best in (1, 5, 20)
    for max_len in (1, 3, 30)
    for v2, threshold in ((False, 0.0), (True, 0.0), (True, -1.5), (True, 2.0))
]


@pytest.mark.parametrize(("n_best", "max_len", "v2", "threshold"), SETTINGS)
def test_matches_reference_on_random_logits(n_best, max_len, v2, threshold):
    settings = {
        "n_best_size": n_best,
        "max_answer_len": max_len,
        "version_2": v2,
        "null_score_diff_threshold": threshold,
    }
    checked = 0
    for seed in range(6):
        rng = np.random.default_rng(seed)
        examples = [random_example(rng, integer_logits=seed % 3 == 2) for _ in range(8)]
        # Interleave the windows of all examples, keeping each example's own window order.
        flat = [(ex, w) for ex, (_, windows) in enumerate(examples) for w in windows]
        order = rng.permutation(len(flat))
        ex_of = np.array([flat[i][0] for i in order])
        for ex in range(len(examples)):  # restore per-example order among the shuffled positions
            slots = np.flatnonzero(ex_of == ex)
            order[slots] = sorted(order[slots])
        flat = [flat[i] for i in order]
        preds = postprocess(
            [w[0] for _, w in flat],
            [w[1] for _, w in flat],
            [w[2] for _, w in flat],
            np.array([ex for ex, _ in flat]),
            np.zeros(len(flat), dtype=np.int64),
            [c for c, _ in examples],
            **settings,
        )
        for (context, windows), pred in zip(examples, preds):
            ref_text, ref_nbest, ref_diff = reference_postprocess(
                _as_reference(windows), context, n_best, max_len, v2, threshold
            )
            if not _has_span(windows, n_best, max_len):
                # Deliberate difference: no valid span is "" (score 0), not the reference's "empty".
                assert ref_nbest[0]["text"] == "empty"
                assert pred.text == ""
                if not v2:
                    assert pred.answers == [{"answer": "", "score": 0.0, "start": 0, "end": 0}]
                continue
            assert pred.text == ref_text
            assert len(pred.nbest) == len(ref_nbest)
            for ours, ref in zip(pred.nbest, ref_nbest):
                assert (ours.start, ours.end) == ref["offsets"]
                assert context[ours.start : ours.end] == ref["text"]
                assert ours.score == ref["score"]
                assert (ours.start_logit, ours.end_logit) == (ref["start_logit"], ref["end_logit"])
                assert ours.probability == pytest.approx(ref["probability"], abs=1e-12, rel=0)
                assert ours.is_null == (v2 and ref["offsets"] == (0, 0))
            assert pred.null_score_diff == ref_diff
            top = pred.answers[0]
            assert top["answer"] == ref_text == context[top["start"] : top["end"]]
            checked += 1
    # n_best 1 often pairs an end before its start; otherwise nearly every example has a span.
    assert checked >= (3 if n_best == 1 else 30)


def test_postprocess_example_equals_postprocess():
    rng = np.random.default_rng(7)
    context, windows = random_example(rng)
    s, e, o = zip(*windows)
    settings = {"n_best_size": 5, "max_answer_len": 30, "top_k": 3, "version_2": True}
    one = postprocess_example(s, e, o, [0] * len(s), context, **settings)
    many = postprocess(
        s, e, o, np.zeros(len(s), dtype=int), np.zeros(len(s), dtype=int), [context], **settings
    )
    assert one == many[0]


def test_example_without_windows_raises():
    with pytest.raises(ValueError, match="no windows"):
        postprocess([], [], [], np.array([], dtype=int), np.array([], dtype=int), ["a context"])


# --- window_candidates against a double loop ----------------------------------------------------------


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize(("n_best", "max_len"), [(1, 30), (5, 3), (20, 1), (20, 30), (50, 10)])
def test_window_candidates_matches_double_loop(seed, n_best, max_len):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 80))
    start = rng.integers(-3, 4, size=n).astype(float) if seed % 2 else rng.normal(size=n)
    end = rng.integers(-3, 4, size=n).astype(float) if seed % 2 else rng.normal(size=n)
    offsets = np.stack([np.arange(n) * 2, np.arange(n) * 2 + 1], axis=1)
    offsets[rng.random(n) < 0.3] = NO_OFFSET
    expected = []
    for i in np.argsort(start)[-1 : -n_best - 1 : -1]:
        for j in np.argsort(end)[-1 : -n_best - 1 : -1]:
            if offsets[i, 0] == NO_OFFSET or offsets[j, 0] == NO_OFFSET or j < i or j - i + 1 > max_len:
                continue
            expected.append((int(i), int(j), start[i] + end[j]))
    s, e, score = window_candidates(start, end, offsets, n_best, max_len)
    assert list(zip(s.tolist(), e.tolist(), score.tolist())) == expected


# --- hand-computed golden cases -----------------------------------------------------------------------

#          0      1    2       3       4      5       6       7
# tokens: [CLS]  who  [SEP]  alpha   beta  gamma   delta   [SEP]
CONTEXT = "alpha beta gamma delta"
OFFSETS = np.array([[-1, -1], [-1, -1], [-1, -1], [0, 5], [6, 10], [11, 16], [17, 22], [-1, -1]])
START = np.array([0.0, 0.0, 0.0, 1.0, 3.0, 2.0, 0.0, 0.0])
END = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 4.0, 2.0, 0.0])


def _one(start=START, end=END, **settings):
    return postprocess_example([start], [end], [OFFSETS], [0], CONTEXT, **settings)


def _stock_score(start, end, s, e) -> float:
    """p_start[s] x p_end[e] as the stock pipeline defines it, by hand: softmax over the context tokens
    and CLS (the tokens of OFFSETS that are not -1, and 0)."""
    ok = np.r_[0, np.flatnonzero(OFFSETS[:, 0] != NO_OFFSET)]
    p_start = np.exp(start[s]) / np.exp(start[ok]).sum()
    p_end = np.exp(end[e]) / np.exp(end[ok]).sum()
    return float(p_start * p_end)


def test_golden_best_span_and_probabilities():
    # Top-2 starts: beta (3), gamma (2); top-2 ends: gamma (4), delta (2).
    # Spans: beta..gamma 7, gamma..gamma 6, beta..delta 5, gamma..delta 4; n-best keeps 7 and 6.
    pred = _one(n_best_size=2, top_k=2)
    assert [(c.start, c.end, c.score) for c in pred.nbest] == [(6, 16, 7.0), (11, 16, 6.0)]
    p = 1 / (1 + math.exp(-1))
    assert [c.probability for c in pred.nbest] == pytest.approx([p, 1 - p], abs=1e-15)  # the reference's
    # Users get the stock score (p_start x p_end): thresholds tuned on the stock pipeline carry over.
    assert pred.answers == [
        {
            "answer": "beta gamma",
            "score": pytest.approx(_stock_score(START, END, 4, 5), rel=1e-6),
            "start": 6,
            "end": 16,
        },
        {
            "answer": "gamma",
            "score": pytest.approx(_stock_score(START, END, 5, 5), rel=1e-6),
            "start": 11,
            "end": 16,
        },
    ]
    assert pred.null_score_diff is None


def test_golden_max_answer_len_one():
    # Single tokens only: gamma 2+4=6 beats delta 0+2, beta 3+1=4, alpha 1+0.
    pred = _one(n_best_size=20, max_answer_len=1, top_k=4)
    assert [a["answer"] for a in pred.answers] == ["gamma", "beta", "delta", "alpha"]
    expected = [_stock_score(START, END, i, i) for i in (5, 4, 6, 3)]
    np.testing.assert_allclose([a["score"] for a in pred.answers], expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("threshold", "expected"), [(-10.0, ""), (0.0, ""), (0.49, ""), (0.5, "beta gamma"), (3.0, "beta gamma")]
)
def test_golden_v2_threshold_moves_the_decision(threshold, expected):
    start, end = START.copy(), END.copy()
    start[0], end[0] = 4.0, 3.5  # null score 7.5 vs best span 7.0: diff 0.5
    pred = _one(start, end, n_best_size=2, version_2=True, null_score_diff_threshold=threshold, top_k=3)
    assert pred.null_score_diff == 0.5
    assert pred.text == expected
    # n-best of 2: the null (7.5) and beta gamma (7); gamma (6) is cut.
    assert sorted(a["answer"] for a in pred.answers) == ["", "beta gamma"]
    null = next(a for a in pred.answers if a["answer"] == "")
    assert (null["start"], null["end"]) == (0, 0)


def test_golden_min_null_score_over_windows_and_distinct_top_k():
    # Two windows both holding "beta gamma" (7 in the first, 6.5 in the second): the reference n-best
    # keeps it twice (then the null, appended), the user's top_k once.
    second_start, second_end = START - 0.25, END - 0.25
    second_start[0], second_end[0] = -3.0, -2.0  # null -5 < the first window's 0
    pred = postprocess_example(
        [START, second_start],
        [END, second_end],
        [OFFSETS, OFFSETS],
        [0, 0],
        CONTEXT,
        n_best_size=2,
        version_2=True,
        top_k=5,
    )
    assert [(c.start, c.end, c.score, c.is_null) for c in pred.nbest] == [
        (6, 16, 7.0, False),
        (6, 16, 6.5, False),
        (0, 0, -5.0, True),
    ]
    assert pred.null_score_diff == -5.0 - 7.0  # the smaller null (second window) against the best span
    assert [(a["answer"], a["start"], a["end"]) for a in pred.answers] == [("beta gamma", 6, 16), ("", 0, 0)]
    z = math.exp(0) + math.exp(-0.5) + math.exp(-12)
    assert [c.probability for c in pred.nbest] == pytest.approx(
        [1 / z, math.exp(-0.5) / z, math.exp(-12) / z]
    )
    # Stock scores: the span in the window it came from; the null: the smaller CLS p_start x p_end.
    assert pred.answers[0]["score"] == pytest.approx(_stock_score(START, END, 4, 5), rel=1e-6)
    null = min(_stock_score(START, END, 0, 0), _stock_score(second_start, second_end, 0, 0))
    assert pred.answers[1]["score"] == pytest.approx(null, rel=1e-6)


def test_no_valid_span_gives_empty_answer_without_v2():
    # One candidate each: start at delta, end at alpha -> end before start, no span.
    start = np.array([0.0, 0, 0, 0, 0, 0, 5, 0])
    end = np.array([0.0, 0, 0, 5, 0, 0, 0, 0])
    pred = _one(start, end, n_best_size=1)
    assert pred.answers == [{"answer": "", "score": 0.0, "start": 0, "end": 0}]
    pred = _one(start, end, n_best_size=1, version_2=True)
    assert pred.text == "" and pred.null_score_diff == math.inf


@pytest.mark.parametrize("v2", [False, True])
def test_large_logits_do_not_overflow_the_softmax(v2):
    rng = np.random.default_rng(0)
    start, end = rng.normal(size=8) * 1e4, rng.normal(size=8) * 1e4
    start[3:7] += 1e4
    pred = _one(start, end, version_2=v2, top_k=20)
    probs = np.array([c.probability for c in pred.nbest])
    assert np.all(np.isfinite(probs)) and probs.sum() == pytest.approx(1.0)
    assert all(np.isfinite(a["score"]) for a in pred.answers)
    assert pred.nbest[0].probability == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("v2", [False, True])
def test_top_k_answers_are_distinct_and_sorted(seed, v2):
    rng = np.random.default_rng(100 + seed)
    context, windows = random_example(rng)
    windows = windows + windows  # the same spans again, as overlapping windows produce
    s, e, o = zip(*windows)
    pred = postprocess_example(s, e, o, [0] * len(s), context, n_best_size=20, top_k=10, version_2=v2)
    spans = [(a["start"], a["end"]) for a in pred.answers]
    assert len(spans) == len(set(spans))
    for a in pred.answers:
        assert a["answer"] == context[a["start"] : a["end"]]
    assert all(0.0 <= a["score"] <= 1.0 for a in pred.answers)
    # Ranked by the reference score (start + end logits), not by the stock score they carry.
    if not v2:
        assert spans == list(dict.fromkeys((c.start, c.end) for c in pred.nbest))[:10]
    assert len(pred.answers) == min(10, len({(c.start, c.end) for c in pred.nbest}))


def test_v2_top_k_places_the_null_answer_by_its_score():
    # Null 6.5 lies between the best span (7) and the second (6): not predicted at threshold 0, but it
    # is the second most likely answer and top_k=2 must show it (as the stock pipeline does).
    start, end = START.copy(), END.copy()
    start[0], end[0] = 3.5, 3.0
    pred = _one(start, end, n_best_size=3, version_2=True, top_k=2)
    assert [c.score for c in pred.nbest] == [7.0, 6.5, 6.0]
    assert pred.null_score_diff == -0.5
    assert [a["answer"] for a in pred.answers] == ["beta gamma", ""]


def test_float32_logits_are_scored_in_float64():
    start32, end32 = START.astype(np.float32) + 0.1, END.astype(np.float32) + 0.2
    pred = _one(start32, end32, n_best_size=2)
    assert pred.nbest[0].score == float(np.float64(start32[4]) + np.float64(end32[5]))
    assert pred.text == "beta gamma"


# --- "pipeline" mode: the stock pipeline's scoring ----------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("topk", [1, 12, 50, 400])
def test_stacked_decode_spans_equals_stock_select_starts_ends(seed, topk):
    """Stacked windows give what the stock code gives window by window, ties and 0-score cells included."""
    from transformers.pipelines.question_answering import select_starts_ends

    rng = np.random.default_rng(seed)
    length, n = int(rng.integers(8, 40)), 4
    logits = rng.normal(0, 30, size=(2, n, length)).astype(np.float32)
    logits[:, :, rng.random(length) < 0.2] = 1.0  # exact ties
    answerable = rng.random((n, length)) < 0.6
    answerable[:, 0] = True  # CLS
    max_len = int(rng.integers(1, 10))
    p_start, p_end, null = stock_probabilities(list(logits[0]), list(logits[1]), list(answerable), length)
    ours = decode_spans(p_start, p_end, answerable, topk, max_len)
    for i in range(n):
        p_mask = (~answerable[i]).astype(np.int64)[None]
        starts, ends, scores, min_null = select_starts_ends(
            logits[0, i][None], logits[1, i][None], p_mask, None, 1e6, topk, True, max_len
        )
        assert ours[i][0].tolist() == starts.tolist() and ours[i][1].tolist() == ends.tolist()
        assert ours[i][2].tolist() == scores.tolist()
        assert float(null[i]) == min_null


#          0      1     2      3      4      5      6
# tokens: [CLS]  who  [SEP]  Paris  paris  rome  [SEP]
STOCK_CONTEXT = "Paris paris rome"
STOCK_OFFSETS = np.array([[0, 0], [0, 3], [0, 0], [0, 5], [6, 11], [12, 16], [0, 0]])
# Raw offsets, then the word-aligned span (-1: no word in the context).
STOCK_SPANS = np.concatenate([STOCK_OFFSETS, STOCK_OFFSETS], axis=1)
STOCK_SPANS[[0, 1, 2, 6], 2:] = NO_OFFSET
STOCK_OK = np.array([True, False, False, True, True, True, False])


def _stock(start, end, **settings):
    return postprocess_stock(
        [start], [end], [STOCK_SPANS], [STOCK_OK], np.array([0]), [STOCK_CONTEXT], **settings
    )[0]


def test_golden_stock_merges_answers_of_the_same_text_and_appends_the_null():
    start = np.array([1.0, 0, 0, 2.0, 2.0, 0.0, 0])
    end = np.array([1.0, 0, 0, 2.0, 2.0, 0.0, 0])
    z = math.exp(1) + 2 * math.exp(2) + math.exp(0)
    p = {i: math.exp(v) / z for i, v in enumerate(start) if STOCK_OK[i]}
    pred = _stock(start, end, max_answer_len=1, top_k=3, handle_impossible_answer=True)
    # "Paris" and "paris" are one answer (lower-cased text), their scores summed, kept at the first span.
    assert [(a["answer"], a["start"], a["end"]) for a in pred.answers] == [
        ("Paris", 0, 5),
        ("", 0, 0),
        ("rome", 12, 16),
    ]
    assert pred.answers[0]["score"] == pytest.approx(p[3] * p[3] + p[4] * p[4], rel=1e-6)
    assert pred.answers[1]["score"] == pytest.approx(p[0] * p[0], rel=1e-6)  # CLS, before it is masked
    assert pred.answers[2]["score"] == pytest.approx(p[5] * p[5], rel=1e-6)


def test_golden_stock_top_k_beyond_the_valid_spans_returns_zero_score_spans():
    # 3 context tokens, max_answer_len 1: 3 valid spans, 2 distinct texts; top_k 4 asks for 18 cells, so
    # cells of probability 0 (end before start, or the masked CLS) fill the list, as in the stock code.
    start = end = np.array([0.0, 0, 0, 1.0, 1.0, 3.0, 0])
    pred = _stock(start, end, max_answer_len=1, top_k=4)
    assert len(pred.answers) == 4 and pred.answers[0]["answer"] == "rome"
    assert [a["score"] for a in pred.answers[2:]] == [0.0, 0.0]


@pytest.mark.parametrize("handle_impossible", [False, True])
def test_large_logits_do_not_overflow_the_stock_softmax(handle_impossible):
    rng = np.random.default_rng(1)
    start, end = rng.normal(size=7) * 1e4, rng.normal(size=7) * 1e4
    pred = _stock(start, end, top_k=5, handle_impossible_answer=handle_impossible)
    assert pred.answers and all(np.isfinite(a["score"]) and 0.0 <= a["score"] <= 1.0 for a in pred.answers)


def test_band_fast_path_and_full_fallback_are_both_taken():
    """The band search answers unambiguous windows; ties and zero-filled top_k fall back to the full
    outer product (the equality with the stock code of both is checked above)."""
    from qa_serving.core.postprocess import _decode_band

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 5, size=(2, 3, 30)).astype(np.float32)
    logits[:, 1, 5:] = 0.0  # ties everywhere after token 5
    ok = np.ones((3, 30), dtype=bool)
    p_start, p_end, _ = stock_probabilities(list(logits[0]), list(logits[1]), list(ok), 30)
    found = _decode_band(p_start, p_end, ok, 12, 15)
    assert found[0] is not None and found[1] is None
    assert _decode_band(p_start[:1], p_end[:1], ok[:1], 30 * 30 + 1, 15) == [None]  # more than every cell
