"""Several passages per question, ``probability`` and ``min_probability`` through the one core call and
the pipeline: passages are more windows of one question (spans compared by start + end logit across them),
answers carry their passage, one text found in several passages is one answer."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import transformers
from conftest import save_exportable_model

import qa_serving  # noqa: F401  (registers custom-qa)
from qa_serving.core.answering import Example, answer
from qa_serving.core.backends import load_backend
from qa_serving.core.calibration import CALIBRATOR_NAME, FEATURES, Calibrator
from qa_serving.core.config import QAConfig
from qa_serving.core.windowing import load_tokenizer
from qa_serving.data.synthetic import generate_squad
from qa_serving.errors import QAError

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_exportable_model(tmp_path_factory.mktemp("tiny-passages"))


@pytest.fixture(scope="module")
def loaded(model_dir):
    return load_backend(model_dir, backend="torch", device="cpu"), load_tokenizer(model_dir)


@pytest.fixture(scope="module")
def questions():
    """(question, passages of its article) for a few generated articles."""
    out = []
    for article in generate_squad(3, seed=5)["data"]:
        contexts = [p["context"] for p in article["paragraphs"]]
        for p in article["paragraphs"][:2]:
            out.append((p["qas"][0]["question"], contexts))
    return out


def _calibrator(span_scoring: str) -> Calibrator:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, len(FEATURES)))
    y = (x[:, 1] + rng.normal(size=200) > 0).astype(float)
    return Calibrator.fit(x, y, span_scoring)


def _loaded(folder):
    return load_backend(folder, backend="torch", device="cpu"), load_tokenizer(folder)


def _logit(candidate) -> float:
    return candidate.start_logit + candidate.end_logit


def test_passages_rank_by_logits_across_passages(loaded, model_dir, questions):
    """The golden reference: each (question, passage) alone; the top answer over passages is the span with
    the largest start + end logit among every passage's best spans."""
    backend, tokenizer = loaded
    config = QAConfig.from_model_dir(model_dir)
    for question, passages in questions:
        alone = answer(backend, tokenizer, [(question, p) for p in passages], config)
        best = max(range(len(passages)), key=lambda k: _logit(alone[k].nbest[0]))
        options = {"top_k": 3, "passage_match_weight": 0.0}  # logits alone
        multi = answer(backend, tokenizer, [Example(question, "", options, tuple(passages))], config)[0]
        top = multi.answers[0]
        assert top["passage"] == best
        assert (top["start"], top["end"]) == (alone[best].best["start"], alone[best].best["end"])
        assert _logit(multi.nbest[0]) == pytest.approx(_logit(alone[best].nbest[0]), abs=1e-4)
        assert multi.windows == sum(p.windows for p in alone)
        for a in multi.answers:
            assert a["answer"] == passages[a["passage"]][a["start"] : a["end"]]
        assert "probability" not in top  # no calibrator: stock keys (plus passage)


def test_passage_and_neighbourhood_match_add_to_the_logits_of_their_spans(loaded, model_dir, questions):
    from qa_serving.core.passages import passage_scorer

    backend, tokenizer = loaded
    config = QAConfig.from_model_dir(model_dir)
    question, passages = questions[0]
    scorer = passage_scorer(question, passages, 1000.0)
    plain = answer(
        backend, tokenizer, [Example(question, "", {"passage_match_weight": 0.0}, tuple(passages))], config
    )[0]
    weighted = answer(
        backend, tokenizer, [Example(question, "", {"passage_match_weight": 1000.0}, tuple(passages))], config
    )[0]
    assert plain.nbest[0].score == pytest.approx(_logit(plain.nbest[0]))
    # A huge weight: the ranking is the match, logits only break ties.
    for cand in weighted.nbest[:5]:
        bonus = scorer.passage[cand.passage] + scorer.near(cand.passage, cand.start, cand.end)
        assert cand.score == pytest.approx(_logit(cand) + bonus)
    top = weighted.nbest[0]
    assert weighted.answers[0]["passage"] == top.passage
    spread = max(map(_logit, weighted.nbest)) - min(map(_logit, weighted.nbest))
    bonus = [scorer.passage[c.passage] + scorer.near(c.passage, c.start, c.end) for c in weighted.nbest]
    assert bonus[0] >= max(bonus) - spread  # the best-matching span, up to what the logits can move
    assert max(bonus) > spread  # (so the check above has teeth)
    # One passage: no bonus, the single-passage answer.
    assert passage_scorer(question, passages[:1], 1000.0) is None
    one = answer(backend, tokenizer, [Example(question, "", {}, (passages[0],))], config)[0]
    alone = answer(backend, tokenizer, [(question, passages[0])], config)[0]
    assert [(a["answer"], a["start"]) for a in one.answers] == [
        (a["answer"], a["start"]) for a in alone.answers
    ]


