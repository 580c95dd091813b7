"""The calibrator: features from a Prediction, fit/predict, JSON round trip, abstention."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qa_serving.core import calibration as cal
from qa_serving.core.postprocess import Candidate, Prediction
from qa_serving.errors import QAError


def _prediction() -> Prediction:
    context = "Ada Lovelace wrote the first program in 1843."
    nbest = [
        Candidate(9.0, 4.0, 5.0, 0, 12, probability=0.7),  # "Ada Lovelace"
        Candidate(7.0, 4.0, 3.0, 0, 3, probability=0.2),  # "Ada"
        Candidate(6.0, 3.0, 3.0, 0, 12, probability=0.1),  # "Ada Lovelace" again (other window)
    ]
    answers = [{"answer": "Ada Lovelace", "score": 0.6, "start": 0, "end": 12}]
    p = Prediction(answers=answers, null_score_diff=None, nbest=nbest)
    return p, context


def test_features_by_hand():
    p, context = _prediction()
    f = dict(zip(cal.FEATURES, cal.answer_features(p, p.answers[0], "squad", 2, context)))
    assert f["strength"] == 9.0
    assert f["share"] == pytest.approx(0.8)  # both "Ada Lovelace" candidates
    assert f["margin"] == pytest.approx(2.0)  # 9 - 7 ("Ada")
    assert f["null_gap"] == cal.CAP  # no null strength known
    assert f["log_windows"] == pytest.approx(np.log(2))
    assert f["log_words"] == pytest.approx(np.log(3))
    assert f["log_score"] == pytest.approx(np.log(0.6))
    assert f["is_null"] == 0.0
    assert f["match"] == 0.0 and f["log_passages"] == 0.0  # one passage: no match term
    # A lone candidate has no rival: the margin is capped.
    lone = Prediction(p.answers, None, p.nbest[:1])
    assert (
        dict(zip(cal.FEATURES, cal.answer_features(lone, p.answers[0], "squad", 1, context)))["margin"]
        == cal.CAP
    )


def test_passage_features_by_hand():
    # Over several passages the span's score holds its match bonus on top of its logits.
    passages = ("Rain fell.", "Ada Lovelace wrote the first program in 1843.")
    nbest = [
        Candidate(12.0, 4.0, 5.0, 0, 12, probability=0.9, passage=1),  # logits 9 + match 3
        Candidate(2.0, 1.0, 1.0, 0, 4, probability=0.1, passage=0),  # "Rain", no match
    ]
    answer = {"answer": "Ada Lovelace", "score": 0.6, "start": 0, "end": 12, "passage": 1}
    p = Prediction([answer], None, nbest)
    f = dict(zip(cal.FEATURES, cal.answer_features(p, answer, "squad", 2, passages)))
    assert f["strength"] == 9.0 and f["match"] == pytest.approx(3.0)
    assert f["log_passages"] == pytest.approx(np.log(2))
    assert f["margin"] == pytest.approx(7.0)  # logits against logits: 9 - 2


def test_passage_sets_golden():
    from qa_serving.data.calibrate import passage_sets

    titles = ["a", "a", "a", "b", "b"]
    contexts = ["a1", "a2", "a3", "b1", "b1"]  # two questions on one paragraph of b
    sets = passage_sets(titles, contexts, 2, seed=0)
    for (chosen, own), context, title in zip(sets, contexts, titles):
        assert chosen[own] == context and len(chosen) == len(set(chosen))
        assert all(c.startswith(title) for c in chosen)
    assert [len(c) for c, _ in sets] == [2, 2, 2, 1, 1]  # article b has one paragraph
    assert passage_sets(titles, contexts, 2, seed=0) == sets  # seeded
    assert [len(c) for c, _ in passage_sets(titles, contexts, 5, seed=1)] == [3, 3, 3, 1, 1]


def test_null_strength_and_pipeline_mode():
    p, context = _prediction()
    p.null_strength = 1.0
    f = dict(zip(cal.FEATURES, cal.answer_features(p, p.answers[0], "squad", 1, context)))
    assert f["null_gap"] == pytest.approx(8.0)
    # "pipeline" mode: strengths are log stock scores, shares the scores over their sum.
    stock = Prediction(
        [{"answer": "Ada", "score": 0.5, "start": 0, "end": 3}],
        None,
        [Candidate(0.5, 0, 0, 0, 3), Candidate(0.25, 0, 0, 4, 12)],
    )
    f = dict(zip(cal.FEATURES, cal.answer_features(stock, stock.answers[0], "pipeline", 1, context)))
    assert f["strength"] == pytest.approx(np.log(0.5))
    assert f["share"] == pytest.approx(2 / 3)
    assert f["margin"] == pytest.approx(np.log(2))


def _synthetic(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(cal.FEATURES)))
    x[:, -1] = 0.0  # is_null constant (SQuAD v1)
    logit = 1.5 * x[:, 1] - 0.7 * x[:, 3] + 0.3
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return x, y


def test_fit_recovers_a_calibrated_probability():
    from qa_serving.data.selective import ece

    x, y = _synthetic(8000)
    c = cal.Calibrator.fit(x[:4000], y[:4000], "squad")
    p = c.predict(x[4000:])
    assert ece(p, y[4000:]) < 0.04
    assert np.all((p >= 0) & (p <= 1))
    assert c.coef[-1] == pytest.approx(0.0, abs=1e-6)  # the constant feature gets no weight


def test_logistic_large_values_do_not_overflow():
    x = np.array([[-1e4], [1e4], [-1e4], [1e4]])
    w, b = cal.fit_logistic(x, np.array([0.0, 1.0, 0.0, 1.0]))
    assert np.isfinite(w).all() and np.isfinite(b) and w[0] > 0


def test_isotonic_golden():
    kx, ky = cal.fit_isotonic(np.array([1.0, 2.0, 3.0]), np.array([0.0, 1.0, 0.0]))
    np.testing.assert_allclose(np.interp([1, 2, 3], kx, ky), [0, 0.5, 0.5])
    # Non-decreasing whatever the input.
    rng = np.random.default_rng(1)
    kx, ky = cal.fit_isotonic(rng.random(200), (rng.random(200) < 0.5).astype(float))
    assert np.all(np.diff(ky) >= 0) and np.all(np.diff(kx) >= 0)


def test_json_round_trip_and_errors(tmp_path):
    x, y = _synthetic(300)
    c = cal.Calibrator.fit(x, y, "squad", info={"source": "test"})
    path = c.save(tmp_path)
    assert path.name == cal.CALIBRATOR_NAME
    data = json.loads(path.read_text())  # plain JSON, no pickle
    assert data["format"] == cal.FORMAT and data["info"]["questions"] == 300
    back = cal.load_calibrator(tmp_path)
    np.testing.assert_array_equal(back.predict(x), c.predict(x))
    assert cal.load_calibrator(tmp_path / "none") is None
    path.write_text("{not json")
    with pytest.raises(QAError, match="unreadable calibrator"):
        cal.load_calibrator(tmp_path)
    with pytest.raises(QAError, match="at least 20"):
        cal.Calibrator.fit(x[:10], y[:10], "squad")
    with pytest.raises(QAError, match="both right and wrong"):
        cal.Calibrator.fit(x, np.ones(len(x)), "squad")


def test_answers_below_the_top_one_get_the_others_calibrator(tmp_path):
    x, y = _synthetic(400)
    top = cal.Calibrator.fit(x, y, "squad")
    top.others = cal.Calibrator.fit(x, 1.0 - y, "squad")  # reversed labels: it must be the one used
    rows = x[:3]
    got = top.predict_answers(rows)
    assert got[0] == pytest.approx(top.predict(rows[:1])[0])
    np.testing.assert_allclose(got[1:], top.others.predict(rows[1:]))
    assert not np.allclose(got[1:], top.predict(rows[1:]))
    # Saved and loaded together; a file without "others" (earlier versions) serves every answer by one.
    top.save(tmp_path)
    back = cal.load_calibrator(tmp_path)
    np.testing.assert_allclose(back.predict_answers(rows), got)
    data = json.loads((tmp_path / cal.CALIBRATOR_NAME).read_text())
    data["others"] = None
    (tmp_path / cal.CALIBRATOR_NAME).write_text(json.dumps(data))
    np.testing.assert_allclose(cal.load_calibrator(tmp_path).predict_answers(rows), top.predict(rows))
    # Through calibrate_prediction: the second answer's probability is the others' calibrator's.
    p, context = _prediction()
    p.answers.append({"answer": "Ada", "score": 0.2, "start": 0, "end": 3})
    out = cal.calibrate_prediction(p, top, 1, context)
    feats = np.stack([cal.answer_features(p, a, "squad", 1, context) for a in p.answers])
    assert out.answers[1]["probability"] == pytest.approx(top.others.predict(feats[1:])[0])


def test_calibrate_prediction_and_abstention():
    x, _ = _synthetic(400)
    y = np.arange(400) % 2.0  # unrelated to the features: probabilities near 0.5
    c = cal.Calibrator.fit(x, y, "squad")
    p, context = _prediction()
    out = cal.calibrate_prediction(p, c, 1, context)
    prob = out.answers[0]["probability"]
    assert 0.0 < prob < 1.0 and out.answers[0]["answer"] == "Ada Lovelace"
    p, _ = _prediction()
    out = cal.calibrate_prediction(p, c, 1, context, min_probability=min(prob + 1e-6, 1.0))
    assert out.answers == [{"answer": "", "score": 0.0, "start": 0, "end": 0, "probability": prob}]
    empty = Prediction([], None, [])
    assert cal.calibrate_prediction(empty, c, 1, context).answers == []


def test_group_folds_golden():
    np.testing.assert_array_equal(cal.group_folds(["b", "a", "c", "a"], 2), [1, 0, 0, 0])
    np.testing.assert_array_equal(cal.group_folds(["x", "y"], 5), [0, 1])  # at most one fold per group


def test_cross_fit_scores_each_group_out_of_fold():
    x, y = _synthetic(600)
    groups = [f"article{i % 6}" for i in range(600)]
    p = cal.cross_fit(x, y, groups, "squad", n_folds=3)
    assert p.shape == (600,) and np.all((p >= 0) & (p <= 1))
    with pytest.raises(QAError, match="at least 2 groups"):
        cal.cross_fit(x, y, ["a"] * 600, "squad")


def _half_right_eval_file(model_dir, source, dest):
    """The generated questions with every other gold answer replaced by the model's own answer, so a random
    tiny model has right and wrong answers to calibrate on."""
    from qa_serving.core.answering import answer
    from qa_serving.core.backends import load_backend
    from qa_serving.core.config import QAConfig
    from qa_serving.core.windowing import load_tokenizer

    data = json.loads(source.read_text())
    qas = [(p, qa) for a in data["data"] for p in a["paragraphs"] for qa in p["qas"]]
    config = QAConfig.from_model_dir(model_dir)
    backend, tokenizer = load_backend(model_dir, backend="torch", device="cpu"), load_tokenizer(model_dir)
    preds = answer(backend, tokenizer, [(qa["question"], p["context"]) for p, qa in qas], config)
    for i, ((_, qa), pred) in enumerate(zip(qas, preds)):
        if i % 2 == 0 and pred.best["answer"]:
            qa["answers"] = [{"text": pred.best["answer"], "answer_start": pred.best["start"]}]
    dest.write_text(json.dumps(data))
    return dest


def test_cli_calibrate_then_evaluate(tmp_path, capsys):
    from conftest import save_exportable_model

    from qa_serving.cli.main import main
    from qa_serving.data.synthetic import write_squad

    model = save_exportable_model(tmp_path / "model")
    before = sorted(p.name for p in model.iterdir())
    source = write_squad(tmp_path / "gen.json", n_articles=4, seed=2)
    eval_file = _half_right_eval_file(model, source, tmp_path / "eval.json")
    assert main(["calibrate", "--model", str(model), "--eval-file", str(eval_file), "--folds", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["cross_fitted_folds"] == 2 and 0 <= report["probability_ece"] <= 1
    assert 0 < report["probability_ece_floor"] < report["probability_ece_floor_p95"]  # read ECE against it
    assert "score_ece_floor" not in report  # the score is not a probability: no floor to compare with
    # Also fitted on questions read over several paragraphs of their article, reported apart.
    n = sum(len(p["qas"]) for a in json.loads(eval_file.read_text())["data"] for p in a["paragraphs"])
    assert report["questions"] == n and 0 < report["passage_questions"] <= n
    assert 0 <= report["passages_probability_ece"] <= 1 and "passages_score_aurc" in report
    # The answers below the top one (top 5 per question) are fitted apart, when they hold right and wrong.
    assert report["other_answers"] > report["questions"]
    # Only the calibrator was added to the folder.
    assert sorted(p.name for p in model.iterdir()) == sorted([*before, cal.CALIBRATOR_NAME])

    plots = tmp_path / "plots"
    args = ["evaluate", "--model", str(model), "--eval-file", str(eval_file), "--plots-dir", str(plots)]
    assert main(args) == 0
    metrics = json.loads(capsys.readouterr().out)
    for key in ("exact_match", "score_ece", "score_aurc", "probability_aurc", "probability_coverage@80"):
        assert key in metrics
    assert 0 < metrics["probability_ece_floor"] < metrics["probability_ece_floor_p95"]
    assert (plots / "reliability.png").is_file() and (plots / "risk_coverage.png").is_file()

    # The calibrator was fitted in the folder's mode ("squad"); a call in the other mode has other features:
    # no probability, and a warning that says why.
    import transformers

    qa = transformers.pipeline("custom-qa", model=str(model), tokenizer=str(model))
    question, context = "Who built it?", "The tower was built by Ada Park in 1921."
    assert "probability" in qa(question=question, context=context)
    with pytest.warns(UserWarning, match="calibrator was fitted for span_scoring='squad'"):
        other = qa(question=question, context=context, span_scoring="pipeline")
    assert "probability" not in other


def test_training_fits_the_calibrator_on_its_evaluation_split(tmp_path, monkeypatch, capsys):
    import qa_serving.data.calibrate as fitting
    from qa_serving.core.config import QAConfig
    from qa_serving.data.synthetic import write_squad
    from qa_serving.training.trainer import TrainConfig, train

    # A one-epoch tiny model gets (nearly) every answer wrong: half-right labels exercise the fitting path.
    half = lambda texts, golds, metric: np.arange(len(texts)) % 2.0
    monkeypatch.setattr(fitting, "exact_per_question", half)
    answered = []  # what the calibrator's fitting runs the model over itself

    def recording(backend, tokenizer, examples, config, **kw):
        answered.extend(ex.passages is not None for ex in examples)
        return real_answer(backend, tokenizer, examples, config, **kw)

    real_answer = fitting.answer
    monkeypatch.setattr(fitting, "answer", recording)
    data = write_squad(tmp_path / "train.json", n_articles=30, seed=3)
    cfg = TrainConfig(
        from_scratch="tiny", train_file=str(data), output_dir=str(tmp_path / "model"), epochs=1,
        batch_size=32, learning_rate=3e-3, max_length=128, doc_stride=32, max_question_len=24, vocab_size=800,
        logging_steps=1000, progress=False, eval_batch_size=64, precision="fp32", eval_every_epoch=False,
    )
    results = train(cfg)
    out = tmp_path / "model"
    assert (out / cal.CALIBRATOR_NAME).is_file()
    assert results["calibration"]["cross_fitted_folds"] >= 2
    assert QAConfig.from_model_dir(out).calibrator is not None
    saved = json.loads((out / "eval_results.json").read_text())
    assert "probability_aurc" in saved["calibration"]
    # The top 5 answers of the evaluation split came from the final evaluation's forward passes: the fitting
    # ran the model only over the several-passage rows.
    assert answered and all(answered)
    assert results["calibration"]["questions"] == results["eval_questions"]
    # The terminal gets the figures too, the ECE beside what perfect calibration shows on these questions.
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("[calibration]"))
    floor = results["calibration"]["probability_ece_floor"]
    assert f"perfectly calibrated: ~{floor:.3f} on {results['eval_questions']} questions" in line


def test_answer_variants_equal_separate_calls_from_one_pass(tiny_model_dir, eval_file):
    from qa_serving.core.answering import Example, answer, answer_variants
    from qa_serving.core.backends import load_backend
    from qa_serving.core.config import QAConfig
    from qa_serving.core.windowing import load_tokenizer
    from qa_serving.data.loading import load_examples

    data = load_examples(eval_file).select(range(40))
    backend, tokenizer = load_backend(tiny_model_dir, backend="torch", device="cpu"), load_tokenizer(tiny_model_dir)
    rows = []
    counting = lambda batch: rows.append(len(batch["input_ids"])) or backend(batch)
    keys = ("answer", "start", "end", "score")
    for mode in ("pipeline", "squad"):
        config = QAConfig.from_model_dir(tiny_model_dir).replace(span_scoring=mode)
        examples = [Example(q, c, {"max_answer_len": 5}) for q, c in zip(data["question"], data["context"])]
        rows.clear()
        top1, top5 = answer_variants(counting, tokenizer, examples, [{}, {"top_k": 5}], config)
        windows = sum(p.windows for p in top1)
        assert sum(rows) == windows  # each window ran once for both option sets
        for got, options in ((top1, {}), (top5, {"top_k": 5})):
            own = [Example(ex.question, ex.context, {**ex.options, **options}) for ex in examples]
            want = answer(backend, tokenizer, own, config)
            assert [[tuple(a[k] for k in keys) for a in p.answers] for p in got] == [
                [tuple(a[k] for k in keys) for a in p.answers] for p in want
            ]
        assert max(len(p.answers) for p in top5) == 5 and max(len(p.answers) for p in top1) == 1
    with pytest.raises(QAError, match="top_k"):
        answer_variants(backend, tokenizer, examples[:1], [{"top_k": 0}], config)


def test_fit_calibrator_on_given_answers_runs_no_model_and_fits_the_same(tmp_path):
    from conftest import save_exportable_model

    from qa_serving.core.answering import answer_variants
    from qa_serving.core.backends import load_backend
    from qa_serving.core.config import QAConfig
    from qa_serving.core.windowing import load_tokenizer
    from qa_serving.data.calibrate import fit_calibrator
    from qa_serving.data.loading import load_examples
    from qa_serving.data.synthetic import write_squad

    model = save_exportable_model(tmp_path / "model")
    source = write_squad(tmp_path / "gen.json", n_articles=4, seed=2)
    data = load_examples(_half_right_eval_file(model, source, tmp_path / "eval.json"))
    config = QAConfig.from_model_dir(model)
    backend, tokenizer = load_backend(model, backend="torch", device="cpu"), load_tokenizer(model)
    pairs = list(zip(data["question"], data["context"]))
    _, top5 = answer_variants(backend, tokenizer, pairs, [{}, {"top_k": 5}], config)
    fit = {"metric": "squad", "passage_questions": 0, "n_folds": 2}
    fresh, _ = fit_calibrator(backend, tokenizer, config, data, **fit)
    never = lambda batch: pytest.fail("the model ran although the answers were given")
    given, rows = fit_calibrator(never, tokenizer, config, data, predictions=top5, **fit)
    np.testing.assert_allclose(given.coef, fresh.coef)
    assert rows.report["questions"] == len(data)
    with pytest.raises(QAError, match="one per question"):
        fit_calibrator(never, tokenizer, config, data, predictions=top5[:-1], **fit)


def test_fit_calibrator_on_a_hub_style_folder_keeps_the_stock_answers(tmp_path):
    """A folder without qa_config.json answers in the stock pipeline's mode; the real fitting path (top 5
    answers, five-passage rows) then adds probability and changes no answer, score or offset."""
    import transformers
    from conftest import save_exportable_model

    from qa_serving.core.backends import load_backend
    from qa_serving.core.config import QAConfig
    from qa_serving.core.windowing import load_tokenizer
    from qa_serving.data.calibrate import fit_calibrator
    from qa_serving.data.loading import load_examples
    from qa_serving.data.synthetic import write_squad

    model = save_exportable_model(tmp_path / "model")
    (model / "qa_config.json").unlink()  # hub-style
    config = QAConfig.from_model_dir(model)
    assert config.span_scoring == "pipeline"
    source = write_squad(tmp_path / "gen.json", n_articles=4, seed=2)
    data = load_examples(_half_right_eval_file(model, source, tmp_path / "eval.json"))
    backend, tokenizer = load_backend(model, backend="torch", device="cpu"), load_tokenizer(model)
    calibrator, rows = fit_calibrator(backend, tokenizer, config, data, passage_questions=10, n_folds=2)
    assert calibrator.span_scoring == "pipeline"
    assert rows.report["questions"] == len(data) and rows.report["passage_questions"] == 10
    assert (rows.rank > 0).any()  # the answers below the top ones are rows too
    stock = transformers.pipeline("question-answering", model=str(model), tokenizer=str(model))
    calibrator.save(model)
    qa = transformers.pipeline("custom-qa", model=str(model), tokenizer=str(model))
    for row in data.select(range(3)):
        want = stock(question=row["question"], context=row["context"], top_k=3)
        got = qa(question=row["question"], context=row["context"], top_k=3)
        assert [(a["answer"], a["start"], a["end"]) for a in got] == [
            (a["answer"], a["start"], a["end"]) for a in want
        ]
        np.testing.assert_allclose([a["score"] for a in got], [a["score"] for a in want], rtol=1e-4)
        assert all(0 <= a["probability"] <= 1 for a in got)


def test_a_fold_without_right_lower_answers_drops_only_the_cross_fitted_figures():
    """The answers below the top ones are mostly wrong: when one article has no right one, cross-fitting
    them cannot fit on it; the fit still succeeds (CI once failed here on a tiny model)."""
    from qa_serving.data.calibrate import CalibrationData, fit_with_report

    x, y = _synthetic(160)
    titles = ["a"] * 80 + ["b"] * 80
    rank = np.r_[np.zeros(40), np.ones(40), np.zeros(40), np.ones(40)].astype(int)
    y = y.copy()
    y[40:80] = 0.0  # article a: every lower answer wrong
    y[120:130] = 1.0  # article b: some lower answers right
    y[130:160] = 0.0
    data = CalibrationData(x, x[:, 0], y, titles, "squad", rank=rank)
    calibrator = fit_with_report(data, n_folds=2)
    assert calibrator.others is not None  # fitted on all lower answers (both kinds present)
    assert "others_score_ece" in data.report and "others_probability_ece" not in data.report
    assert data.report["cross_fitted_folds"] == 2 and "probability_ece" in data.report


def test_cli_calibrate_fits_on_several_files(tmp_path, capsys):
    """Held-out questions split over two files are fitted on together; the same file twice is refused."""
    from conftest import save_exportable_model

    from qa_serving.cli.main import main
    from qa_serving.data.synthetic import write_squad

    model = save_exportable_model(tmp_path / "model")
    source = write_squad(tmp_path / "gen.json", n_articles=4, seed=2)
    whole = json.loads(_half_right_eval_file(model, source, tmp_path / "eval.json").read_text())
    files = []
    for i, articles in enumerate((whole["data"][:2], whole["data"][2:])):
        files.append(tmp_path / f"part{i}.json")
        files[-1].write_text(json.dumps({**whole, "data": articles}))
    n = sum(len(p["qas"]) for a in whole["data"] for p in a["paragraphs"])
    args = ["calibrate", "--model", str(model), "--folds", "2", "--passages", "0", "--eval-file"]
    assert main([*args, *map(str, files)]) == 0
    two = json.loads(capsys.readouterr().out)
    assert two["questions"] == n and two["cross_fitted_folds"] == 2
    saved = json.loads((model / cal.CALIBRATOR_NAME).read_text())
    assert main([*args, str(tmp_path / "eval.json")]) == 0  # the same questions in one file: the same fit
    one = json.loads(capsys.readouterr().out)
    assert one["questions"] == n
    assert json.loads((model / cal.CALIBRATOR_NAME).read_text())["coef"] == pytest.approx(saved["coef"])
    assert main([*args, str(files[0]), str(files[0])]) == 2
    assert "is in both" in capsys.readouterr().err


def test_training_headline_says_when_there_are_no_cross_fitted_figures():
    from qa_serving.training.trainer import _calibration_headline

    assert "too few articles" in _calibration_headline({"cross_fitted_folds": 0, "questions": 12})
