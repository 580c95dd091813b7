"""``probability``: a calibrated chance that an answer is exactly right, from the model's own outputs.

The stock ``score`` (p_start x p_end inside one window) is neither calibrated (it averages far below the
share of exactly right answers) nor comparable across windows or passages. Following Kamath, Jia & Liang
(ACL 2020, "Selective question answering under domain shift"), a small calibrator over features of the
model's outputs, fitted on held-out questions, predicts whether the returned answer is exactly right.

Features per answer (:data:`FEATURES`; "strength" = start + end logit in ``"squad"`` mode, log of the stock
score in ``"pipeline"`` mode, where postprocess keeps no logits):
- ``log_score``: log of the stock score; ``strength``;
- ``share``: the n-best probability mass of candidates that are the same answer as exact match sees it
  (SQuAD normalization; agreement among spans: measured better than the same lower-cased text on both
  models of ``bench/calibration.py``, AURC 0.2534 -> 0.2481 and 0.2276 -> 0.2237);
  ``overlap``: the mass of candidates overlapping the answer; ``entropy``: of the n-best distribution;
- ``margin``: strength minus the strongest candidate with another text (capped at ``CAP``);
- ``null_gap``: strength minus the no-answer (CLS) strength, the weakest over windows;
- ``log_windows``: log of the number of windows; ``log_words``: log(1 + words in the answer);
  ``has_digit``: the answer holds a digit (dates and numbers are answered more reliably);
- ``is_null``: the answer is the empty (no-answer) one;
- ``match``: over several passages, what the span's passage and neighbourhood match added to its ranking
  score (:mod:`qa_serving.core.passages`; 0 for one passage); ``log_passages``: log of the passage count
  (both constant, so weightless, unless the calibrator was fitted on several-passage questions too);
- ``log_score_sq``, ``strength_sq``, ``share_sq``, ``log_score_x_share``: squares and a product, since the
  chance of being right is not logistic-linear in those (measured on held-out articles: a logistic fit of
  the log score alone has ECE 0.06; these terms lower both the calibrator's ECE and its AURC).

Model: logistic regression on standardized features (L2, Newton steps): a handful of numbers saved as
JSON (:data:`CALIBRATOR_NAME`, no pickle). An isotonic step on its output (pool-adjacent-violators) is
available (``isotonic=True``) but off by default: on 1,390 held-out SQuAD questions (cross-fitted by
article) it raised ECE and lowered the coverage at 80% precision (``bench/calibration.py``); with ~1,000
fitting questions its steps follow noise.

Several passages: ``qa-serving calibrate`` (and ``train``) also fit on a sample of the questions each
read over 5 paragraphs of its article (:func:`qa_serving.data.calibrate.fit_calibrator`), so
``probability`` is calibrated there too and compares across passages. Two logistic models: one for the
top answer, one (:attr:`Calibrator.others`) for the answers below it in a ``top_k`` list, each fitted on
its own rows (fitted together, the top answers' ranking got worse; the top model alone gave the others
~0.6 where ~0.2 were right). Deliberate simplification: one calibrator per model and span-scoring mode.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qa_serving.core.normalize import normalize_answer
from qa_serving.errors import QAError

if TYPE_CHECKING:  # postprocess -> windowing -> config -> this module: no runtime import
    from qa_serving.core.postprocess import Prediction

CALIBRATOR_NAME = "qa_calibrator.json"
FORMAT = "qa-serving-calibrator/1"
FEATURES = (
    "log_score",
    "strength",
    "share",
    "overlap",
    "entropy",
    "margin",
    "null_gap",
    "log_windows",
    "log_words",
    "has_digit",
    "is_null",
    "match",
    "log_passages",
    "log_score_sq",
    "strength_sq",
    "share_sq",
    "log_score_x_share",
)
CAP = 20.0  # margins and gaps beyond this say nothing more (and a lone candidate has no rival)


def _key(text: str | None) -> str | None:
    """The answer as exact match sees it (SQuAD normalization: "the Pope" and "Pope." are one answer);
    ``None`` for the no-answer, so a span that normalizes to nothing is not taken for it."""
    return None if text is None else normalize_answer(text)


def answer_features(
    prediction: Prediction,
    answer: Mapping[str, Any],
    span_scoring: str,
    n_windows: int,
    context: str | Sequence[str],
) -> np.ndarray:
    """The :data:`FEATURES` of one answer of ``prediction`` (an answer dict of ``prediction.answers``).

    ``n_windows``: windows of the example (more windows, more chances for a wrong span to look good);
    ``context``: the example's context, or its passages (answers and candidates carry a passage index).
    Example: a lone span with logits 4 + 5 and null logits 0 + 0 -> strength 9, share 1, margin 20.
    """
    squad = span_scoring == "squad"
    is_null = answer["start"] == answer["end"] == 0 and answer["answer"] == ""
    passages = (context,) if isinstance(context, str) else context

    def strength(cand) -> float:
        return cand.start_logit + cand.end_logit if squad else math.log(max(cand.score, 1e-12))

    where = (answer.get("passage", 0), answer["start"], answer["end"])
    match = None
    if not is_null:
        spans = (c for c in prediction.nbest if not c.is_null)
        match = next((c for c in spans if (c.passage, c.start, c.end) == where), None)
    null = next((c for c in prediction.nbest if c.is_null), None)
    null_strength = prediction.null_strength
    if null_strength is None and null is not None:
        null_strength = strength(null)
    bonus = 0.0  # what the passage scorer added to the span (several passages, "squad" mode)
    if match is not None:
        own = strength(match)
        bonus = match.score - own if squad else 0.0
    elif is_null and null is not None:
        own = strength(null)
    else:  # not among the n-best (e.g. a "pipeline" answer merged from several spans)
        own = math.log(max(answer["score"], 1e-12)) if not squad else 0.0

    if squad:
        probs = [c.probability for c in prediction.nbest]
    else:  # the stock scores as shares of their sum
        total = sum(c.score for c in prediction.nbest) or 1.0
        probs = [c.score / total for c in prediction.nbest]
    key = _key(None if is_null else answer["answer"])
    same, overlap, rivals = 0.0, 0.0, []
    for cand, p in zip(prediction.nbest, probs):
        text = None if cand.is_null else passages[cand.passage][cand.start : cand.end]
        if _key(text) == key:
            same += p
        else:
            rivals.append(strength(cand))
        if not (cand.is_null or is_null) and cand.passage == where[0]:
            overlap += p if cand.start < answer["end"] and answer["start"] < cand.end else 0.0
    margin = own - max(rivals) if rivals else CAP
    dist = np.asarray([p for p in probs if p > 0], dtype=np.float64)
    entropy = float(-(dist * np.log(dist)).sum()) if dist.size else 0.0
    null_gap = own - null_strength if null_strength is not None else CAP
    log_score = math.log(max(float(answer["score"]), 1e-12))
    return np.array(
        [
            log_score,
            own,
            same,
            overlap,
            entropy,
            float(np.clip(margin, -CAP, CAP)),
            float(np.clip(null_gap, -CAP, CAP)),
            math.log(max(n_windows, 1)),
            math.log1p(len(answer["answer"].split())),
            float(any(ch.isdigit() for ch in answer["answer"])),
            float(is_null),
            bonus,
            math.log(len(passages)),
            log_score**2,
            own**2,
            same**2,
            log_score * same,
        ]
    )


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow for large |z|


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, steps: int = 50) -> tuple[np.ndarray, float]:
    """L2-regularized logistic regression by Newton steps (the intercept is not penalized).

    Example: separable 1-D data gets a large, finite positive slope (the penalty keeps it finite).
    """
    n, d = x.shape
    a = np.hstack([x, np.ones((n, 1))])
    w = np.zeros(d + 1)
    penalty = np.full(d + 1, l2)
    penalty[-1] = 0.0
    for _ in range(steps):
        p = _sigmoid(a @ w)
        grad = a.T @ (p - y) + penalty * w
        hess = (a * (p * (1 - p))[:, None]).T @ a + np.diag(penalty) + 1e-9 * np.eye(d + 1)
        delta = np.linalg.solve(hess, grad)
        w -= delta
        if np.max(np.abs(delta)) < 1e-8:
            break
    return w[:-1], float(w[-1])


def fit_isotonic(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-decreasing step fit of ``y`` on ``x`` (pool adjacent violators): the knots ``(x, y)`` to
    interpolate between. Example: x ``[1, 2, 3]``, y ``[0, 1, 0]`` -> values ``[0, .5, .5]``."""
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order].astype(np.float64)
    # Merge equal x first, so a knot is one x.
    ux, inverse = np.unique(xs, return_inverse=True)
    sums = np.bincount(inverse, weights=ys)
    counts = np.bincount(inverse).astype(np.float64)
    blocks: list[list[float]] = []  # [sum, count, first x index, last x index]
    for i in range(len(ux)):
        blocks.append([sums[i], counts[i], i, i])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
            s, c, _, last = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
            blocks[-1][3] = last
    knots_x, knots_y = [], []
    for s, c, first, last in blocks:
        for j in {first, last}:
            knots_x.append(ux[j])
            knots_y.append(s / c)
    order = np.argsort(knots_x, kind="stable")
    return np.asarray(knots_x)[order], np.asarray(knots_y)[order]