def test_passage_match_golden():
    from qa_serving.core.passages import passage_match

    np.testing.assert_allclose(
        passage_match("built by whom", ["The bridge was built by Ada.", "Rain."]), [1, 0]
    )
    np.testing.assert_allclose(passage_match("x", ["a b", "c"]), [0, 0])  # no question word anywhere
    np.testing.assert_allclose(passage_match("누가 다리를", ["누가 다리를 지었나", "비"]), [1, 0])


def test_bigram_and_neighbourhood_match_golden():
    from qa_serving.core.passages import WIDTH, bigram_match, passage_scorer

    np.testing.assert_allclose(
        bigram_match("who built the bridge", ["Ada built the bridge.", "The bridge fell."]), [2 / 3, 1 / 3]
    )
    np.testing.assert_allclose(bigram_match("bridge", ["a bridge", "b"]), [0, 0])  # no pair to find
    passages = ["Ada built the bridge in 1900. " + "Filler words here. " * 5 + "Paris is big.", "Rain fell."]
    scorer = passage_scorer("who built the bridge", passages, 4.0)
    # Passage 0 has every question word that some passage has, and 2 of the 3 pairs.
    np.testing.assert_allclose(scorer.passage, [4 * (1 + 2 * 2 / 3), 0])
    year = passages[0].index("1900")
    assert scorer.near(0, year, year + 4) == pytest.approx(4.0)  # "built the bridge" right before it
    paris = passages[0].index("Paris")
    assert scorer.near(0, paris, paris + 5) == 0.0  # more than WIDTH words away
    assert len(passages[0][:paris].split()) > WIDTH


