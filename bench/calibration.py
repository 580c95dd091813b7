"""Issue 21 on real held-out questions: how well ``score`` and ``probability`` rank and calibrate answers,
and answers over several passages per question.

Calibration is cross-fitted by article (leave-one-article-out by default): every question is scored by a
calibrator fitted on the *other* articles, so no figure is measured on the questions or the text the
calibrator saw. Rows: the stock ``score``; an isotonic fit of the score alone (the issue's baseline);
``probability`` fitted on single paragraphs only, and as shipped (single paragraphs + the five-passage
rows of the other articles, as ``qa-serving calibrate`` fits it); with an isotonic step; boosted trees
(headroom check, not shipped). Also printed: the ECE a perfectly calibrated confidence would show on
this many questions (``selective.ece_noise``).

Passages: for each question, its gold paragraph plus ``--passages - 1`` other paragraphs of the same
article (seeded, ``qa_serving.data.calibrate.passage_sets``). Compared: the gold paragraph alone; the
stock way (each (question, passage) pair answered alone, the highest ``score`` kept); ``passages=`` with
start + end logits only and with the default match term, with ``probability`` from either calibrator.
Prints markdown tables naming the CPU and writes them, a JSON file and the two PNGs under ``--out``, and
``features.npz`` (every question's calibrator features and label: ``bench/calibration_draws.py``).

    python -m bench.calibration --model runs/squad_v1_minilm/model \\
        --eval-file runs/squad_v1_minilm/eval.json --passage-questions 500 --cache /tmp/cal
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/calibration.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

PCT = lambda v: f"{100 * v:.1f}%"


def exact(prediction: str, golds: list[str]) -> float:
    from qa_serving.data.metrics import exact_match_score

    return float(any(exact_match_score(prediction, g) for g in golds))


def answer_all(backend, tokenizer, examples, config, cache: Path | None, name: str):
    """Answers without a calibrator (the bench fits its own, cross-fitted); cached when asked, so the
    calibrator can be studied without running the model again."""
    from qa_serving.core.answering import answer

    path = cache / f"{name}.pkl" if cache else None
    if path is not None and path.is_file():
        return pickle.loads(path.read_bytes())
    started = time.perf_counter()
    config = dataclasses.replace(config, calibrator=None)
    out = (answer(backend, tokenizer, examples, config, chunk_size=256), time.perf_counter() - started)
    if path is not None:
        path.write_bytes(pickle.dumps(out))
    return out


def mixed_cross_fit(single, multi, mode, n_folds, **fit_options) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold probabilities for single-paragraph rows and several-passage rows, each from a
    calibrator fitted on both kinds of rows of the *other* articles (what ``qa-serving calibrate`` fits):
    ``cross_fit`` over the rows of both kinds. ``single``/``multi``: (features, correct, titles)."""
    from qa_serving.core.calibration import cross_fit

    (xs, ys, ts), (xm, ym, tm) = single, multi
    out = cross_fit(np.vstack([xs, xm]), np.r_[ys, ym], [*ts, *tm], mode, n_folds=n_folds, **fit_options)
    return out[: len(ys)], out[len(ys) :]