@dataclass
class Calibrator:
    """A fitted calibrator: standardization, logistic weights, isotonic knots on the logistic output.

    ``span_scoring``: the mode its features were computed in (features differ between modes).
    ``info``: what it was fitted on (questions, accuracy, source), for people reading the JSON.
    """

    span_scoring: str
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    iso_x: np.ndarray | None = None
    iso_y: np.ndarray | None = None
    low: np.ndarray | None = None  # the range of each feature seen in fitting: inputs are clipped to it
    high: np.ndarray | None = None
    features: tuple[str, ...] = FEATURES
    info: dict[str, Any] = field(default_factory=dict)
    # The calibrator of the answers below the top one of a ``top_k`` list (fitted on those): the top one's
    # never saw a span that a stronger one outranks, and gave them ~0.5 where ~0.2 were right.
    others: Calibrator | None = None

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        correct: Sequence[float],
        span_scoring: str,
        *,
        isotonic: bool = False,
        l2: float = 1.0,
        info: Mapping[str, Any] | None = None,
    ) -> Calibrator:
        """Fit on feature rows ``x`` (:func:`answer_features`) and 0/1 ``correct`` (exact match)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(correct, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[1] != len(FEATURES):
            raise QAError(f"calibrator needs ({len(y)}, {len(FEATURES)}) features, got {x.shape}")
        if len(y) < 20 or y.min() == y.max():
            raise QAError(
                f"calibrator needs at least 20 held-out questions with both right and wrong answers "
                f"(got {len(y)}, {int(y.sum())} right)"
            )
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale[scale < 1e-9] = 1.0  # a constant feature (e.g. is_null without SQuAD v2) gets weight ~0
        coef, intercept = fit_logistic((x - mean) / scale, y, l2=l2)
        out = cls(span_scoring, mean, scale, coef, intercept, info=dict(info or {}))
        out.low, out.high = x.min(axis=0), x.max(axis=0)
        if isotonic:
            out.iso_x, out.iso_y = fit_isotonic(out._logistic(x), y)
        out.info.update(questions=len(y), accuracy=float(y.mean()))
        return out

    def _logistic(self, x: np.ndarray) -> np.ndarray:
        if self.low is not None:
            # No extrapolation (the squared terms would run away): e.g. answers over many passages have
            # feature values no single-passage fitting question had.
            x = np.clip(x, self.low, self.high)
        return _sigmoid(((x - self.mean) / self.scale) @ self.coef + self.intercept)

    def predict_answers(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for the feature rows of one ranked answer list: the first row by this calibrator,
        the others by :attr:`others` (this one when there is none)."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        out = self.predict(x)
        if self.others is not None and len(x) > 1:
            out[1:] = self.others.predict(x[1:])
        return out

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for feature rows ``x`` (shape ``(n, len(FEATURES))``)."""
        p = self._logistic(np.atleast_2d(np.asarray(x, dtype=np.float64)))
        if self.iso_x is not None and len(self.iso_x):
            p = np.interp(p, self.iso_x, self.iso_y)
        return np.clip(p, 0.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        iso = None if self.iso_x is None else {"x": self.iso_x.tolist(), "y": self.iso_y.tolist()}
        return {
            "format": FORMAT,
            "span_scoring": self.span_scoring,
            "features": list(self.features),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
            "isotonic": iso,
            "low": None if self.low is None else self.low.tolist(),
            "high": None if self.high is None else self.high.tolist(),
            "info": self.info,
            "others": None if self.others is None else self.others.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibrator:
        if data.get("format") != FORMAT:
            raise QAError(
                f"not a calibrator file of this version (format {data.get('format')!r}, want {FORMAT!r})"
            )
        if tuple(data["features"]) != FEATURES:
            raise QAError(
                f"calibrator features {data['features']} differ from this version's {list(FEATURES)}; "
                "run qa-serving calibrate again"
            )
        iso = data.get("isotonic")
        return cls(
            data["span_scoring"],
            np.asarray(data["mean"], dtype=np.float64),
            np.asarray(data["scale"], dtype=np.float64),
            np.asarray(data["coef"], dtype=np.float64),
            float(data["intercept"]),
            None if iso is None else np.asarray(iso["x"], dtype=np.float64),
            None if iso is None else np.asarray(iso["y"], dtype=np.float64),
            None if data.get("low") is None else np.asarray(data["low"], dtype=np.float64),
            None if data.get("high") is None else np.asarray(data["high"], dtype=np.float64),
            info=dict(data.get("info", {})),
            others=None if data.get("others") is None else cls.from_dict(data["others"]),
        )

    def save(self, model_dir: str | Path) -> Path:
        path = Path(model_dir) / CALIBRATOR_NAME
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path


def load_calibrator(model_dir: str | Path | None) -> Calibrator | None:
    """The calibrator saved in a model folder, ``None`` when it has none (stock output then)."""
    if model_dir is None:
        return None
    path = Path(model_dir) / CALIBRATOR_NAME
    if not path.is_file():
        return None
    try:
        return Calibrator.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as err:
        raise QAError(
            f"{path}: unreadable calibrator ({err}); delete it or run qa-serving calibrate"
        ) from err


def calibrate_prediction(
    prediction: Prediction,
    calibrator: Calibrator,
    n_windows: int,
    context: str | Sequence[str],
    min_probability: float = 0.0,
    rank: bool = False,
) -> Prediction:
    """Add ``probability`` to every answer of ``prediction``; abstain below ``min_probability``.

    ``rank``: re-order the answers by probability (stock scores of several passages do not compare).
    Abstaining replaces the top answer by the stock no-answer (``""``, start = end = 0, score 0) that
    keeps the top answer's ``probability`` (how close it came); the other answers follow it, up to the
    same ``top_k``. An empty answer list (the stock pipeline's, when no span survives) stays empty.
    """
    if not prediction.answers:
        return prediction
    x = np.stack(
        [
            answer_features(prediction, a, calibrator.span_scoring, n_windows, context)
            for a in prediction.answers
        ]
    )
    probs = calibrator.predict_answers(x)
    answers = [{**a, "probability": float(p)} for a, p in zip(prediction.answers, probs)]
    if rank:
        answers.sort(key=lambda a: -a["probability"])
    top = answers[0]
    if min_probability > 0 and top["answer"] and top["probability"] < min_probability:
        from qa_serving.core.postprocess import NO_ANSWER  # postprocess -> windowing -> config -> here

        answers = [{**NO_ANSWER, "probability": top["probability"]}, *answers][: len(answers)]
    prediction.answers = answers
    return prediction


def group_folds(groups: Sequence[str], n_folds: int) -> np.ndarray:
    """The fold of every row: groups (articles) dealt to ``n_folds`` folds in sorted order, a group in one
    fold. Example: groups ``["b", "a", "c", "a"]``, 2 folds -> ``[1, 0, 0, 0]``."""
    if n_folds < 2:
        raise QAError(f"cross-fitting needs 2 or more folds, got {n_folds}")
    names = sorted(set(groups))
    fold_of = {g: i % min(n_folds, len(names)) for i, g in enumerate(names)}
    return np.array([fold_of[g] for g in groups])


def cross_fit(
    x: np.ndarray,
    correct: Sequence[float],
    groups: Sequence[str],
    span_scoring: str,
    n_folds: int = 5,
    **fit_options: Any,
) -> np.ndarray:
    """Out-of-fold probabilities: each question is scored by a calibrator fitted on other groups
    (articles), so the figures measure the calibrator on text it has not seen.

    Groups are dealt to ``n_folds`` folds in sorted order (at most one fold per group).
    Example: 7 articles, ``n_folds=7`` -> leave-one-article-out.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    if len(set(groups)) < 2:
        raise QAError("cross-fitting needs at least 2 groups (articles): give the rows a title")
    fold = group_folds(groups, n_folds)
    out = np.empty(len(y))
    for f in np.unique(fold):
        test = fold == f
        out[test] = Calibrator.fit(x[~test], y[~test], span_scoring, **fit_options).predict(x[test])
    return out
