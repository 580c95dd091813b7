"""Fit a model's calibrator on held-out questions: answer them, label each top answer exactly right or not,
report the cross-fitted figures, fit on all of them.

Used by ``qa-serving calibrate``, the end of ``qa-serving train`` (on its evaluation split) and the
benchmark. The figures printed beside a fitted calibrator are cross-fitted by article (each question
scored by a calibrator fitted on other articles), never the fitted calibrator on its own questions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qa_serving.core.calibration import Calibrator, answer_features, cross_fit
from qa_serving.core.postprocess import Prediction
from qa_serving.data.metrics import (
    exact_match_score,
    exact_match_score_korquad,
    references_from_dataset,
)
from qa_serving.data.selective import selective_report


def exact_per_question(texts: Sequence[str], golds: Sequence[Sequence[str]], metric: str) -> np.ndarray:
    """1.0 where an answer exactly matches one of its golds (the metric's normalization), else 0.0.

    An unanswerable question (no golds, SQuAD v2) is right only when the answer is ``""``.
    Example: ``exact_per_question(["the cat", "x"], [["Cat"], ["y"]], "squad")`` -> ``[1., 0.]``.
    """
    same = exact_match_score_korquad if metric == "korquad" else exact_match_score
    out = []
    for text, gold in zip(texts, golds, strict=True):
        out.append(float(text == "") if not gold else float(any(same(text, g) for g in gold)))
    return np.array(out)


@dataclass
class CalibrationData:
    """Per question: features of the top answer, its stock score, exact match and article."""

    x: np.ndarray
    score: np.ndarray
    correct: np.ndarray
    titles: list[str]
    span_scoring: str
    report: dict[str, Any] = field(default_factory=dict)


def calibration_data(
    dataset, predictions: Sequence[Prediction], span_scoring: str, metric: str = "squad"
) -> CalibrationData:
    """Features and labels of the top answers of ``predictions`` (one per row of ``dataset``, answered
    without a calibrator: an abstention would hide the answer being judged)."""
    contexts = list(dataset["context"])
    refs = references_from_dataset(dataset)
    golds = [refs[qid] for qid in dataset["id"]]
    best = [p.best for p in predictions]
    x = np.stack(
        [answer_features(p, b, span_scoring, p.windows, c) for p, b, c in zip(predictions, best, contexts)]
    )
    titles = list(dataset["title"]) if "title" in dataset.column_names else [""] * len(contexts)
    return CalibrationData(
        x=x,
        score=np.array([b["score"] for b in best]),
        correct=exact_per_question([b["answer"] for b in best], golds, metric),
        titles=titles,
        span_scoring=span_scoring,
    )


def fit_with_report(data: CalibrationData, n_folds: int = 5, **info: Any) -> Calibrator:
    """Fit on every question of ``data``; ``data.report`` gets the cross-fitted figures of ``score`` and
    ``probability`` (``selective_report`` keys, prefixed ``score_`` / ``probability_``) when the questions
    come from at least 2 articles."""
    calibrator = Calibrator.fit(data.x, data.correct, data.span_scoring, info=info)
    report = {f"score_{k}": v for k, v in selective_report(data.score, data.correct).items()}
    if len(set(data.titles)) >= 2:
        prob = cross_fit(data.x, data.correct, data.titles, data.span_scoring, n_folds=n_folds)
        report.update({f"probability_{k}": v for k, v in selective_report(prob, data.correct).items()})
        report["cross_fitted_folds"] = min(n_folds, len(set(data.titles)))
    else:
        report["cross_fitted_folds"] = 0  # one article: no honest out-of-fold figures
    calibrator.info["cross_fitted"] = report
    data.report = report
    return calibrator