def calibration_table(x, score, ok, titles, mode, n_folds, multi) -> tuple[list[dict], dict]:
    from qa_serving.core.calibration import cross_fit, fit_isotonic, group_folds
    from qa_serving.data.selective import selective_report

    rows, curves = [], {}

    def add(name, conf):
        rows.append({"confidence": name, **selective_report(conf, ok)})
        curves[name] = (conf, ok)

    add("stock score", score)
    fold = group_folds(titles, n_folds)
    iso = np.empty(len(score))
    for f in np.unique(fold):  # the baseline: isotonic regression of the score alone
        kx, ky = fit_isotonic(score[fold != f], ok[fold != f])
        iso[fold == f] = np.interp(score[fold == f], kx, ky)
    add("isotonic(score)", iso)
    add("probability, fitted on single paragraphs only", cross_fit(x, ok, titles, mode, n_folds=n_folds))
    add("probability (shipped: + 5-passage rows)", mixed_cross_fit((x, ok, titles), multi, mode, n_folds)[0])
    add("logistic + isotonic step", cross_fit(x, ok, titles, mode, n_folds=n_folds, isotonic=True))
    try:  # headroom check: a non-linear model on the same features (not shipped: not a JSON of numbers)
        from sklearn.ensemble import HistGradientBoostingClassifier
    except ImportError:
        return rows, curves
    gbm = np.empty(len(ok))
    for f in np.unique(fold):
        model = HistGradientBoostingClassifier(
            max_iter=150, learning_rate=0.05, max_depth=3, min_samples_leaf=30
        )
        gbm[fold == f] = model.fit(x[fold != f], ok[fold != f]).predict_proba(x[fold == f])[:, 1]
    add("boosted trees, same features (sklearn; not shipped)", gbm)
    return rows, curves


def passages_table(args, backend, tokenizer, config, rows, x, ok, n_folds, cache):
    """The several-passage table, and the several-passage rows ``(features, correct, titles)`` of the
    default ranking (what ``qa-serving calibrate`` adds to its fit)."""
    from qa_serving.core.answering import Example
    from qa_serving.core.calibration import Calibrator, answer_features, group_folds
    from qa_serving.data.calibrate import passage_sets
    from qa_serving.data.selective import selective_report

    mode = config.span_scoring
    titles, golds = list(rows["title"]), [a["text"] for a in rows["answers"]]
    sets = passage_sets(titles, list(rows["context"]), args.passages, args.seed)
    pick = np.arange(len(sets))
    if args.passage_questions and args.passage_questions < len(sets):  # a seeded sample of questions
        pick = np.sort(
            np.random.default_rng(args.seed).choice(len(sets), args.passage_questions, replace=False)
        )
    questions = [rows["question"][i] for i in pick]
    pairs = [Example(q, p) for q, i in zip(questions, pick) for p in sets[i][0]]
    pair_preds, pair_seconds = answer_all(backend, tokenizer, pairs, config, cache, f"pairs{len(pick)}")
    fold = group_folds(titles, n_folds)
    single_only = {f: Calibrator.fit(x[fold != f], ok[fold != f], mode) for f in np.unique(fold)}
    stock_ok = []
    for j, i in enumerate(pick):
        k = len(sets[i][0])
        own = pair_preds[j * k : (j + 1) * k]
        best_pair = max(range(k), key=lambda m: own[m].best["score"])
        stock_ok.append(exact(own[best_pair].best["answer"], golds[i]))
    gold_em = float(ok[pick].mean())
    table = [
        {"how": "gold paragraph alone", "em": gold_em},
        {
            "how": f"stock: each (question, passage) alone, highest score ({args.passages} passages)",
            "em": float(np.mean(stock_ok)),
            "seconds": pair_seconds,
        },
    ]
    found, multi_rows = {}, None
    for weight, label in ((0.0, "start + end logits only"), (None, "logits + match (default)")):
        options = {"top_k": 5} if weight is None else {"top_k": 5, "passage_match_weight": weight}
        examples = [Example(q, "", options, sets[i][0]) for q, i in zip(questions, pick)]
        name = f"multi{len(pick)}" + ("" if weight is None else f"w{weight:g}")
        multi, seconds = answer_all(backend, tokenizer, examples, config, cache, name)
        top_ok = np.array([exact(m.answers[0]["answer"], golds[i]) for m, i in zip(multi, pick)])
        xm = np.stack(
            [answer_features(m, m.answers[0], mode, m.windows, sets[i][0]) for m, i in zip(multi, pick)]
        )
        p_single = np.array([single_only[fold[i]].predict(xm[j : j + 1])[0] for j, i in enumerate(pick)])
        found[label] = 100 * np.mean([m.answers[0].get("passage") == sets[i][1] for m, i in zip(multi, pick)])
        table.append(
            {
                "how": f"passages=: {label}; probability fitted on single paragraphs",
                "em": float(top_ok.mean()),
                "seconds": seconds,
                **selective_report(p_single, top_ok),
            }
        )
        if weight is None:
            multi_rows = (xm, top_ok, [titles[i] for i in pick])
            _, p_mixed = mixed_cross_fit((x, ok, titles), multi_rows, mode, n_folds)
            table.append(
                {
                    "how": f"passages=: {label}; probability (shipped: + 5-passage rows of other articles)",
                    "em": float(top_ok.mean()),
                    **selective_report(p_mixed, top_ok),
                }
            )
    for r in table:
        r["ratio"] = r["em"] / gold_em
    note = (
        f"{len(pick)} questions (seeded sample of {len(sets)}), each with its gold paragraph and "
        f"{args.passages - 1} other paragraphs of its article in random order (seed {args.seed}). The top "
        "answer is in the gold paragraph for "
        + ", ".join(f"{v:.1f}% ({k})" for k, v in found.items())
        + ". Every probability is from calibrators fitted on other articles only."
    )
    return table, note, multi_rows


