"""From start/end logits of every window to answers per example, in two span-scoring modes.

Pure numpy in, plain dicts out; no model, no tokenizer, no I/O.

``span_scoring="pipeline"`` reproduces the stock ``QuestionAnsweringPipeline.postprocess`` exactly: per
window, logits outside the answerable tokens (context and CLS; every unpadded token for context-first
tokenizers) and padding are set to -10000, softmaxed in float32, CLS zeroed after taking the null score,
then the outer product of start and end probabilities banded by ``triu``/``tril`` and the top
``top_k`` (``2 top_k + 10`` with ``align_to_words``) cells picked with the same ``argmax`` /
``argpartition`` / ``argsort`` calls on an array of the same shape (the padded length of the window in
the stock pipeline's batch), so that ties, zero-probability cells included, resolve as they do there;
answers with the same lower-cased text are merged (scores summed), the null answer appended, and the
list sorted and cut to ``top_k``. Windows of one padded length are stacked and searched in one go,
first in the ``max_answer_len`` band of the outer product only (every other cell is 0); a window whose
top cells are not unambiguous there (ties, fewer positive cells than asked) gets the full stock search.

``span_scoring="squad"`` reproduces the SQuAD reference
post-processing (Hugging Face ``utils_qa.postprocess_qa_predictions``): per window the top
``n_best_size`` starts x top ``n_best_size`` ends (as one outer sum, not a double loop), valid spans
only (context tokens, ``end >= start``, at most ``max_answer_len`` tokens), score = start + end logit,
best over all windows, a softmax over the kept candidates, and for SQuAD v2 the null (CLS) score of
the window where it is smallest, compared with the best span through ``null_score_diff_threshold``.

Deliberate differences from the reference: when no valid span exists the answer is ``""`` with score
0 (the reference invents the text ``"empty"``), and the ``top_k`` answers returned to users drop
repeated character spans (overlapping windows find the same span twice); ``Prediction.nbest`` keeps
the reference's list untouched. An answer's ``score`` is the stock one (p_start x p_end of the span in
its window, stock masking; the null answer: the smallest CLS p_start x p_end over the windows), so
thresholds tuned on the stock pipeline carry over; ``Candidate.probability`` is the reference's
softmax over the n-best.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qa_serving.core.passages import NEAR_POOL, PassageScorer
from qa_serving.core.windowing import NO_OFFSET
from qa_serving.errors import QAError

# The stock no-answer: what a question gets when no span is returned (abstention, v2 null, empty list).
NO_ANSWER = {"answer": "", "score": 0.0, "start": 0, "end": 0}


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
    window: int = -1
    start_token: int = -1
    end_token: int = -1
    passage: int = 0  # several passages per question: which one ``start``/``end`` index into


@dataclass
class Prediction:
    """Answers for one example.

    ``answers``: up to ``top_k`` dicts ``{"answer", "score", "start", "end"}`` (the stock pipeline's keys
    and score; maybe none in ``"pipeline"`` mode, as the stock pipeline). ``null_score_diff``: null score
    minus best span score (SQuAD v2 ``na_prob``; ``None`` without v2; in ``"pipeline"`` mode the
    difference of the stock scores). ``nbest``: the reference n-best (``"pipeline"`` mode: the answers
    as candidates, score = stock score). ``windows``: the example's window count. ``null_strength``: the
    no-answer's strength over the windows (``"squad"``: the smallest CLS start + end logit; ``"pipeline"``:
    log of the smallest stock CLS score), a feature of the calibrator.
    """

    answers: list[dict]
    null_score_diff: float | None
    nbest: list[Candidate]
    windows: int = 0  # how many windows the example was read in (set by the core call)
    null_strength: float | None = None

    @property
    def text(self) -> str:
        return self.answers[0]["answer"] if self.answers else ""

    @property
    def best(self) -> dict:
        """The top answer; the empty answer (score 0, at 0) when no span survived, where the stock
        pipeline returns ``[]``, so adapters that promise one dict per question always have one."""
        return self.answers[0] if self.answers else dict(NO_ANSWER)


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


MASKED = -10000.0  # the stock pipeline's logit for tokens an answer may not use


def answerable_tokens(offsets: np.ndarray, cls_index: int, context_first: bool = False) -> np.ndarray:
    """Tokens the stock pipeline lets an answer use: context tokens and CLS; every token when the
    tokenizer puts the context first (its ``p_mask`` is all zeros then).

    Example: offsets ``[-1, -1, (0, 5), -1]`` with CLS at 0 -> ``[True, False, True, False]``.
    """
    if context_first:
        return np.ones(len(offsets), dtype=bool)
    mask = offsets[:, 0] != NO_OFFSET
    mask[cls_index] = True
    return mask


def stock_probabilities(
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    answerable: Sequence[np.ndarray],
    padded_length: int,
    left_padding: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-window start/end probabilities as the stock pipeline computes them, for windows padded to one
    length: ``(p_start, p_end, null)`` with ``p_*`` of shape ``(n, padded_length)`` (float32, position 0
    zeroed) and ``null[i] = p_start[i, 0] * p_end[i, 0]`` taken before that.

    Example: one window, logits ``[0, 1, 2]``, all answerable -> p_start ``[0, .245, .665]``.
    """
    n = len(start_logits)
    start = np.full((n, padded_length), MASKED, dtype=np.float32)
    end = np.full((n, padded_length), MASKED, dtype=np.float32)
    for i, (s, e, ok) in enumerate(zip(start_logits, end_logits, answerable)):
        lo = padded_length - len(s) if left_padding else 0
        start[i, lo : lo + len(s)] = np.where(ok, np.asarray(s, dtype=np.float32), np.float32(MASKED))
        end[i, lo : lo + len(e)] = np.where(ok, np.asarray(e, dtype=np.float32), np.float32(MASKED))
    # Row-wise, these are the stock expressions on its (1, L) arrays (same float32 sums and rounding).
    start = np.exp(start - start.max(axis=-1, keepdims=True))
    start = start / start.sum(axis=-1, keepdims=True)
    end = np.exp(end - end.max(axis=-1, keepdims=True))
    end = end / end.sum(axis=-1, keepdims=True)
    null = start[:, 0] * end[:, 0]
    start[:, 0] = end[:, 0] = 0.0
    return start, end, null


