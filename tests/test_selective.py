"""ECE, AURC and coverage at a precision against plain-loop references written here."""

from __future__ import annotations

import numpy as np
import pytest

from qa_serving.data import selective
from qa_serving.errors import QAError


def _loop_aurc(conf, ok):
    # Reference: average risk over coverages k/n, ties broken by every order of the tie (expected value).
    conf, ok = np.asarray(conf, float), np.asarray(ok, float)
    n = len(conf)
    total = 0.0
    for k in range(1, n + 1):
        thresh = np.sort(conf)[::-1][k - 1]
        above = conf > thresh
        tied = conf == thresh
        need = k - above.sum()
        errors = (1 - ok[above]).sum() + need * (1 - ok[tied]).mean()
        total += errors / k
    return total / n


def _loop_coverage(conf, ok, precision):
    best = 0.0
    for t in sorted(set(conf)):
        pick = [c >= t for c in conf]
        right = sum(o for o, p in zip(ok, pick) if p)
        if right / sum(pick) >= precision:
            best = max(best, sum(pick) / len(conf))
    return best


@pytest.mark.parametrize("seed", range(5))
def test_against_loops(seed):
    rng = np.random.default_rng(seed)
    conf = np.round(rng.random(60), 1)  # many ties
    ok = (rng.random(60) < conf).astype(float)
    assert selective.aurc(conf, ok) == pytest.approx(_loop_aurc(conf, ok))
    for p in (0.5, 0.8, 0.9):
        assert selective.coverage_at_precision(conf, ok, p) == pytest.approx(_loop_coverage(conf, ok, p))


def test_golden_cases():
    assert selective.ece([0.9, 0.9, 0.1, 0.1], [1, 1, 0, 0], n_bins=2) == pytest.approx(0.1)
    assert selective.aurc([4, 3, 2, 1], [1, 1, 0, 0]) == pytest.approx((0 + 0 + 1 / 3 + 1 / 2) / 4)
    assert selective.coverage_at_precision([0.9, 0.8, 0.1], [1, 1, 0], 0.9) == pytest.approx(2 / 3)
    assert selective.coverage_at_precision([0.9, 0.8], [0, 1], 0.9) == 0.0
    cov, risk, _ = selective.risk_coverage([0.9, 0.5, 0.5], [1, 0, 1])
    np.testing.assert_allclose(cov, [1 / 3, 1])
    np.testing.assert_allclose(risk, [0, 1 / 3])
    assert selective.threshold_at_precision([0.9, 0.8, 0.1], [1, 1, 0], 0.9) == 0.8


def test_ece_noise_is_what_perfect_calibration_shows_and_shrinks_with_questions():
    rng = np.random.default_rng(3)
    small, large = rng.uniform(0.05, 0.95, 300), rng.uniform(0.05, 0.95, 3000)
    mean_small, p95_small = selective.ece_noise(small, draws=100)
    mean_large, _ = selective.ece_noise(large, draws=100)
    assert mean_small < p95_small
    assert mean_large < mean_small / 2  # ~1/sqrt(n): 10x the questions, ~1/3 the noise
    # Labels drawn from the confidences themselves land around the noise, not at 0.
    perfect = [selective.ece(large, rng.random(large.size) < large) for _ in range(20)]
    assert 0.5 * mean_large < np.mean(perfect) < 1.5 * mean_large
    # A confidence that is off by 0.2 everywhere shows far more than the noise.
    assert selective.ece(np.clip(large + 0.2, 0, 1), rng.random(large.size) < large) > 5 * mean_large
    # The draws behind the mean: how often perfect calibration meets a target set near the floor.
    draws = selective.ece_noise_draws(small, draws=100)
    assert draws.shape == (100,) and draws.mean() == pytest.approx(mean_small)
    assert 0.2 < np.mean(draws <= mean_small) < 0.8


def test_report_and_errors(tmp_path):
    report = selective.selective_report([0.2, 0.7, 0.9], [0, 1, 1])
    assert report["coverage@80"] == pytest.approx(2 / 3) and report["ece"] >= 0
    assert np.isnan(selective.selective_report([2.0, 3.0], [0, 1])["ece"])  # not a probability
    assert "ece_floor" not in report and "ece_floor" not in selective.selective_report([2.0, 3.0], [0, 1], floor=True)


def test_report_floor_is_what_perfect_calibration_shows_on_these_questions():
    rng = np.random.default_rng(3)
    conf = rng.uniform(0.05, 0.95, 600)
    report = selective.selective_report(conf, rng.random(600) < conf, floor=True)
    assert (report["ece_floor"], report["ece_floor_p95"]) == pytest.approx(selective.ece_noise(conf))
    assert 0.02 < report["ece_floor"] < report["ece_floor_p95"] < 0.1  # ~0.05 on 600 questions
    # Sharper confidences (near 0 and 1) leave less room for sampling noise: a lower floor.
    sharp = selective.selective_report(np.where(conf > 0.5, 0.97, 0.03), rng.random(600) < 0.5, floor=True)
    assert sharp["ece_floor"] < report["ece_floor"] / 2
    with pytest.raises(QAError):
        selective.ece([], [])
    with pytest.raises(QAError):
        selective.aurc([0.1, float("nan")], [0, 1])


def test_plots(tmp_path):
    pytest.importorskip("matplotlib")
    curves = {"score": ([0.1, 0.5, 0.9, 0.3], [0, 1, 1, 0])}
    assert selective.plot_reliability(curves, tmp_path / "r.png").stat().st_size > 1000
    assert selective.plot_risk_coverage(curves, tmp_path / "c.png").stat().st_size > 1000