def others_table(preds, rows, mode, n_folds, x, ok, cols) -> str:
    """The answers below the top one of each question's top 5: probability from the top answers'
    calibrator as is, and from the calibrator fitted on such answers (shipped), both cross-fitted."""
    from qa_serving.core.calibration import Calibrator, answer_features, cross_fit, group_folds
    from qa_serving.data.selective import selective_report
    from qa_serving.tables import markdown_table

    titles = list(rows["title"])
    xo, oo, to = [], [], []
    for p, c, a, t in zip(preds, rows["context"], rows["answers"], titles):
        for other in p.answers[1:]:
            xo.append(answer_features(p, other, mode, p.windows, c))
            oo.append(exact(other["answer"], a["text"]))
            to.append(t)
    xo, oo = np.stack(xo), np.array(oo)
    fold, fo = group_folds(titles, n_folds), group_folds(to, n_folds)
    as_is = np.empty(len(oo))
    for f in np.unique(fo):
        as_is[fo == f] = Calibrator.fit(x[fold != f], ok[fold != f], mode).predict(xo[fo == f])
    own = cross_fit(xo, oo, to, mode, n_folds=n_folds)
    table = [
        {"confidence": "top answers' calibrator, as is", **selective_report(as_is, oo)},
        {"confidence": "calibrator of the other answers (shipped)", **selective_report(own, oo)},
    ]
    head = f"The {len(oo)} answers ranked 2-5 of the same questions (top_k=5), cross-fitted by article:"
    return head + "\n\n" + markdown_table(table, cols)


