"""Fit a model's calibrator on held-out questions: answer them, label each top answer exactly right or not,
report the cross-fitted figures, fit on all of them.

Two kinds of rows: every question over its own paragraph, and a seeded sample of the questions each read
over :data:`PASSAGES` paragraphs of its article (its own among them, as ``passages=`` reads them), so that
``probability`` is also calibrated over several passages, where the span's passage match matters.

Used by ``qa-serving calibrate``, the end of ``qa-serving train`` (on its evaluation split) and the
benchmark. The figures printed beside a fitted calibrator are cross-fitted by article (each question
scored by a calibrator fitted on other articles), never the fitted calibrator on its own questions.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qa_serving.core.answering import Example, answer
from qa_serving.core.calibration import Calibrator, answer_features, cross_fit
from qa_serving.core.config import QAConfig
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


PASSAGES = 5  # paragraphs per question in the several-passage rows (as bench/calibration.py measures)
PASSAGE_QUESTIONS = 300  # questions sampled for them (each costs PASSAGES paragraphs of model time)


@dataclass
class CalibrationData:
    """Per row (a question over one paragraph, or over several): features of the top answer, its stock
    score, exact match, article and passage count."""

    x: np.ndarray
    score: np.ndarray
    correct: np.ndarray
    titles: list[str]
    span_scoring: str
    passages: np.ndarray | None = None  # per row; None: all 1
    report: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.passages is None:
            self.passages = np.ones(len(self.correct), dtype=np.int64)

    def __add__(self, other: CalibrationData) -> CalibrationData:
        return CalibrationData(
            np.vstack([self.x, other.x]),
            np.concatenate([self.score, other.score]),
            np.concatenate([self.correct, other.correct]),
            self.titles + other.titles,
            self.span_scoring,
            np.concatenate([self.passages, other.passages]),
        )


def calibration_data(
    dataset,
    predictions: Sequence[Prediction],
    span_scoring: str,
    metric: str = "squad",
    contexts: Sequence[str | Sequence[str]] | None = None,
) -> CalibrationData:
    """Features and labels of the top answers of ``predictions`` (one per row of ``dataset``, answered
    without a calibrator: an abstention would hide the answer being judged). ``contexts``: what each row
    was read over, when not its own ``context`` (several passages)."""
    contexts = list(dataset["context"]) if contexts is None else list(contexts)
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
        passages=np.array([1 if isinstance(c, str) else len(c) for c in contexts]),
    )


def passage_sets(
    titles: Sequence[str], contexts: Sequence[str], k: int, seed: int
) -> list[tuple[tuple[str, ...], int]]:
    """Per question: up to ``k`` distinct paragraphs of its article, its own among them, in seeded random
    order, and the index of its own. Example: an article of 3 paragraphs, ``k=5`` -> all 3 of them."""
    by_title: dict[str, list[str]] = {}
    for t, c in zip(titles, contexts):
        if c not in by_title.setdefault(t, []):
            by_title[t].append(c)
    rng = random.Random(seed)
    out = []
    for t, c in zip(titles, contexts):
        chosen = rng.sample([p for p in by_title[t] if p != c], min(k - 1, len(by_title[t]) - 1)) + [c]
        rng.shuffle(chosen)
        out.append((tuple(chosen), chosen.index(c)))
    return out


def fit_calibrator(
    backend,
    tokenizer,
    config: QAConfig,
    dataset,
    metric: str = "squad",
    *,
    predictions: Sequence[Prediction] | None = None,
    passages: int = PASSAGES,
    passage_questions: int = PASSAGE_QUESTIONS,
    seed: int = 0,
    n_folds: int = 5,
    progress: bool = False,
    **info: Any,
) -> tuple[Calibrator, CalibrationData]:
    """Answer ``dataset``'s questions (or take their ``predictions``, made without a calibrator), and
    ``passage_questions`` of them (seeded sample) over ``passages`` paragraphs of their article; fit on
    both kinds of rows (:func:`fit_with_report`). ``passages < 2``, or no article with two paragraphs:
    single-paragraph rows only."""
    config = dataclasses.replace(config, calibrator=None)
    if predictions is None:
        examples = list(zip(dataset["question"], dataset["context"]))
        predictions = answer(backend, tokenizer, examples, config, progress=progress)
    data = calibration_data(dataset, predictions, config.span_scoring, metric)
    titles = list(dataset["title"]) if "title" in dataset.column_names else []
    if passages >= 2 and titles and passage_questions > 0:
        sets = passage_sets(titles, list(dataset["context"]), passages, seed)
        rows = [i for i, (chosen, _) in enumerate(sets) if len(chosen) >= 2]
        rows = sorted(random.Random(seed).sample(rows, min(passage_questions, len(rows))))
        if rows:
            subset = dataset.select(rows)
            multi = [Example(dataset[i]["question"], "", {}, sets[i][0]) for i in rows]
            answered = answer(backend, tokenizer, multi, config, progress=progress)
            contexts = [ex.passages for ex in multi]
            data = data + calibration_data(subset, answered, config.span_scoring, metric, contexts)
    return fit_with_report(data, n_folds=n_folds, metric=metric, **info), data


def fit_with_report(data: CalibrationData, n_folds: int = 5, **info: Any) -> Calibrator:
    """Fit on every row of ``data``; ``data.report`` gets the cross-fitted figures of ``score`` and
    ``probability`` (``selective_report`` keys, prefixed ``score_`` / ``probability_``; over several
    passages ``passages_score_`` / ``passages_probability_``) when the rows come from at least 2 articles."""
    calibrator = Calibrator.fit(data.x, data.correct, data.span_scoring, info=info)
    single = data.passages == 1
    parts = {"": single, "passages_": ~single}
    report: dict[str, Any] = {}
    for prefix, rows in parts.items():
        if rows.any():
            report.update(
                {f"{prefix}score_{k}": v for k, v in selective_report(data.score[rows], data.correct[rows]).items()}
            )
    if len(set(data.titles)) >= 2:
        prob = cross_fit(data.x, data.correct, data.titles, data.span_scoring, n_folds=n_folds)
        for prefix, rows in parts.items():
            if rows.any():
                figures = selective_report(prob[rows], data.correct[rows])
                report.update({f"{prefix}probability_{k}": v for k, v in figures.items()})
        report["cross_fitted_folds"] = min(n_folds, len(set(data.titles)))
    else:
        report["cross_fitted_folds"] = 0  # one article: no honest out-of-fold figures
    report["questions"] = int(single.sum())
    report["passage_questions"] = int((~single).sum())
    calibrator.info["cross_fitted"] = report
    data.report = report
    return calibrator
