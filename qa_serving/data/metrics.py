"""EM / F1 for SQuAD v1.1, SQuAD v2.0 and KorQuAD 1.0, equal to the official scripts' figures.

Each scorer repeats its official script's arithmetic (same normalization, same float operations in
the same order), so results match ``evaluate-v1.1.py``, ``evaluate-v2.0.py`` and
``evaluate-korquad-v1.0.py`` to the last bit; ``tests/test_metrics_official.py`` runs both on real dev
data. Deliberate differences from the scripts:

- inputs are mappings, not nested JSON: ``references`` maps question id -> gold answer texts, in
  dataset order (an empty list means unanswerable, SQuAD v2.0 only);
- a question with no prediction scores 0 everywhere. The v1.1 and KorQuAD scripts do this; the v2.0
  script prints "Missing prediction" and then fails with a KeyError, so for v2.0 we define it: a
  missing prediction is wrong at every no-answer threshold and ``total`` still counts it;
- bad input raises :class:`QAError` instead of a ``KeyError`` / ``ZeroDivisionError`` mid-way.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from numbers import Real
from typing import Any, Literal

from qa_serving.core.normalize import DROP_PUNCT, normalize_answer
from qa_serving.errors import QAError

logger = logging.getLogger(__name__)

__all__ = [
    "compute_metrics",
    "exact_match_score",
    "exact_match_score_korquad",
    "exact_match_score_v2",
    "f1_score",
    "f1_score_korquad",
    "f1_score_v2",
    "korquad_v1",
    "normalize_answer",
    "normalize_answer_korquad",
    "references_from_dataset",
    "squad_v1",
    "squad_v2",
]

MetricKind = Literal["squad", "squad_v2", "korquad"]

# KorQuAD turns these into spaces *before* lower-casing and punctuation removal, so "A(B)" -> "a b".
# \u2018 / \u2019: LEFT / RIGHT SINGLE QUOTATION MARK.
_KORQUAD_SPACE = str.maketrans({ch: " " for ch in "'\"《》<>〈〉()\u2018\u2019"})


# --- SQuAD (v1.1 and v2.0 share the normalization) -------------------------------------------------


def exact_match_score(prediction: str, ground_truth: str) -> bool:
    """SQuAD v1.1 EM: the normalized strings are equal (``"The cat."`` vs ``"cat"`` -> True)."""
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def f1_score(prediction: str, ground_truth: str) -> float:
    """SQuAD v1.1 token F1; 0 when nothing is shared, even if both sides normalize to nothing."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(ground_truth).split()
    num_same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = 1.0 * num_same / len(pred_tokens)
    recall = 1.0 * num_same / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


def _tokens_v2(s: str) -> list[str]:
    return normalize_answer(s).split() if s else []


def exact_match_score_v2(prediction: str, ground_truth: str) -> int:
    """SQuAD v2.0 EM as 0/1 (the v2.0 script's ``compute_exact``)."""
    return int(normalize_answer(ground_truth) == normalize_answer(prediction))