def main(argv: list[str] | None = None) -> int:
    from qa_serving.core.answering import Example
    from qa_serving.core.backends import load_backend
    from qa_serving.core.calibration import FEATURES, Calibrator, answer_features
    from qa_serving.core.config import QAConfig
    from qa_serving.core.hardware import available_cpus, cpu_model
    from qa_serving.core.windowing import load_tokenizer
    from qa_serving.data.loading import load_examples
    from qa_serving.data.selective import ece_noise, plot_reliability, plot_risk_coverage
    from qa_serving.tables import Column, markdown_table

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--eval-file", required=True, help="held-out SQuAD questions (articles not trained on)")
    ap.add_argument("--passages", type=int, default=5, help="passages per question (default: 5)")
    ap.add_argument(
        "--passage-questions", type=int, default=0, help="questions for the passage test (0: all)"
    )
    ap.add_argument(
        "--folds", type=int, default=0, help="cross-fitting folds by article (0: one per article)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=None, help="keep the model's answers here (re-runs skip the model)")
    ap.add_argument("--out", default="bench/results/calibration")
    args = ap.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(args.cache) if args.cache else None
    if cache:
        cache.mkdir(parents=True, exist_ok=True)
    backend = load_backend(args.model, backend="torch", device="cpu", dtype="fp32")
    tokenizer = load_tokenizer(args.model)
    config = QAConfig.from_model_dir(args.model)
    mode = config.span_scoring
    rows = load_examples(args.eval_file)
    titles = list(rows["title"])
    n_folds = args.folds or len(set(titles))

    # Top 5 answers per question: the top one is the same as with top_k=1 ("squad" mode), the others
    # measure Calibrator.others.
    examples = [Example(q, c, {"top_k": 5}) for q, c in zip(rows["question"], rows["context"])]
    preds, seconds = answer_all(backend, tokenizer, examples, config, cache, "single5")
    x = np.stack([answer_features(p, p.best, mode, p.windows, c) for p, c in zip(preds, rows["context"])])
    score = np.array([p.best["score"] for p in preds])
    ok = np.array([exact(p.best["answer"], a["text"]) for p, a in zip(preds, rows["answers"])])
    ptable, note, multi_rows = passages_table(args, backend, tokenizer, config, rows, x, ok, n_folds, cache)
    table, curves = calibration_table(x, score, ok, titles, mode, n_folds, multi_rows)
    xm, ym, tm = multi_rows  # the rows for bench/calibration_draws.py (no model needed there)
    np.savez_compressed(
        out / "features.npz", x=x, score=score, ok=ok, titles=np.array(titles), xm=xm, ym=ym, tm=np.array(tm),
        span_scoring=np.array(mode),
    )
    coef = Calibrator.fit(np.vstack([x, multi_rows[0]]), np.r_[ok, multi_rows[1]], mode)

    cols = [
        Column("confidence", "confidence", align="left"),
        Column("mean_confidence", "mean", ".3f"),
        Column("accuracy", "EM", PCT),
        Column("ece", "ECE (15 bins)", ".3f"),
        Column("aurc", "AURC", ".4f"),
        Column("coverage@80", "coverage @80%", PCT),
        Column("coverage@90", "coverage @90%", PCT),
        Column("coverage@95", "coverage @95%", PCT),
    ]
    cpu = f"{cpu_model()}, {available_cpus()} CPUs (shared)"
    head = (
        f"Model `{args.model}` ({mode} span scoring), {len(ok)} held-out questions of {len(set(titles))} "
        f"articles; calibrators cross-fitted over {n_folds} folds by article (each question scored by a "
        f"calibrator fitted on other articles). {len(ok)} questions answered in {seconds:.0f} s. CPU: {cpu}."
    )
    weights = ", ".join(f"{n} {w:+.2f}" for n, w in zip(FEATURES, coef.coef))
    report = [
        head,
        "",
        markdown_table(table, cols),
        "",
        f"Standardized logistic weights (all rows): {weights}.",
    ]
    shown = {k: v for k, v in curves.items() if k in ("stock score", "isotonic(score)")}
    shown["probability"] = curves["probability (shipped: + 5-passage rows)"]
    plot_reliability(shown, out / "reliability.png")
    plot_risk_coverage(shown, out / "risk_coverage.png")

    pcols = [
        Column("how", "answering", align="left"),
        Column("em", "EM", PCT),
        Column("ratio", "EM / gold-alone EM", ".3f"),
        Column("ece", "ECE of probability", ".3f"),
        Column("aurc", "AURC", ".4f"),
        Column("coverage@80", "coverage @80%", PCT),
        Column("seconds", "seconds", ".0f"),
    ]
    report += ["", note, "", markdown_table(ptable, pcols)]
    report += ["", others_table(preds, rows, mode, n_folds, x, ok, cols)]
    noise, noise95 = ece_noise(curves["probability (shipped: + 5-passage rows)"][0])
    report.insert(
        3,
        f"ECE from sampling alone: a perfectly calibrated confidence distributed as `probability` shows ECE "
        f"{noise:.3f} on average on {len(ok)} questions (95th percentile {noise95:.3f}; labels drawn from "
        "the confidences, `selective.ece_noise`).\n",
    )
    text = "\n".join(report)
    print(text)
    (out / "calibration.md").write_text(text + "\n")
    payload = {"head": head, "calibration": table, "passages": ptable, "passages_note": note}
    (out / "calibration.json").write_text(json.dumps(payload, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
