"""How well a confidence ranks and calibrates answers: ECE, AURC, coverage at a precision, and plots.

Inputs are two arrays over questions: ``confidence`` (a ``score`` or a ``probability``, higher = more
sure) and ``correct`` (1 when the answer is exactly right). Answering only the questions above a
threshold trades *coverage* (share answered) against *risk* (share of the answered that are wrong);
these functions measure that trade-off, so a user can pick ``min_probability`` from the curve.

Deliberate simplifications: ECE uses equal-mass bins (every bin holds about the same number of
questions, so sparse confidence regions do not get one-question bins); ties in confidence are kept
together when sweeping thresholds (a threshold cannot split equal confidences).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from qa_serving.errors import QAError

PRECISIONS = (0.80, 0.90, 0.95)


def _arrays(confidence: Sequence[float], correct: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    if conf.shape != ok.shape or conf.ndim != 1:
        raise QAError(f"confidence and correct must be 1-D of one length, got {conf.shape} and {ok.shape}")
    if conf.size == 0:
        raise QAError("no questions to measure")
    if not np.all(np.isfinite(conf)):
        raise QAError("confidence holds NaN or infinite values")
    return conf, ok


def ece(confidence: Sequence[float], correct: Sequence[float], n_bins: int = 15) -> float:
    """Expected calibration error over ``n_bins`` equal-mass bins: the question-weighted mean of
    ``|mean confidence - accuracy|`` per bin. Only meaningful for a confidence in [0, 1].

    Example: ``ece([0.9, 0.9, 0.1, 0.1], [1, 1, 0, 0], 2)`` -> 0.1.
    """
    conf, ok = _arrays(confidence, correct)
    order = np.argsort(conf, kind="stable")
    total = 0.0
    for idx in np.array_split(order, min(n_bins, conf.size)):
        if idx.size:
            total += idx.size * abs(conf[idx].mean() - ok[idx].mean())
    return float(total / conf.size)


def ece_noise(
    confidence: Sequence[float], n_bins: int = 15, draws: int = 200, seed: int = 0
) -> tuple[float, float]:
    """The ECE a *perfectly* calibrated confidence shows on this many questions, from sampling alone:
    labels drawn as Bernoulli(confidence), (mean, 95th percentile) over ``draws``. An ECE near it cannot
    be told from perfect calibration on this set; a target below it cannot be checked on this set.

    Example: 1,390 questions, confidences uniform over 0.05..0.95 -> about (0.036, 0.048); 2,026 -> (0.029,
    0.039).
    """
    values = ece_noise_draws(confidence, n_bins, draws, seed)
    return float(np.mean(values)), float(np.percentile(values, 95))


def ece_noise_draws(confidence: Sequence[float], n_bins: int = 15, draws: int = 200, seed: int = 0) -> np.ndarray:
    """The ECE of each of ``draws`` label sets drawn as Bernoulli(confidence) (:func:`ece_noise`): e.g. how
    often a perfectly calibrated confidence would meet an ECE target on this many questions."""
    conf, _ = _arrays(confidence, np.zeros(len(confidence)))
    rng = np.random.default_rng(seed)
    return np.array([ece(conf, (rng.random(conf.size) < conf).astype(np.float64), n_bins) for _ in range(draws)])


def reliability(
    confidence: Sequence[float], correct: Sequence[float], n_bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-mass bin: (mean confidence, accuracy, question count), for the reliability diagram."""
    conf, ok = _arrays(confidence, correct)
    bins = [b for b in np.array_split(np.argsort(conf, kind="stable"), min(n_bins, conf.size)) if b.size]
    return (
        np.array([conf[b].mean() for b in bins]),
        np.array([ok[b].mean() for b in bins]),
        np.array([b.size for b in bins]),
    )


