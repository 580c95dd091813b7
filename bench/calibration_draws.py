"""Issue 21's check as its filer runs it: a calibrator fitted on the articles of an evaluation split (as the
end of ``qa-serving train`` fits it), scored on questions of *other* articles, about as many as the check
has (2,026); repeated over seeded random draws of which articles fit and which are scored, because one
draw of ~2,000 questions decides little (``selective.ece_noise``).

Reads the ``features.npz`` of ``bench/calibration.py`` runs (one per reader; no model runs here). Per draw:
``--fit-articles`` articles of a run fit the shipped calibrator (their single-paragraph rows and their
several-passage rows, as ``fit_calibrator``); its other articles are scored. Printed per run: the share of
draws meeting each target, and the distribution of ECE beside the ECE a perfectly calibrated confidence
shows on the same questions (its sampling floor).

    python -m bench.calibration_draws bench/results/calibration_half_minilm --fit-articles 7 --draws 200
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python bench/calibration_draws.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

TARGETS = {"ece": 0.03, "coverage@80": 0.50}  # issue 21; AURC: below the stock score's


def load_run(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "features.npz") as f:
        return {k: f[k] for k in f.files}


def shift_to_level(prob: np.ndarray, target: float) -> np.ndarray:
    """``prob`` moved by one log-odds offset so that its mean is ``target`` (bisection): the same ranking
    and shape, another level of accuracy."""
    logit = np.log(np.clip(prob, 1e-9, 1 - 1e-9)) - np.log(np.clip(1 - prob, 1e-9, 1))
    lo, hi = -10.0, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.mean(1 / (1 + np.exp(-(logit + mid)))) < target else (lo, mid)
    return 1 / (1 + np.exp(-(logit + (lo + hi) / 2)))


def one_draw(run: dict[str, np.ndarray], fit_titles: set[str]) -> dict[str, float]:
    """Fit on the rows of ``fit_titles``' articles, score the single-paragraph rows of the others.

    ``ece_all_level``: the ECE once the calibrator's level of accuracy is that of *all* the run's articles
    (its probabilities moved by one offset so their mean over every question is the accuracy): about what a
    calibrator fitted on many articles would show, i.e. how much of the ECE is the level the fitted
    articles taught. ``ece_own_level``: the same at the scored articles' own accuracy (an oracle: what is
    left is shape and sampling)."""
    from qa_serving.core.calibration import Calibrator
    from qa_serving.data.selective import ece, ece_noise_draws, selective_report

    fit = np.isin(run["titles"], list(fit_titles))
    fit_m = np.isin(run["tm"], list(fit_titles))
    calibrator = Calibrator.fit(
        np.vstack([run["x"][fit], run["xm"][fit_m]]), np.r_[run["ok"][fit], run["ym"][fit_m]], str(run["span_scoring"])
    )
    scored = ~fit
    ok = run["ok"][scored]
    prob = calibrator.predict(run["x"][scored])
    p, s = selective_report(prob, ok), selective_report(run["score"][scored], ok)
    every = shift_to_level(calibrator.predict(run["x"]), float(run["ok"].mean()))
    perfect = ece_noise_draws(prob, draws=40)  # a perfectly calibrated probability on the same questions
    return {
        "questions": float(scored.sum()),
        "ece": p["ece"],
        "floor": float(perfect.mean()),
        "perfect_met": float(np.mean(perfect <= TARGETS["ece"])),
        "ece_all_level": ece(every[scored], ok),
        "ece_own_level": ece(shift_to_level(prob, float(ok.mean())), ok),
        "score_ece": s["ece"],
        "aurc": p["aurc"],
        "score_aurc": s["aurc"],
        "coverage@80": p["coverage@80"],
        "score_coverage@80": s["coverage@80"],
        "accuracy": p["accuracy"],
    }


def draws(run: dict[str, np.ndarray], fit_articles: int, n: int, seed: int) -> list[dict[str, float]]:
    titles = sorted(set(run["titles"].tolist()))
    if fit_articles >= len(titles):
        raise SystemExit(f"--fit-articles {fit_articles}: the run has only {len(titles)} articles")
    rng = np.random.default_rng(seed)
    return [one_draw(run, set(rng.choice(titles, fit_articles, replace=False).tolist())) for _ in range(n)]


def summary(name: str, rows: list[dict[str, float]]) -> dict[str, object]:
    col = lambda k: np.array([r[k] for r in rows])
    ece, floor = col("ece"), col("floor")
    return {
        "run": name,
        "questions": col("questions").mean(),
        "em": col("accuracy").mean(),
        "ece": f"{np.median(ece):.3f} ({np.percentile(ece, 5):.3f}-{np.percentile(ece, 95):.3f})",
        "floor": f"{np.median(floor):.3f}",
        "ece_met": np.mean(ece <= TARGETS["ece"]),
        "perfect_met": col("perfect_met").mean(),
        "all_level_met": np.mean(col("ece_all_level") <= TARGETS["ece"]),
        "own_level_met": np.mean(col("ece_own_level") <= TARGETS["ece"]),
        "excess": np.median(ece - floor),
        "score_ece": np.median(col("score_ece")),
        "aurc_met": np.mean(col("aurc") < col("score_aurc")),
        "aurc": f"{np.median(col('aurc')):.4f} vs {np.median(col('score_aurc')):.4f}",
        "cov": f"{100 * np.median(col('coverage@80')):.1f}% vs {100 * np.median(col('score_coverage@80')):.1f}%",
        "cov_met": np.mean(col("coverage@80") >= TARGETS["coverage@80"]),
    }


def main(argv: list[str] | None = None) -> int:
    from qa_serving.core.hardware import cpu_model
    from qa_serving.tables import Column, markdown_table

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="folders of bench/calibration.py runs (their features.npz)")
    ap.add_argument("--fit-articles", type=int, default=7, help="articles the calibrator is fitted on (default: 7, "
                    "the evaluation split of the 36-article file)")
    ap.add_argument("--draws", type=int, default=200, help="random article draws per run (default: 200)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the table here (markdown)")
    args = ap.parse_args(argv)

    table, everything = [], []
    for i, folder in enumerate(args.runs):
        rows = draws(load_run(Path(folder)), args.fit_articles, args.draws, args.seed + i)
        everything += rows
        table.append(summary(Path(folder).name, rows))
    if len(args.runs) > 1:
        table.append(summary("all runs", everything))
    pct = lambda v: f"{100 * v:.0f}%"
    cols = [
        Column("run", "run", align="left"),
        Column("questions", "questions scored", ".0f"),
        Column("em", "EM", lambda v: f"{100 * v:.1f}"),
        Column("ece", "ECE of probability: median (5-95%)", align="left"),
        Column("floor", "perfect calibration's ECE", align="left"),
        Column("excess", "median excess", ".3f"),
        Column("ece_met", "draws ECE <= 0.03", pct),
        Column("perfect_met", "(perfect calibration: ECE <= 0.03)", pct),
        Column("all_level_met", "(at all articles' level: ECE <= 0.03)", pct),
        Column("own_level_met", "(at the scored articles' level, an oracle)", pct),
        Column("score_ece", "score's ECE", ".3f"),
        Column("aurc", "AURC: probability vs score", align="left"),
        Column("aurc_met", "draws AURC below", pct),
        Column("cov", "coverage @80%: probability vs score", align="left"),
        Column("cov_met", "draws >= 50%", pct),
    ]
    text = (
        f"Calibrator fitted on {args.fit_articles} random articles of each run (single-paragraph + 5-passage rows), "
        f"scored on the run's other articles; {args.draws} seeded draws per run. CPU: {cpu_model()} (no model "
        "runs here).\n\n" + markdown_table(table, cols)
    )
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