def test_windows_of_all_passages_share_batches(loaded, model_dir, questions):
    backend, tokenizer = loaded
    config = QAConfig.from_model_dir(model_dir).replace(batch_size=64, max_padding=1.0)
    calls = []

    def counting(batch):
        calls.append(len(batch["input_ids"]))
        return backend(batch)

    examples = [Example(q, "", {}, tuple(ps)) for q, ps in questions]
    predictions = answer(counting, tokenizer, examples, config)
    windows = sum(p.windows for p in predictions)
    assert sum(calls) == windows and len(calls) == -(-windows // 64)


def test_same_text_in_overlapping_passages_is_one_answer(loaded, model_dir, questions):
    backend, tokenizer = loaded
    question, passages = questions[0]
    config = QAConfig.from_model_dir(model_dir)
    twice = (passages[0], passages[0], passages[1])
    out = answer(backend, tokenizer, [Example(question, "", {"top_k": 10}, twice)], config)[0]
    texts = [" ".join(a["answer"].lower().split()) for a in out.answers]
    assert len(texts) == len(set(texts))


@pytest.mark.parametrize("mode", ["squad", "pipeline"])
def test_calibrated_pipeline_probability_and_abstention(tmp_path, questions, mode):
    folder = save_exportable_model(tmp_path / "m")
    config = QAConfig.from_model_dir(folder).replace(span_scoring=mode)
    config.save(folder)
    qa = transformers.pipeline("custom-qa", model=str(folder))
    question, passages = questions[0]
    stock = qa(question=question, context=passages[0], top_k=2)
    assert all("probability" not in a for a in stock)

    _calibrator(mode).save(folder)
    assert json.loads((folder / CALIBRATOR_NAME).read_text())["span_scoring"] == mode
    qa = transformers.pipeline("custom-qa", model=str(folder))
    got = qa(question=question, context=passages[0], top_k=2)
    same = ("answer", "start", "score")
    assert [[a[k] for k in same] for a in got] == [[a[k] for k in same] for a in stock]
    assert all(0.0 <= a["probability"] <= 1.0 for a in got)

    multi = qa(question=question, passages=passages, top_k=3)
    assert all("passage" in a and "probability" in a for a in multi)
    if mode == "pipeline":  # stock scores do not compare across passages: ranked by probability
        assert [a["probability"] for a in multi] == sorted((a["probability"] for a in multi), reverse=True)
    else:  # the logits + match ranking, as without a calibrator
        uncalibrated = answer(
            *_loaded(folder), [Example(question, "", {"top_k": 3}, tuple(passages))], config
        )[0]
        assert [(a["answer"], a["passage"]) for a in multi] == [
            (a["answer"], a["passage"]) for a in uncalibrated.answers
        ]

    # ("pipeline" mode: the stock candidate pool, hence the n-best features, grows with top_k; and the
    # stock top_k=1 pick (argmax) may break a tie unlike top_k=2's (argsort): compare top_k=1 with top_k=1)
    plain = qa(question=question, context=passages[0])
    p = plain["probability"]
    abstain = qa(question=question, context=passages[0], min_probability=min(p + 1e-6, 1.0))
    assert (abstain["answer"], abstain["start"], abstain["end"]) == ("", 0, 0)
    assert abstain["probability"] == pytest.approx(p)
    keep = qa(question=question, context=passages[0], min_probability=p / 2)
    assert (keep["answer"], keep["start"], keep["score"]) == (plain["answer"], plain["start"], plain["score"])


def test_calibrator_of_another_mode_is_not_applied(tmp_path, questions):
    folder = save_exportable_model(tmp_path / "m")
    _calibrator("pipeline").save(folder)  # the folder's qa_config.json says "squad"
    qa = transformers.pipeline("custom-qa", model=str(folder))
    out = qa(question=questions[0][0], context=questions[0][1][0])
    assert "probability" not in out


def test_qa_config_never_saves_the_calibrator(tmp_path):
    folder = save_exportable_model(tmp_path / "m")
    _calibrator("squad").save(folder)
    config = QAConfig.from_model_dir(folder)
    assert config.calibrator is not None
    config.save(tmp_path)
    assert "calibrator" not in json.loads((tmp_path / "qa_config.json").read_text())
    assert dataclasses.replace(config, calibrator=None).calibrator is None


def test_bad_passages_inputs():
    with pytest.raises(QAError, match="at least one passage"):
        Example("q", "", {}, ())
    with pytest.raises(QAError, match="list of strings"):
        Example.make("q", passages="one string")


def test_onnx_export_and_archive_carry_the_calibrator(tmp_path, questions):
    pytest.importorskip("optimum.onnxruntime")
    from qa_serving.export.onnx import export_onnx

    folder = save_exportable_model(tmp_path / "m")
    _calibrator("squad").save(folder)
    result = export_onnx(model_dir=folder, output_dir=tmp_path / "onnx", quantize="auto")
    for variant in result.variants().values():
        assert (variant / CALIBRATOR_NAME).read_text() == (folder / CALIBRATOR_NAME).read_text()
    question, passages = questions[0]
    torch_qa = transformers.pipeline("custom-qa", model=str(folder))
    onnx_qa = transformers.pipeline("custom-qa", model=str(tmp_path / "onnx"))
    want = torch_qa(question=question, context=passages[0])
    got = onnx_qa(question=question, context=passages[0])
    assert got["answer"] == want["answer"]
    assert got["probability"] == pytest.approx(want["probability"], abs=1e-3)


def test_served_json_and_v2_carry_passages_and_probability(tmp_path, questions):
    from qa_serving.serving.service import QAService

    folder = save_exportable_model(tmp_path / "m")
    question, passages = questions[0]
    plain = QAService.load(folder)
    [(status, body)] = plain.handle([{"question": question, "context": passages[0]}])
    assert status == 200 and set(body) == {"answer", "score", "start", "end"}  # stock keys, no probability
    v2 = {
        "inputs": [
            {"name": "question", "datatype": "BYTES", "shape": [1], "data": [question]},
            {"name": "context", "datatype": "BYTES", "shape": [1], "data": [passages[0]]},
        ]
    }
    [(status, body)] = plain.handle([v2])
    assert [o["name"] for o in body["outputs"]] == ["answer", "score", "start", "end"]
    [(status, body)] = plain.handle([{**v2, "outputs": [{"name": "probability"}]}])
    assert status == 400 and "calibrated" in body["error"]

    _calibrator("squad").save(folder)
    service = QAService.load(folder)
    pipe = transformers.pipeline("custom-qa", model=str(folder))
    want = pipe(question=question, passages=passages, top_k=2)
    [(status, body)] = service.handle([{"question": question, "passages": passages, "top_k": 2}])
    assert status == 200 and body == want
    [(status, body)] = service.handle([{"question": question, "passages": passages, "min_probability": 1.0}])
    assert (body["answer"], body["start"], body["end"]) == ("", 0, 0) and "probability" in body

    ragged = [passages, passages[:2]]
    width = max(map(len, ragged))
    v2 = {
        "inputs": [
            {"name": "question", "datatype": "BYTES", "shape": [2], "data": [question, question]},
            {
                "name": "passages",
                "datatype": "BYTES",
                "shape": [2, width],
                "data": [p for row in ragged for p in row + [""] * (width - len(row))],
            },
        ]
    }
    [(status, body)] = service.handle([v2])
    assert status == 200
    out = {o["name"]: o for o in body["outputs"]}
    assert set(out) == {"answer", "score", "start", "end", "probability", "passage"}
    assert out["answer"]["data"][0] == want[0]["answer"] and out["passage"]["data"][0] == want[0]["passage"]
    assert out["probability"]["datatype"] == "FP32"
    [(status, body)] = service.handle([{"question": question, "passages": "not a list"}])
    assert status == 400 and "passages" in body["error"]