def risk_coverage(
    confidence: Sequence[float], correct: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The risk-coverage curve: answering every question whose confidence is >= a threshold, for each
    distinct threshold from the highest down: ``(coverage, risk, threshold)``.

    Example: ``risk_coverage([0.9, 0.5, 0.5], [1, 0, 1])`` -> coverage ``[1/3, 1]``, risk ``[0, 1/3]``.
    """
    conf, ok = _arrays(confidence, correct)
    order = np.argsort(-conf, kind="stable")
    conf, ok = conf[order], ok[order]
    # Keep ties together: a threshold answers all questions of one confidence or none of them.
    last = np.r_[conf[1:] != conf[:-1], True]
    answered = np.arange(1, conf.size + 1)[last]
    right = np.cumsum(ok)[last]
    return answered / conf.size, 1.0 - right / answered, conf[last]


def aurc(confidence: Sequence[float], correct: Sequence[float]) -> float:
    """Area under the risk-coverage curve (lower is better): the mean, over coverages 1/n..1, of the
    risk of answering that many most-confident questions (ties spread evenly).

    Example: a perfect ranking of 2 right and 2 wrong answers -> (0 + 0 + 1/3 + 1/2) / 4 = 0.208.
    """
    conf, ok = _arrays(confidence, correct)
    coverage, risk, _ = risk_coverage(conf, ok)
    n = conf.size
    counts = np.round(coverage * n).astype(np.int64)
    errors = risk * counts
    # Within a block of tied confidences, the i-th question adds the block's mean error rate.
    prev_counts = np.r_[0, counts[:-1]]
    prev_errors = np.r_[0.0, errors[:-1]]
    total = 0.0
    for c0, c1, e0, e1 in zip(prev_counts, counts, prev_errors, errors):
        k = np.arange(c0 + 1, c1 + 1)
        total += float(np.sum((e0 + (k - c0) * (e1 - e0) / (c1 - c0)) / k))
    return total / n


def coverage_at_precision(confidence: Sequence[float], correct: Sequence[float], precision: float) -> float:
    """The largest share of questions answerable with at least ``precision`` of them right, answering
    the most confident first (0 when even the most confident fall short).

    Example: ``coverage_at_precision([0.9, 0.8, 0.1], [1, 1, 0], 0.9)`` -> 2/3.
    """
    coverage, risk, _ = risk_coverage(confidence, correct)
    ok = (1.0 - risk) >= precision - 1e-12
    return float(coverage[ok].max()) if ok.any() else 0.0


def threshold_at_precision(
    confidence: Sequence[float], correct: Sequence[float], precision: float
) -> float | None:
    """The confidence threshold that reaches :func:`coverage_at_precision` (``None``: none does); a
    ``min_probability`` to try on a held-out set."""
    coverage, risk, threshold = risk_coverage(confidence, correct)
    ok = (1.0 - risk) >= precision - 1e-12
    return float(threshold[ok][np.argmax(coverage[ok])]) if ok.any() else None


def selective_report(
    confidence: Sequence[float],
    correct: Sequence[float],
    precisions: Sequence[float] = PRECISIONS,
    floor: bool = False,
) -> dict[str, float]:
    """ECE, AURC and coverage at each precision, as one flat dict (keys ``ece``, ``aurc``,
    ``coverage@80``...). ECE is left out (NaN) for a confidence outside [0, 1].

    ``floor``: also ``ece_floor`` and ``ece_floor_p95``, the ECE a perfectly calibrated confidence shows on
    these questions (:func:`ece_noise`), to read ``ece`` against: on 2,000 questions it is ~0.025, so an
    ECE of 0.03 there says little more than "calibrated"."""
    conf, ok = _arrays(confidence, correct)
    in_unit = bool(np.all((conf >= 0) & (conf <= 1)))
    out = {"ece": ece(conf, ok) if in_unit else float("nan"), "aurc": aurc(conf, ok)}
    if floor and in_unit:
        out["ece_floor"], out["ece_floor_p95"] = ece_noise(conf)
    for p in precisions:
        out[f"coverage@{round(p * 100)}"] = coverage_at_precision(conf, ok, p)
    out["mean_confidence"] = float(conf.mean())
    out["accuracy"] = float(ok.mean())
    return out


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:  # optional: only the plots need it
        raise QAError("plots need matplotlib: pip install 'qa-serving[bench]' (or matplotlib)") from err
    return plt


def plot_reliability(curves: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | Path) -> Path:
    """Reliability diagram (accuracy vs mean confidence per equal-mass bin), one line per confidence
    ``{name: (confidence, correct)}``; written as PNG."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    for name, (conf, ok) in curves.items():
        mean, acc, _ = reliability(conf, ok)
        ax.plot(mean, acc, marker="o", label=f"{name} (ECE {ece(conf, ok):.3f})")
    ax.set(xlabel="mean confidence", ylabel="exact match", xlim=(0, 1), ylim=(0, 1), title="Reliability")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_risk_coverage(curves: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | Path) -> Path:
    """Risk-coverage curves (share wrong among the answered vs share answered), one line per
    confidence, with the 80/90/95% precision levels marked; written as PNG."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, (conf, ok) in curves.items():
        coverage, risk, _ = risk_coverage(conf, ok)
        ax.plot(coverage, risk, label=f"{name} (AURC {aurc(conf, ok):.3f})")
    for p in PRECISIONS:
        ax.axhline(1 - p, color="grey", linestyle=":", linewidth=0.8)
    ax.set(
        xlabel="coverage (share answered)",
        ylabel="risk (share of answers wrong)",
        xlim=(0, 1),
        ylim=(0, None),
        title="Risk-coverage",
    )
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
