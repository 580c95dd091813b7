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
from qa_serving.errors import QAError


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
TOP_K = 5  # answers per question fitted on: the top one's calibrator, and the others' (Calibrator.others)


@dataclass
class CalibrationData:
    """Per row (one answer of a question read over one paragraph, or over several): its features, stock
    score, exact match, article, passage count and rank in the question's answer list (0: the top one)."""

    x: np.ndarray
    score: np.ndarray
    correct: np.ndarray
    titles: list[str]
    span_scoring: str
    passages: np.ndarray | None = None  # per row; None: all 1
    rank: np.ndarray | None = None  # per row; None: all 0
    report: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.passages is None:
            self.passages = np.ones(len(self.correct), dtype=np.int64)
        if self.rank is None:
            self.rank = np.zeros(len(self.correct), dtype=np.int64)

    def __add__(self, other: CalibrationData) -> CalibrationData:
        return CalibrationData(
            np.vstack([self.x, other.x]),
            np.concatenate([self.score, other.score]),
            np.concatenate([self.correct, other.correct]),
            self.titles + other.titles,
            self.span_scoring,
            np.concatenate([self.passages, other.passages]),
            np.concatenate([self.rank, other.rank]),
        )

    def select(self, rows: np.ndarray) -> CalibrationData:
        """The rows where the boolean mask ``rows`` is set."""
        titles = [t for t, keep in zip(self.titles, rows) if keep]
        return CalibrationData(
            self.x[rows],
            self.score[rows],
            self.correct[rows],
            titles,
            self.span_scoring,
            self.passages[rows],
            self.rank[rows],
        )


def calibration_data(
    dataset,
    predictions: Sequence[Prediction],
    span_scoring: str,
    metric: str = "squad",
    contexts: Sequence[str | Sequence[str]] | None = None,
) -> CalibrationData:
    """Features and labels of every answer of ``predictions`` (one per row of ``dataset``, answered
    without a calibrator: an abstention would hide the answer being judged), one row each, with its rank.
    ``contexts``: what each question was read over, when not its own ``context`` (several passages)."""
    contexts = list(dataset["context"]) if contexts is None else list(contexts)
    refs = references_from_dataset(dataset)
    titles = list(dataset["title"]) if "title" in dataset.column_names else [""] * len(contexts)
    x, score, texts, golds, where, passages, rank = [], [], [], [], [], [], []
    for p, c, qid, title in zip(predictions, contexts, dataset["id"], titles, strict=True):
        for r, a in enumerate(p.answers or [p.best]):
            x.append(answer_features(p, a, span_scoring, p.windows, c))
            score.append(a["score"])
            texts.append(a["answer"])
            golds.append(refs[qid])
            where.append(title)
            passages.append(1 if isinstance(c, str) else len(c))
            rank.append(r)
    return CalibrationData(
        x=np.stack(x),
        score=np.array(score),
        correct=exact_per_question(texts, golds, metric),
        titles=where,
        span_scoring=span_scoring,
        passages=np.array(passages),
        rank=np.array(rank),
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
    passages: int = PASSAGES,
    passage_questions: int = PASSAGE_QUESTIONS,
    top_k: int = TOP_K,
    seed: int = 0,
    n_folds: int = 5,
    progress: bool = False,
    predictions: Sequence[Prediction] | None = None,
    **info: Any,
) -> tuple[Calibrator, CalibrationData]:
    """Answer ``dataset``'s questions (``top_k`` answers each, without a calibrator), and
    ``passage_questions`` of them (seeded sample) over ``passages`` paragraphs of their article; fit on
    every row (:func:`fit_with_report`). ``passages < 2``, or no article with two paragraphs:
    single-paragraph rows only. ``predictions``: those ``top_k`` answers of ``dataset``, when already at
    hand (``evaluate(..., also_answer=[{"top_k": 5}])``): the questions are not answered again."""
    config = dataclasses.replace(config, calibrator=None)
    options = {"top_k": top_k}
    if predictions is None:
        examples = [Example(q, c, options) for q, c in zip(dataset["question"], dataset["context"])]
        predictions = answer(backend, tokenizer, examples, config, progress=progress)
    elif len(predictions) != len(dataset) or any("probability" in a for p in predictions for a in p.answers):
        raise QAError("predictions must be the dataset's answers, one per question, without a calibrator")
    data = calibration_data(dataset, predictions, config.span_scoring, metric)
    titles = list(dataset["title"]) if "title" in dataset.column_names else []
    if passages >= 2 and titles and passage_questions > 0:
        sets = passage_sets(titles, list(dataset["context"]), passages, seed)
        rows = [i for i, (chosen, _) in enumerate(sets) if len(chosen) >= 2]
        rows = sorted(random.Random(seed).sample(rows, min(passage_questions, len(rows))))
        if rows:
            subset = dataset.select(rows)
            multi = [Example(q, "", options, sets[i][0]) for q, i in zip(subset["question"], rows)]
            answered = answer(backend, tokenizer, multi, config, progress=progress)
            contexts = [ex.passages for ex in multi]
            data = data + calibration_data(subset, answered, config.span_scoring, metric, contexts)
    return fit_with_report(data, n_folds=n_folds, metric=metric, **info), data