def f1_score_v2(prediction: str, ground_truth: str) -> float:
    """SQuAD v2.0 token F1: if either side has no tokens, 1 when both have none, else 0.

    >>> f1_score_v2("", ""), f1_score_v2("the", ""), f1_score_v2("", "x")
    (1.0, 1.0, 0.0)
    """
    gold_tokens = _tokens_v2(ground_truth)
    pred_tokens = _tokens_v2(prediction)
    if not gold_tokens or not pred_tokens:
        return float(gold_tokens == pred_tokens)
    num_same = sum((Counter(gold_tokens) & Counter(pred_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = 1.0 * num_same / len(pred_tokens)
    recall = 1.0 * num_same / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


# --- KorQuAD 1.0 --------------------------------------------------------------------------------------


def normalize_answer_korquad(s: str) -> str:
    """KorQuAD: quotes and brackets become spaces, then lower-case, drop punctuation, fix whitespace.

    No article removal. ``"《서울》(Seoul)"`` -> ``"서울 seoul"``.
    """
    return " ".join(s.translate(_KORQUAD_SPACE).lower().translate(DROP_PUNCT).split())


def exact_match_score_korquad(prediction: str, ground_truth: str) -> bool:
    """KorQuAD EM: the normalized strings are equal."""
    return normalize_answer_korquad(prediction) == normalize_answer_korquad(ground_truth)


def f1_score_korquad(prediction: str, ground_truth: str) -> float:
    """KorQuAD F1 over the multiset of non-space characters (Korean words inflect, so tokens are too coarse).

    >>> round(f1_score_korquad("서울특별시", "서울"), 4)  # 2 shared; P=2/5, R=2/2
    0.5714
    """
    pred_chars = list("".join(normalize_answer_korquad(prediction).split()))
    gold_chars = list("".join(normalize_answer_korquad(ground_truth).split()))
    num_same = sum((Counter(pred_chars) & Counter(gold_chars)).values())
    if num_same == 0:
        return 0.0
    precision = 1.0 * num_same / len(pred_chars)
    recall = 1.0 * num_same / len(gold_chars)
    return (2 * precision * recall) / (precision + recall)


# --- input checks -------------------------------------------------------------------------------------


def _check_references(references: Any, *, allow_unanswerable: bool, metric: str) -> None:
    """Fail early, with the offending id, instead of a KeyError or max() of an empty list mid-way."""
    if not isinstance(references, Mapping):
        raise QAError(f"references must map question id -> list of gold answer texts, got {type(references)}")
    if not references:
        raise QAError("references are empty: there is nothing to score")
    for qid, golds in references.items():
        if not isinstance(qid, str):
            raise QAError(f"reference ids must be strings, got {qid!r}")
        if isinstance(golds, (str, bytes)) or not isinstance(golds, Sequence):
            raise QAError(
                f"references[{qid!r}] must be a list of answer texts, got {type(golds).__name__} "
                f"(wrap a single answer in a list)"
            )
        if not all(isinstance(g, str) for g in golds):
            raise QAError(f"references[{qid!r}] must hold only strings, got {list(golds)!r}")
        if not golds and not allow_unanswerable:
            raise QAError(
                f"references[{qid!r}] has no gold answer; {metric} has no unanswerable questions "
                f"(use squad_v2 for those)"
            )


def _answered(predictions: Any, references: Mapping[str, Sequence[str]]) -> list[str]:
    """Ids of references that have a prediction, in reference order; ids not in references are ignored."""
    if not isinstance(predictions, Mapping):
        raise QAError(f"predictions must map question id -> answer text, got {type(predictions)}")
    answered = [qid for qid in references if qid in predictions]
    for qid in answered:
        if not isinstance(predictions[qid], str):
            raise QAError(f"predictions[{qid!r}] must be a string, got {predictions[qid]!r}")
    missing = len(references) - len(answered)
    if missing:
        first = next(qid for qid in references if qid not in predictions)
        logger.warning(
            "%d of %d questions have no prediction (e.g. %r); they score 0", missing, len(references), first
        )
    return answered


# --- dataset-level scorers ----------------------------------------------------------------------------


def _em_f1(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    em_fn: Callable[[str, str], bool],
    f1_fn: Callable[[str, str], float],
    metric: str,
) -> dict[str, Any]:
    """The v1.1 / KorQuAD loop: max over golds, summed in dataset order, divided by all questions."""
    _check_references(references, allow_unanswerable=False, metric=metric)
    exact_match = f1 = 0
    for qid in _answered(predictions, references):
        prediction, golds = predictions[qid], references[qid]
        exact_match += max(em_fn(prediction, g) for g in golds)
        f1 += max(f1_fn(prediction, g) for g in golds)
    total = len(references)
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total, "total": total}


def squad_v1(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """SQuAD v1.1 EM and F1 in percent, as ``evaluate-v1.1.py`` (plus ``total``).

    >>> squad_v1({"q1": "the cat", "q2": "a dog"}, {"q1": ["Cat"], "q2": ["cat", "big dog"]})
    {'exact_match': 50.0, 'f1': 83.33333333333333, 'total': 2}
    """
    return _em_f1(predictions, references, exact_match_score, f1_score, "SQuAD v1.1")


def korquad_v1(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """KorQuAD 1.0 EM and character-level F1 in percent, as ``evaluate-korquad-v1.0.py`` (plus ``total``)."""
    return _em_f1(predictions, references, exact_match_score_korquad, f1_score_korquad, "KorQuAD 1.0")


def squad_v2(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> dict[str, Any]:
    """SQuAD v2.0 figures with the keys of ``evaluate-v2.0.py``.

    ``predictions``: ``""`` means "no answer". ``na_probs``: the model's no-answer probability per
    question; a prediction counts as "no answer" when it exceeds ``na_prob_thresh``, and when given, the
    ``best_*`` keys report the threshold that would have maximised EM / F1. ``HasAns_*`` / ``NoAns_*``
    appear only when such questions exist (empty gold list = unanswerable).
    """
    _check_references(references, allow_unanswerable=True, metric="SQuAD v2.0")
    answered = _answered(predictions, references)
    if na_probs is not None:
        if not isinstance(na_probs, Mapping):
            raise QAError(f"na_probs must map question id -> probability, got {type(na_probs)}")
        for qid in answered:
            if qid not in na_probs:
                raise QAError(f"na_probs has no entry for {qid!r}; give one for every predicted question")
            if not isinstance(na_probs[qid], Real) or isinstance(na_probs[qid], bool):
                raise QAError(f"na_probs[{qid!r}] must be a number, got {na_probs[qid]!r}")
    has_ans = {qid: bool(golds) for qid, golds in references.items()}

    exact_raw: dict[str, int] = {}
    f1_raw: dict[str, float] = {}
    for qid in answered:
        # Golds that normalize to nothing are dropped; a question left with none is scored against "".
        golds = [g for g in references[qid] if normalize_answer(g)] or [""]
        exact_raw[qid] = max(exact_match_score_v2(predictions[qid], g) for g in golds)
        f1_raw[qid] = max(f1_score_v2(predictions[qid], g) for g in golds)

    # Missing predictions stay in at 0 (adding 0 leaves the official float sums unchanged).
    exact_thresh: dict[str, float] = dict.fromkeys(references, 0)
    f1_thresh: dict[str, float] = dict.fromkeys(references, 0)
    for qid in answered:
        prob = 0.0 if na_probs is None else na_probs[qid]
        if prob > na_prob_thresh:
            exact_thresh[qid] = f1_thresh[qid] = float(not has_ans[qid])
        else:
            exact_thresh[qid], f1_thresh[qid] = exact_raw[qid], f1_raw[qid]

    def block(qids: list[str]) -> dict[str, Any]:
        total = len(qids)
        return {
            "exact": 100.0 * sum(exact_thresh[k] for k in qids) / total,
            "f1": 100.0 * sum(f1_thresh[k] for k in qids) / total,
            "total": total,
        }

    out = block(list(references))
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        qids = [qid for qid, h in has_ans.items() if h is wanted]
        if qids:
            out.update({f"{prefix}_{k}": v for k, v in block(qids).items()})
    if na_probs is not None:
        for name, raw in (("exact", exact_raw), ("f1", f1_raw)):
            best, thresh = _best_thresh(predictions, raw, na_probs, has_ans, len(references))
            out[f"best_{name}"], out[f"best_{name}_thresh"] = best, thresh
    return out


def _best_thresh(
    predictions: Mapping[str, str],
    scores: Mapping[str, float],
    na_probs: Mapping[str, float],
    has_ans: Mapping[str, bool],
    total: int,
) -> tuple[float, float]:
    """The v2.0 script's ``find_best_thresh``: sweep questions by rising na_prob, keep the best score.

    Start with every predicted question answered "no answer" (right for each NoAns one); passing a
    question's na_prob switches it to its prediction. As in the script, the sweep runs in the stable
    sort of ``na_probs``' own order, so ties are taken one by one, and a NoAns question loses a point
    whenever its raw prediction is non-empty (even ``"the"``, which normalizes to "").
    """
    cur_score = sum(1 for qid in scores if not has_ans[qid])
    best_score, best_thresh = cur_score, 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if has_ans[qid]:
            diff = scores[qid]
        else:
            diff = -1 if predictions[qid] else 0
        cur_score += diff
        if cur_score > best_score:
            best_score, best_thresh = cur_score, na_probs[qid]
    return 100.0 * best_score / total, best_thresh


def compute_metrics(
    kind: MetricKind,
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    na_probs: Mapping[str, float] | None = None,
    *,
    na_prob_thresh: float = 1.0,
) -> dict[str, Any]:
    """Score with the metric of one dataset family: ``"squad"``, ``"squad_v2"`` or ``"korquad"``."""
    if kind == "squad_v2":
        return squad_v2(predictions, references, na_probs=na_probs, na_prob_thresh=na_prob_thresh)
    if kind not in ("squad", "korquad"):
        raise QAError(f"unknown metric kind {kind!r}; choose 'squad', 'squad_v2' or 'korquad'")
    if na_probs is not None:
        raise QAError(f"na_probs only applies to 'squad_v2', not {kind!r}")
    return squad_v1(predictions, references) if kind == "squad" else korquad_v1(predictions, references)


def references_from_dataset(dataset_or_records: Any) -> dict[str, list[str]]:
    """``{id: gold texts}`` from rows with ``id`` and ``answers`` (a ``datasets.Dataset`` or dicts).

    ``answers`` may be the Hub layout ``{"text": [...], "answer_start": [...]}`` or the official JSON
    list ``[{"text": ..., "answer_start": ...}]``; an empty one marks an unanswerable question.

    >>> references_from_dataset([{"id": "q1", "answers": {"text": ["Paris"], "answer_start": [0]}}])
    {'q1': ['Paris']}
    """
    if hasattr(dataset_or_records, "column_names"):  # datasets.Dataset: read two columns, not every row
        missing = {"id", "answers"} - set(dataset_or_records.column_names)
        if missing:
            raise QAError(
                f"dataset lacks column(s) {sorted(missing)}; it has {dataset_or_records.column_names}"
            )
        rows: Iterable[Any] = (
            {"id": qid, "answers": answers}
            for qid, answers in zip(dataset_or_records["id"], dataset_or_records["answers"], strict=True)
        )
    elif isinstance(dataset_or_records, Iterable) and not isinstance(
        dataset_or_records, (str, bytes, Mapping)
    ):
        rows = dataset_or_records
    else:
        raise QAError(
            f"expected a datasets.Dataset or an iterable of row dicts, got {type(dataset_or_records)}"
        )

    references: dict[str, list[str]] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or "id" not in row or "answers" not in row:
            raise QAError(f"row {i} needs 'id' and 'answers' keys, got {row!r:.200}")
        qid, answers = row["id"], row["answers"]
        if not isinstance(qid, str):
            raise QAError(f"row {i}: id must be a string, got {qid!r}")
        if qid in references:
            raise QAError(f"row {i}: duplicate id {qid!r}; question ids must be unique")
        if isinstance(answers, Mapping):
            texts = answers.get("text")
        elif isinstance(answers, Sequence) and not isinstance(answers, (str, bytes)):
            texts = [a.get("text") if isinstance(a, Mapping) else None for a in answers]
        else:
            texts = None
        if (
            texts is None
            or isinstance(texts, (str, bytes))
            or not isinstance(texts, Sequence)
            or not all(isinstance(t, str) for t in texts)
        ):
            raise QAError(
                f"row {i} ({qid!r}): answers must be {{'text': [...], 'answer_start': [...]}} "
                f"or a list of {{'text': ...}}, got {answers!r:.200}"
            )
        references[qid] = list(texts)
    return references
