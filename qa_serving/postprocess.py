"""From start/end logits of every window to answers per example: the one n-best implementation.

Pure numpy in, plain dicts out; no model, no tokenizer, no I/O. It reproduces the SQuAD reference
post-processing (Hugging Face ``utils_qa.postprocess_qa_predictions``): per window the top
``n_best_size`` starts x top ``n_best_size`` ends (as one outer sum, not a double loop), valid spans
only (context tokens, ``end >= start``, at most ``max_answer_len`` tokens), score = start + end logit,
best over all windows, a softmax over the kept candidates, and for SQuAD v2 the null (CLS) score of
the window where it is smallest, compared with the best span through ``null_score_diff_threshold``.

Deliberate differences from the reference: when no valid span exists the answer is ``""`` with score
0 (the reference invents the text ``"empty"``), and the ``top_k`` answers returned to users drop
repeated character spans (overlapping windows find the same span twice); ``Prediction.nbest`` keeps
the reference's list untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .windowing import NO_OFFSET


@dataclass
class Candidate:
    """One scored span; ``start``/``end`` are character offsets into the context (end exclusive)."""

    score: float
    start_logit: float
    end_logit: float
    start: int
    end: int
    probability: float = 0.0
    is_null: bool = False


@dataclass
class Prediction:
    """Answers for one example.

    ``answers``: up to ``top_k`` dicts ``{"answer", "score", "start", "end"}`` (the stock pipeline's keys;
    ``score`` is the softmax probability among the n-best candidates). ``null_score_diff``: null score
    minus best span score (SQuAD v2 ``na_prob``; ``None`` without v2). ``nbest``: the reference n-best.
    """

    answers: list[dict]
    null_score_diff: float | None
    nbest: list[Candidate]

    @property
    def text(self) -> str:
        return self.answers[0]["answer"]


def window_candidates(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    offsets: np.ndarray,
    n_best_size: int,
    max_answer_len: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Valid (start token, end token, score) among the top starts x top ends of one window.

    Returned in the reference's order: by start rank, then end rank.
    Example: logits favouring tokens 5..7 with ``max_answer_len=2`` -> spans (5,6), (6,7), (5,5), ...
    """
    # Same selection expression as the reference, so ties resolve identically.
    starts = np.argsort(start_logits)[-1 : -n_best_size - 1 : -1]
    ends = np.argsort(end_logits)[-1 : -n_best_size - 1 : -1]
    in_context = offsets[:, 0] != NO_OFFSET
    starts, ends = starts[in_context[starts]], ends[in_context[ends]]
    # (start rank, end rank) grid by broadcasting; np.nonzero walks it row-major: the reference's order.
    length = ends[None, :] - starts[:, None] + 1
    si, ei = np.nonzero((length >= 1) & (length <= max_answer_len))
    s, e = starts[si], ends[ei]
    return s, e, start_logits[s] + end_logits[e]


def _softmax(scores: np.ndarray) -> np.ndarray:
    exp = np.exp(scores - scores.max())
    return exp / exp.sum()


def postprocess_example(
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    offsets: Sequence[np.ndarray],
    cls_index: Sequence[int],
    context: str,
    *,
    n_best_size: int = 20,
    max_answer_len: int = 30,
    top_k: int = 1,
    version_2: bool = False,
    null_score_diff_threshold: float = 0.0,
) -> Prediction:
    """Answers for one example from the logits and context offsets of all its windows."""
    spans: list[tuple[np.ndarray, ...]] = []
    null_score, null_start, null_end = np.inf, 0.0, 0.0
    for start, end, offs, cls in zip(start_logits, end_logits, offsets, cls_index):
        start = np.asarray(start, dtype=np.float64)
        end = np.asarray(end, dtype=np.float64)
        s, e, score = window_candidates(start, end, offs, n_best_size, max_answer_len)
        spans.append((score, start[s], end[e], offs[s, 0], offs[e, 1]))
        window_null = start[cls] + end[cls]
        if window_null < null_score:
            null_score, null_start, null_end = window_null, start[cls], end[cls]

    scores, s_logit, e_logit, c_start, c_end = (np.concatenate(parts) for parts in zip(*spans))
    null = Candidate(float(null_score), float(null_start), float(null_end), 0, 0, is_null=True)
    n_spans = len(scores)
    if version_2:
        scores = np.append(scores, null_score)  # the null candidate is index n_spans
    # Stable sort keeps the reference's tie order (window, start rank, end rank, then null);
    # Candidate objects are made for the kept n-best only.
    order = np.argsort(-scores, kind="stable")[:n_best_size]
    kept = order[order != n_spans]
    columns = (scores[kept], s_logit[kept], e_logit[kept], c_start[kept], c_end[kept])
    spans_iter = (Candidate(*values) for values in zip(*(column.tolist() for column in columns)))
    nbest = [null if i == n_spans else next(spans_iter) for i in order.tolist()]
    if version_2 and not any(c.is_null for c in nbest):
        nbest.append(null)

    non_null = [c for c in nbest if not c.is_null]
    if not non_null:
        # The reference's placeholder (it calls it "empty"): kept so probabilities match it.
        nbest.insert(0, Candidate(0.0, 0.0, 0.0, 0, 0))
    for cand, prob in zip(nbest, _softmax(np.array([c.score for c in nbest]))):
        cand.probability = float(prob)

    best = non_null[0] if non_null else None
    null_diff = None
    predict_null = False
    if version_2:
        # Subtracted term by term, as the reference does: (a - (b + c)) can differ from it by an ulp,
        # enough to flip a decision sitting on the threshold.
        null_diff = float("inf") if best is None else float(null.score - best.start_logit - best.end_logit)
        predict_null = best is None or null_diff > null_score_diff_threshold

    if best is None and not version_2:
        no_span = {"answer": "", "score": 0.0, "start": 0, "end": 0}
        return Prediction(answers=[no_span], null_score_diff=None, nbest=nbest)
    # The decision first, then the other candidates by score, the null among them where its score puts
    # it (as the stock pipeline ranks it), not always last where top_k would cut it off.
    first = null if predict_null else best
    others = [c for c in non_null + ([null] if version_2 else []) if c is not first]
    ranked = [first, *sorted(others, key=lambda c: -c.score)]
    answers, seen = [], set()
    for cand in ranked:
        key = (cand.start, cand.end, cand.is_null)
        if key in seen:
            continue
        seen.add(key)
        answers.append(
            {"answer": context[cand.start : cand.end], "score": cand.probability, "start": cand.start, "end": cand.end}
        )
        if len(answers) == top_k:
            break
    return Prediction(answers=answers, null_score_diff=null_diff, nbest=nbest)


def postprocess(
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    offsets: Sequence[np.ndarray],
    example_index: np.ndarray,
    cls_index: np.ndarray,
    contexts: Sequence[str],
    **settings,
) -> list[Prediction]:
    """Answers for every example; windows are grouped by ``example_index`` (any order).

    ``settings`` are :func:`postprocess_example`'s keyword arguments.
    """
    example_index = np.asarray(example_index)
    order = np.argsort(example_index, kind="stable")
    bounds = np.searchsorted(example_index[order], np.arange(len(contexts) + 1))
    out = []
    for ex, context in enumerate(contexts):
        idx = order[bounds[ex] : bounds[ex + 1]]
        if idx.size == 0:
            raise ValueError(f"example {ex} has no windows")
        out.append(
            postprocess_example(
                [start_logits[i] for i in idx],
                [end_logits[i] for i in idx],
                [offsets[i] for i in idx],
                [int(cls_index[i]) for i in idx],
                context,
                **settings,
            )
        )
    return out