def _fit_others(data: CalibrationData, n_folds: int, report: dict[str, Any]) -> Calibrator | None:
    """The calibrator of the answers below the top one (``None`` when there are too few of them, or all
    right or all wrong: the top one's calibrator then serves them too); its figures go into ``report``."""
    if len(data.correct) < 20 or data.correct.min() == data.correct.max():
        return None
    others = Calibrator.fit(data.x, data.correct, data.span_scoring)
    report.update({f"others_score_{k}": v for k, v in selective_report(data.score, data.correct).items()})
    prob = _cross_fitted(data, n_folds)
    if prob is not None:
        report.update({f"others_probability_{k}": v for k, v in selective_report(prob, data.correct).items()})
    return others


def _cross_fitted(data: CalibrationData, n_folds: int) -> np.ndarray | None:
    """Out-of-fold probabilities by article; ``None`` when there are fewer than 2 articles or some fold's
    other articles hold too few rows or only right (or only wrong) answers to fit on (no honest figure)."""
    if len(set(data.titles)) < 2:
        return None
    try:
        return cross_fit(data.x, data.correct, data.titles, data.span_scoring, n_folds=n_folds)
    except QAError:
        return None


def fit_with_report(data: CalibrationData, n_folds: int = 5, **info: Any) -> Calibrator:
    """Fit on the top answers of ``data`` (and :attr:`Calibrator.others` on the answers below them);
    ``data.report`` gets the cross-fitted figures of ``score`` and ``probability`` (``selective_report``
    keys, prefixed ``score_`` / ``probability_``; over several passages ``passages_score_`` /
    ``passages_probability_``; the answers below the top ones ``others_``) when the rows come from at least
    2 articles."""
    rows = data.select(data.rank == 0)
    calibrator = Calibrator.fit(rows.x, rows.correct, rows.span_scoring, info=info)
    single = rows.passages == 1
    parts = {"": single, "passages_": ~single}
    report: dict[str, Any] = {}
    for prefix, part in parts.items():
        if part.any():
            figures = selective_report(rows.score[part], rows.correct[part])
            report.update({f"{prefix}score_{k}": v for k, v in figures.items()})
    prob = _cross_fitted(rows, n_folds)
    if prob is not None:
        for prefix, part in parts.items():
            if part.any():
                figures = selective_report(prob[part], rows.correct[part], floor=True)
                report.update({f"{prefix}probability_{k}": v for k, v in figures.items()})
        report["cross_fitted_folds"] = min(n_folds, len(set(rows.titles)))
    else:
        report["cross_fitted_folds"] = 0  # one article (or a fold without both kinds): no honest figures
    report["questions"] = int(single.sum())
    report["passage_questions"] = int((~single).sum())
    calibrator.others = _fit_others(data.select(data.rank > 0), n_folds, report)
    report["other_answers"] = int((data.rank > 0).sum())
    calibrator.info["cross_fitted"] = report
    data.report = report
    return calibrator