def decode_spans(
    p_start: np.ndarray, p_end: np.ndarray, allowed: np.ndarray, topk: int, max_answer_len: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The stock ``decode_spans`` for a stack of windows of one padded length: per window the
    ``(starts, ends, scores)`` it returns, in its order.

    The same selection calls run on arrays of the same shape and values, so ties (cells of probability
    0 among them, which it returns when ``topk`` exceeds the valid spans) break the same way. ``allowed``
    also admits position 0 for every window: the stock ``np.isin`` tests against the 2-D ``nonzero()``
    tuple, whose row indices are all 0.
    """
    allowed = allowed.copy()
    allowed[:, 0] = True
    out = _decode_band(p_start, p_end, allowed, topk, max_answer_len)
    rest = [i for i, found in enumerate(out) if found is None]
    if rest:
        for i, found in zip(
            rest, _decode_full(p_start[rest], p_end[rest], allowed[rest], topk, max_answer_len)
        ):
            out[i] = found
    return out  # type: ignore[return-value]


def _decode_band(
    p_start: np.ndarray, p_end: np.ndarray, allowed: np.ndarray, topk: int, max_answer_len: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
    """The fast path: only the ``max_answer_len`` band of the outer product (every other cell is 0).

    Its top ``topk`` cells are what the stock selection returns whenever they are unambiguous: pairwise
    distinct and above the next cell and 0. Windows where they are not (ties, or fewer positive cells
    than ``topk``) get ``None`` and go through :func:`_decode_full`.
    Example: L=384, max_answer_len 15: 5,760 cells searched instead of 147,456.
    """
    n, length = p_start.shape
    width = min(max_answer_len, length)
    if length * length < topk or length * width <= topk:
        return [None] * n
    ends = np.arange(length)[:, None] + np.arange(width)[None, :]
    band = p_start[:, :, None] * p_end[:, np.minimum(ends, length - 1)]
    band[:, ends >= length] = -1.0
    flat = band.reshape(n, length * width)
    part = np.argpartition(-flat, topk, axis=-1)[:, : topk + 1]
    vals = np.take_along_axis(flat, part, -1)
    order = np.argsort(-vals, axis=-1, kind="stable")
    part, vals = np.take_along_axis(part, order, -1), np.take_along_axis(vals, order, -1)
    top = vals[:, :topk]
    clear = (top[:, -1] > np.maximum(vals[:, topk], 0.0)) & np.all(top[:, :-1] > top[:, 1:], axis=-1)
    starts = part[:, :topk] // width
    stops = starts + part[:, :topk] % width
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None] = []
    for i in range(n):
        if not clear[i]:
            out.append(None)
            continue
        keep = allowed[i, starts[i]] & allowed[i, stops[i]]
        out.append((starts[i][keep], stops[i][keep], top[i][keep]))
    return out


def _decode_full(
    p_start: np.ndarray, p_end: np.ndarray, allowed: np.ndarray, topk: int, max_answer_len: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The stock expressions on the whole ``(L, L)`` outer product (ties broken as there)."""
    n, length = p_start.shape
    outer = p_start[:, :, None] * p_end[:, None, :]
    candidates = np.tril(np.triu(outer), max_answer_len - 1)
    flat = candidates.reshape(n, length * length)
    if topk == 1:
        idx = np.argmax(flat, axis=-1)[:, None]
    elif flat.shape[1] < topk:
        idx = np.argsort(-flat, axis=-1)
    else:
        part = np.argpartition(-flat, topk, axis=-1)[:, :topk]
        idx = np.take_along_axis(part, np.argsort(-np.take_along_axis(flat, part, -1), axis=-1), -1)
    starts, ends = idx // length, idx % length
    rows = np.arange(n)[:, None]
    keep = allowed[rows, starts] & allowed[rows, ends]
    scores = candidates[rows, starts, ends]
    return [(starts[i][keep[i]], ends[i][keep[i]], scores[i][keep[i]]) for i in range(n)]


def _stock_char_spans(
    stock_offsets: np.ndarray, starts: np.ndarray, ends: np.ndarray, align_to_words: bool
) -> tuple[list[int], list[int]]:
    """The stock ``get_indices`` for token spans of one window (token indices without padding).

    Word-aligned when both ends have a word in the context, else the raw token offsets (the stock code
    falls back on any failed lookup; a negative index is Python's from-the-end list index there).
    """
    n = len(stock_offsets)
    s, e = starts % n, ends % n
    raw_start, raw_end = stock_offsets[s, 0], stock_offsets[e, 1]
    if not align_to_words:
        return raw_start.tolist(), raw_end.tolist()
    word_start, word_end = stock_offsets[s, 2], stock_offsets[e, 3]
    aligned = (starts >= 0) & (ends >= 0) & (word_start != NO_OFFSET) & (word_end != NO_OFFSET)
    return np.where(aligned, word_start, raw_start).tolist(), np.where(aligned, word_end, raw_end).tolist()


def postprocess_stock(
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    stock_offsets: Sequence[np.ndarray],
    answerable: Sequence[np.ndarray],
    example_index: np.ndarray,
    contexts: Sequence[str | Sequence[str]],
    *,
    window_passage: np.ndarray | None = None,
    padded_length: np.ndarray | None = None,
    pad_shift: np.ndarray | None = None,
    left_padding: bool = False,
    top_k: int = 1,
    max_answer_len: int = 15,
    handle_impossible_answer: bool = False,
    align_to_words: bool = True,
    group_size: int = 16,
) -> list[Prediction]:
    """``span_scoring="pipeline"``: the stock pipeline's answers for every example (see the module doc).

    ``padded_length[i]``: the length window ``i`` is padded to in the stock pipeline's batch (its own
    length with ``batch_size=1``); ``pad_shift[i]``: the pad-token count the stock code subtracts from
    token indices of left-padded windows. Windows are grouped by ``example_index`` in window order.
    ``contexts[e]`` may be a sequence of passages, ``window_passage[i]`` the passage of window ``i``: the
    answers then carry a ``"passage"`` index (same text in several passages: one answer, scores summed,
    as the stock code merges windows).
    """
    n_windows = len(start_logits)
    lengths = np.array([len(s) for s in start_logits], dtype=np.int64)
    padded_length = lengths if padded_length is None else np.asarray(padded_length, dtype=np.int64)
    if pad_shift is None:
        pad_shift = padded_length - lengths if left_padding else np.zeros(n_windows, dtype=np.int64)
    pre_topk = top_k * 2 + 10 if align_to_words else top_k
    spans: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = [None] * n_windows  # type: ignore[list-item]
    null = np.zeros(n_windows, dtype=np.float32)
    for length in np.unique(padded_length).tolist():
        same = np.flatnonzero(padded_length == length)
        # Bounded memory: a (group, L, L) float32 cube per step.
        step = max(1, min(group_size, (64 << 20) // (16 * length * length)))
        for lo in range(0, same.size, step):
            ids = same[lo : lo + step]
            p_start, p_end, null[ids] = stock_probabilities(
                [start_logits[i] for i in ids],
                [end_logits[i] for i in ids],
                [answerable[i] for i in ids],
                length,
                left_padding,
            )
            allowed = np.zeros((ids.size, length), dtype=bool)
            for row, i in enumerate(ids):
                first = length - lengths[i] if left_padding else 0
                allowed[row, first : first + lengths[i]] = answerable[i]
            for i, found in zip(ids, decode_spans(p_start, p_end, allowed, pre_topk, max_answer_len)):
                spans[i] = found

    order = np.argsort(example_index, kind="stable")
    bounds = np.searchsorted(np.asarray(example_index)[order], np.arange(len(contexts) + 1))
    out = []
    for ex, context in enumerate(contexts):
        multi = not isinstance(context, str)
        merged: dict[str, dict] = {}
        min_null = 1000000.0
        for i in order[bounds[ex] : bounds[ex + 1]].tolist():
            min_null = min(min_null, float(null[i]))
            starts, ends, scores = spans[i]
            c_start, c_end = _stock_char_spans(
                stock_offsets[i], starts - pad_shift[i], ends - pad_shift[i], align_to_words
            )
            passage = int(window_passage[i]) if multi else 0
            text_of = context[passage] if multi else context
            for a, b, score in zip(c_start, c_end, scores.tolist()):
                text = text_of[a:b]
                found = merged.get(text.lower())
                if found is not None:
                    found["score"] += score
                else:
                    merged[text.lower()] = {"score": score, "start": a, "end": b, "answer": text}
                    if multi:
                        merged[text.lower()]["passage"] = passage
        answers = list(merged.values())
        candidates = [
            Candidate(a["score"], 0.0, 0.0, a["start"], a["end"], passage=a.get("passage", 0))
            for a in answers
        ]
        null_diff = None
        if handle_impossible_answer:
            answers.append({"score": min_null, "start": 0, "end": 0, "answer": ""})
            candidates.append(Candidate(min_null, 0.0, 0.0, 0, 0, is_null=True))
            null_diff = min_null - max((c.score for c in candidates[:-1]), default=0.0)
        nbest = sorted(candidates, key=lambda c: c.score, reverse=True)  # stable, as the answers below
        answers = sorted(answers, key=lambda x: x["score"], reverse=True)[:top_k]
        strength = float(np.log(max(min_null, 1e-12))) if min_null < 1000000.0 else None
        out.append(
            Prediction(answers=answers, null_score_diff=null_diff, nbest=nbest, null_strength=strength)
        )
    return out


def _softmax(scores: np.ndarray) -> np.ndarray:
    exp = np.exp(scores - scores.max())
    return exp / exp.sum()


def postprocess_example(
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    offsets: Sequence[np.ndarray],
    cls_index: Sequence[int],
    context: str | Sequence[str],
    *,
    window_passage: Sequence[int] | None = None,
    scorer: PassageScorer | None = None,
    n_best_size: int = 20,
    max_answer_len: int = 30,
    top_k: int = 1,
    version_2: bool = False,
    null_score_diff_threshold: float = 0.0,
    answerable: Sequence[np.ndarray] | None = None,
) -> Prediction:
    """Answers for one example from the logits and context offsets of all its windows (``"squad"`` mode).

    ``answerable``: per window, the tokens the stock pipeline's masking keeps (default: context tokens
    and CLS, see :func:`answerable_tokens`); only the stock ``score`` of the answers depends on it.
    ``context`` may be a sequence of passages, ``window_passage[w]`` the passage of window ``w``: the
    passages are more windows of one question (spans compared by start + end logit across all of them),
    answers carry a ``"passage"`` index, and one text found in several passages is one answer (its best).
    ``scorer``: what spans over several passages get added to their ranking score (their passage's and
    their neighbourhood's match with the question, :mod:`qa_serving.core.passages`).
    """
    multi = not isinstance(context, str)
    spans: list[tuple[np.ndarray, ...]] = []
    passage_of: list[int] = []
    null_score, null_start, null_end = np.inf, 0.0, 0.0
    stock_p, stock_null = [], 1000000.0
    for w, (start, end, offs, cls) in enumerate(zip(start_logits, end_logits, offsets, cls_index)):
        ok = answerable[w] if answerable is not None else answerable_tokens(offs, cls)
        p_start, p_end, p_null = stock_probabilities([start], [end], [ok], len(start))
        stock_p.append((p_start[0], p_end[0]))
        stock_null = min(stock_null, float(p_null[0]))
        start = np.asarray(start, dtype=np.float64)
        end = np.asarray(end, dtype=np.float64)
        s, e, score = window_candidates(start, end, offs, n_best_size, max_answer_len)
        if multi and scorer is not None:
            score = score + scorer.passage[window_passage[w]]
        spans.append((score, start[s], end[e], offs[s, 0], offs[e, 1], np.full(s.size, w), s, e))
        passage_of.append(int(window_passage[w]) if multi else 0)
        window_null = start[cls] + end[cls]
        if window_null < null_score:
            null_score, null_start, null_end = window_null, start[cls], end[cls]

    scores, s_logit, e_logit, c_start, c_end, window, s_tok, e_tok = (
        np.concatenate(parts) for parts in zip(*spans)
    )
    if multi and scorer is not None:
        # The neighbourhood term needs each span's place in its passage: the strongest spans only.
        head = np.argsort(-scores, kind="stable")[: NEAR_POOL * n_best_size]
        near = [scorer.near(passage_of[window[i]], int(c_start[i]), int(c_end[i])) for i in head.tolist()]
        scores[head] += near
    null = Candidate(float(null_score), float(null_start), float(null_end), 0, 0, is_null=True)
    n_spans = len(scores)
    if version_2:
        scores = np.append(scores, null_score)  # the null candidate is index n_spans
    # Stable sort keeps the reference's tie order (window, start rank, end rank, then null);
    # Candidate objects are made for the kept n-best only.
    order = np.argsort(-scores, kind="stable")[:n_best_size]
    kept = order[order != n_spans]
    columns = (scores[kept], s_logit[kept], e_logit[kept], c_start[kept], c_end[kept])
    tokens = (window[kept], s_tok[kept], e_tok[kept])
    spans_iter = (
        Candidate(*values, window=w, start_token=a, end_token=b, passage=passage_of[w])
        for values, (w, a, b) in zip(zip(*(c.tolist() for c in columns)), zip(*(t.tolist() for t in tokens)))
    )
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

    null_strength = float(null_score)
    if best is None and not version_2:
        no_span = dict(NO_ANSWER)
        return Prediction(answers=[no_span], null_score_diff=None, nbest=nbest, null_strength=null_strength)
    # The decision first, then the other candidates by score, the null among them where its score puts
    # it (as the stock pipeline ranks it), not always last where top_k would cut it off.
    first = null if predict_null else best
    others = [c for c in non_null + ([null] if version_2 else []) if c is not first]
    ranked = [first, *sorted(others, key=lambda c: -c.score)]
    answers, seen = [], set()
    for cand in ranked:
        text = (context[cand.passage] if multi else context)[cand.start : cand.end]
        # Overlapping windows find one span twice; overlapping passages one text twice.
        key: tuple = (cand.is_null, " ".join(text.lower().split()))
        if not multi:
            key = (cand.start, cand.end, cand.is_null)
        if key in seen:
            continue
        seen.add(key)
        if cand.is_null:
            score = stock_null
        else:
            p_start, p_end = stock_p[cand.window]
            score = float(p_start[cand.start_token] * p_end[cand.end_token])
        answers.append({"answer": text, "score": score, "start": cand.start, "end": cand.end})
        if multi:
            answers[-1]["passage"] = cand.passage
        if len(answers) == top_k:
            break
    return Prediction(answers=answers, null_score_diff=null_diff, nbest=nbest, null_strength=null_strength)


def postprocess(
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    offsets: Sequence[np.ndarray],
    example_index: np.ndarray,
    cls_index: np.ndarray,
    contexts: Sequence[str | Sequence[str]],
    answerable: Sequence[np.ndarray] | None = None,
    window_passage: np.ndarray | None = None,
    scorers: Sequence[PassageScorer | None] | None = None,
    **settings,
) -> list[Prediction]:
    """``"squad"`` answers for every example; windows are grouped by ``example_index`` (any order).

    ``settings`` are :func:`postprocess_example`'s keyword arguments; ``contexts[e]`` may be a sequence of
    passages, ``window_passage`` then says which passage each window reads, ``scorers[e]`` what its
    spans get added (:func:`qa_serving.core.passages.passage_scorer`).
    """
    example_index = np.asarray(example_index)
    order = np.argsort(example_index, kind="stable")
    bounds = np.searchsorted(example_index[order], np.arange(len(contexts) + 1))
    out = []
    for ex, context in enumerate(contexts):
        idx = order[bounds[ex] : bounds[ex + 1]]
        if idx.size == 0:
            raise QAError(f"example {ex} has no windows: features and contexts do not match")
        out.append(
            postprocess_example(
                [start_logits[i] for i in idx],
                [end_logits[i] for i in idx],
                [offsets[i] for i in idx],
                [int(cls_index[i]) for i in idx],
                context,
                window_passage=[int(window_passage[i]) for i in idx] if window_passage is not None else None,
                scorer=scorers[ex] if scorers is not None else None,
                answerable=[answerable[i] for i in idx] if answerable is not None else None,
                **settings,
            )
        )
    return out
