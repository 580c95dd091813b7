"""EM/F1 of a model on a SQuAD-format dataset, through the same path as inference.

Used by ``qa-serving evaluate``, the per-epoch evaluation in training, the exporter's parity report
and the benchmarks. For SQuAD v2 the null-score threshold is searched on the evaluated data (the
official script's ``best_f1_thresh``) and reported beside the figures at the configured threshold.
Beside EM/F1, :attr:`EvalResult.selective` says how well the top answers' ``score`` (and ``probability``,
for a calibrated model) rank and calibrate them: ECE, AURC, coverage at 80/90/95% exact-match precision
(:mod:`qa_serving.data.selective`), and for ``probability`` the threshold reaching each precision (a
``min_probability`` to try).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qa_serving.core.answering import Backend, answer, answer_variants
from qa_serving.core.config import QAConfig
from qa_serving.core.postprocess import Prediction
from qa_serving.data.metrics import compute_metrics, references_from_dataset
from qa_serving.data.selective import PRECISIONS, selective_report, threshold_at_precision
from qa_serving.errors import QAError

METRICS = ("squad", "squad_v2", "korquad")


@dataclass
class EvalResult:
    """Scores plus what produced them: predictions ``{id: text}`` and v2 ``na_probs`` ``{id: diff}``."""

    metrics: dict[str, float]
    predictions: dict[str, str]
    na_probs: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    selective: dict[str, float] = field(default_factory=dict)
    # Per question: the top answer's confidences ({"score": [...], "probability": [...]}) and exact match.
    confidence: dict[str, np.ndarray] = field(default_factory=dict)
    correct: np.ndarray | None = None
    answers: list[Prediction] = field(default_factory=list)  # the full predictions, in dataset order
    also: list[list[Prediction]] = field(default_factory=list)  # per ``also_answer`` option set, unscored

    @property
    def questions_per_second(self) -> float:
        return len(self.predictions) / self.seconds if self.seconds else 0.0


def pick_metric(metric: str, config: QAConfig, source: str | Path | None = None) -> str:
    """``auto`` -> ``squad_v2`` for v2 models, ``korquad`` for KorQuAD files, else ``squad``."""
    if metric != "auto":
        if metric not in METRICS:
            raise QAError(f"metric must be one of {METRICS} or 'auto', got {metric!r}")
        return metric
    if config.handle_impossible_answer:
        return "squad_v2"
    if source is not None and "korquad" in str(source).lower():
        return "korquad"
    return "squad"


def best_span_text(prediction: Prediction, context: str) -> str:
    """The best non-null span's text ('' when there is none), for the v2 threshold search."""
    for cand in prediction.nbest:
        if not cand.is_null:
            return context[cand.start : cand.end]
    return ""


def evaluate_predictions(
    dataset, predictions: Sequence[Prediction], metric: str, config: QAConfig
) -> EvalResult:
    """Score already computed predictions (one per row of ``dataset``)."""
    result = _scores(dataset, predictions, metric, config)
    _add_selective(result, dataset, predictions, metric)
    result.answers = list(predictions)
    return result


def _add_selective(result: EvalResult, dataset, predictions: Sequence[Prediction], metric: str) -> None:
    """The top answers' confidences against their exact match (the metric's normalization)."""
    from qa_serving.data.calibrate import exact_per_question

    if not predictions:
        return
    refs = references_from_dataset(dataset)
    best = [p.best for p in predictions]
    result.correct = exact_per_question([b["answer"] for b in best], [refs[q] for q in dataset["id"]], metric)
    result.confidence = {"score": np.array([b["score"] for b in best])}
    if all("probability" in b for b in best):
        result.confidence["probability"] = np.array([b["probability"] for b in best])
    for name, conf in result.confidence.items():
        figures = selective_report(conf, result.correct, floor=name == "probability")
        result.selective.update({f"{name}_{k}": v for k, v in figures.items()})
        if name == "probability":
            for p in PRECISIONS:
                result.selective[f"probability_threshold@{round(p * 100)}"] = threshold_at_precision(
                    conf, result.correct, p
                )


def _scores(dataset, predictions: Sequence[Prediction], metric: str, config: QAConfig) -> EvalResult:
    ids: list[str] = list(dataset["id"])
    contexts: list[str] = list(dataset["context"])
    preds = {qid: p.text for qid, p in zip(ids, predictions)}
    refs = references_from_dataset(dataset)
    if metric != "squad_v2":
        return EvalResult(compute_metrics(metric, preds, refs), preds)
    scores = compute_metrics("squad_v2", preds, refs)
    if any(p.null_score_diff is None for p in predictions):
        # A model that never weighs "no answer" (SQuAD v1.1-style): scored as it answers, no threshold.
        return EvalResult(scores, preds)
    na_probs = {qid: float(p.null_score_diff) for qid, p in zip(ids, predictions)}
    # Threshold search needs each question's best non-null span; the search decides null vs span.
    spans = {qid: best_span_text(p, c) for qid, p, c in zip(ids, predictions, contexts)}
    searched = compute_metrics("squad_v2", spans, refs, na_probs=na_probs)
    for key in ("best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"):
        scores[key] = searched[key]
    scores["null_score_diff_threshold"] = config.null_score_diff_threshold
    return EvalResult(scores, preds, na_probs)


def evaluate(
    backend: Backend,
    tokenizer,
    dataset,
    config: QAConfig | None = None,
    metric: str = "auto",
    source: str | Path | None = None,
    progress: bool = False,
    also_answer: Sequence[Mapping[str, Any]] = (),
) -> EvalResult:
    """Answer every question of ``dataset`` (flat columns) and score the answers.

    ``also_answer``: more option sets (e.g. ``[{"top_k": 5}]``) answered from the same forward passes
    (:func:`~qa_serving.core.answering.answer_variants`), kept unscored in ``result.also``: what a
    calibrator is fitted on, without running the model over the questions a second time.
    """
    config = config or QAConfig()
    metric = pick_metric(metric, config, source)
    started = time.perf_counter()
    pairs = list(zip(dataset["question"], dataset["context"]))
    if also_answer:
        predictions, *also = answer_variants(backend, tokenizer, pairs, [{}, *also_answer], config, progress=progress)
    else:
        predictions, also = answer(backend, tokenizer, pairs, config, progress=progress), []
    seconds = time.perf_counter() - started
    result = evaluate_predictions(dataset, predictions, metric, config)
    result.also = also
    result.seconds = seconds
    result.metrics["questions_per_second"] = result.questions_per_second
    return result
