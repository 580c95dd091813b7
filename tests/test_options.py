"""The one options table at every door: construction-time options behave as in the stock pipeline (each
alone, combined, overridden at call time; short and multi-window contexts), the served model answers as the
pipeline in both span-scoring modes (left padding included), and one bad value gets one wording everywhere.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import transformers
from conftest import assert_same_answers, save_tiny_span_model

import qa_serving  # noqa: F401  (registers custom-qa)
from qa_serving.core.config import CONFIG_NAME, QAConfig
from qa_serving.core.options import OPTIONS, PER_EXAMPLE, parse_options
from qa_serving.errors import QAError

pytestmark = pytest.mark.usefixtures("torch_one_thread")

SHORT = "Marie Curie won the Nobel Prize in Physics in 1903 and in Chemistry in 1911."
LONG = " ".join(
    [
        "Shakespeare wrote Hamlet in 1600 while living in London.",
        "The cat sat on the mat. The dog slept in the garden near the old oak tree.",
        SHORT,
    ]
    * 5
)  # several windows at max_seq_len 48
QUESTIONS = [("When did Curie win?", SHORT), ("Who wrote Hamlet in London?", LONG), ("Where?", SHORT)]


@pytest.fixture(scope="module")
def model_and_tokenizer(_tiny_model_session, tiny_tokenizer):
    model = copy.deepcopy(_tiny_model_session).eval()
    with torch.no_grad():
        model.qa_outputs.weight.mul_(25.0)  # decisive logits: float noise cannot reorder spans
    return model, tiny_tokenizer


def _pipes(model, tokenizer, **options):
    stock = transformers.pipeline("question-answering", model=model, tokenizer=tokenizer, **options)
    ours = transformers.pipeline("custom-qa", model=model, tokenizer=tokenizer, **options)
    return stock, ours


def _ask(pipe, **call):
    return [pipe(question=q, context=c, **call) for q, c in QUESTIONS]


CONSTRUCTION = [
    {"top_k": 3},
    {"max_answer_len": 2},
    {"handle_impossible_answer": True},
    {"max_seq_len": 48},
    {"max_seq_len": 64, "doc_stride": 20},
    {"max_question_len": 3, "max_seq_len": 48},
    {"align_to_words": False},
    {"batch_size": 3, "max_seq_len": 48},
    {"top_k": 2, "max_answer_len": 4, "handle_impossible_answer": True, "max_seq_len": 48},
]


@pytest.mark.parametrize("options", CONSTRUCTION, ids=lambda o: ",".join(o))
def test_construction_time_options_behave_as_in_the_stock_pipeline(model_and_tokenizer, options):
    stock, ours = _pipes(*model_and_tokenizer, **options)
    for got, want in zip(_ask(ours), _ask(stock)):
        assert_same_answers(got, want)


def test_call_time_options_override_construction_time_ones(model_and_tokenizer):
    stock, ours = _pipes(*model_and_tokenizer, top_k=3, max_answer_len=2, max_seq_len=48)
    for call in ({"top_k": 1}, {"max_answer_len": 6, "top_k": 2}, {"max_seq_len": 64}, {"topk": 2}):
        for got, want in zip(_ask(ours, **call), _ask(stock, **call)):
            assert_same_answers(got, want)
    assert isinstance(ours(question="q?", context=SHORT), list)  # construction top_k=3 still holds after


def test_construction_options_are_checked_at_construction(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    with pytest.raises(QAError, match="top_k must be an integer from 1 to 1000, got 0"):
        transformers.pipeline("custom-qa", model=model, tokenizer=tokenizer, top_k=0)
    with pytest.raises(QAError, match="unknown custom-qa argument"):
        transformers.pipeline("custom-qa", model=model, tokenizer=tokenizer, topp=3)


# --- the same bad value, the same words, at every door -------------------------------------------------

BAD = [
    ({"top_k": 0}, "top_k must be an integer from 1 to 1000, got 0"),
    ({"max_answer_len": "3"}, "max_answer_len must be an integer from 1 to 1000, got '3'"),
    ({"handle_impossible_answer": "yes"}, "handle_impossible_answer must be true or false, got 'yes'"),
    ({"topk": 1.5}, "top_k must be an integer from 1 to 1000, got 1.5"),
]


@pytest.mark.parametrize("bad,message", BAD)
def test_one_bad_value_one_wording_at_every_door(model_and_tokenizer, bad, message, tmp_path, capsys):
    from qa_serving.cli import main
    from qa_serving.serving.request import Limits
    from qa_serving.serving.service import parse_request

    model, tokenizer = model_and_tokenizer
    ours = transformers.pipeline("custom-qa", model=model, tokenizer=tokenizer)
    with pytest.raises(QAError) as err:
        ours(question="q?", context=SHORT, **bad)
    assert str(err.value) == message
    body = {"question": "q?", "context": SHORT, **bad}
    request = parse_request(json.dumps(body).encode(), Limits())
    assert (request.error.status, str(request.error)) == (400, message)
    params = {"inputs": [{"name": "question", "datatype": "BYTES", "shape": [1], "data": ["q?"]},
                         {"name": "context", "datatype": "BYTES", "shape": [1], "data": [SHORT]}],
              "parameters": bad}  # fmt: skip
    request = parse_request(params, Limits())
    assert (request.error.status, str(request.error)) == (400, f"example 0: {message}")
    with pytest.raises(QAError) as err:
        QAConfig().with_options(parse_options(bad))
    assert str(err.value) == message
    from qa_serving.serving.settings import HandlerSettings

    with pytest.raises(QAError) as err:  # model-config.yaml's handler: {options: {...}}
        HandlerSettings.resolve({"options": bad}, env={})
    assert str(err.value) == f"handler.options: {message}"
    ((name, value),) = bad.items()
    if not isinstance(value, bool) and not isinstance(value, str):  # argparse gives the CLI strings
        model.save_pretrained(tmp_path)
        tokenizer.save_pretrained(tmp_path)
        flag = "--" + name.replace("_", "-")
        code = main(
            ["predict", "--model", str(tmp_path), "--question", "q?", "--context", SHORT, flag, str(value)]
        )
        assert code == 2 and f"error: {message}" in capsys.readouterr().err


def test_the_table_names_every_per_example_option_of_the_envelopes():
    from qa_serving.serving.json_api import FIELDS

    assert set(PER_EXAMPLE) <= set(FIELDS)
    assert {"top_k", "max_answer_len", "handle_impossible_answer"} <= set(PER_EXAMPLE)
    assert OPTIONS["max_seq_len"].field == "max_length" and "topk" in OPTIONS["top_k"].aliases
    assert parse_options({"topk": 2, "max_length": 256}) == {"top_k": 2, "max_seq_len": 256}
    with pytest.raises(QAError, match="given twice"):
        parse_options({"topk": 2, "top_k": 3})


def test_a_saved_version_2_config_still_loads(tmp_path):
    (tmp_path / CONFIG_NAME).write_text(json.dumps({"version_2": True, "max_length": 256, "doc_stride": 64}))
    config = QAConfig.from_model_dir(tmp_path)
    assert config.handle_impossible_answer and config.span_scoring == "squad"
    saved = json.loads(config.save(tmp_path).read_text())
    assert saved["handle_impossible_answer"] is True and "version_2" not in saved


def test_stock_and_squad_defaults_come_from_the_table():
    stock, squad = QAConfig.stock(), QAConfig()
    assert (stock.max_answer_len, squad.max_answer_len) == (15, 30)
    assert (stock.span_scoring, squad.span_scoring) == ("pipeline", "squad")
    assert QAConfig.stock(model_max_length=128).doc_stride == 64


# --- the served model answers as the pipeline ------------------------------------------------------------


@pytest.fixture(scope="module")
def served_dirs(tmp_path_factory) -> dict[str, Path]:
    """A "squad"-mode folder (qa_config.json), and "pipeline"-mode folders (none) with a right- and a
    left-padding tokenizer."""
    texts = [SHORT, LONG, "Who wrote Hamlet in London? When did Curie win? Where?"]
    squad = save_tiny_span_model(tmp_path_factory.mktemp("squad"), texts)
    out = {"squad": squad}
    for side in ("right", "left"):
        folder = tmp_path_factory.mktemp(f"pipeline-{side}")
        for item in squad.iterdir():
            if item.name != CONFIG_NAME:
                (folder / item.name).write_bytes(item.read_bytes())
        tok = transformers.AutoTokenizer.from_pretrained(folder, padding_side=side)  # saved with it
        tok.save_pretrained(folder)
        out[f"pipeline-{side}"] = folder
    return out


@pytest.mark.parametrize("mode", ["squad", "pipeline-right", "pipeline-left"])
def test_served_answers_equal_pipeline_answers(served_dirs, mode):
    from qa_serving.serving.service import QAService
    from qa_serving.serving.settings import HandlerSettings

    folder = served_dirs[mode]
    pipe = transformers.pipeline("custom-qa", model=str(folder), tokenizer=str(folder), max_seq_len=48)
    settings = HandlerSettings.resolve({"options": {"max_seq_len": 48}}, env={})  # multi-window contexts
    service = QAService.load(folder, settings)
    assert service.config.span_scoring == ("squad" if mode == "squad" else "pipeline")
    if mode == "pipeline-left":
        assert service.tokenizer.padding_side == "left"
    bodies = [
        {"question": q, "context": c, "top_k": k} for (q, c), k in zip(QUESTIONS * 2, (1, 1, 1, 3, 2, 1))
    ]
    bodies.append({"question": "Why?", "context": LONG, "handle_impossible_answer": True, "top_k": 2})
    out = service.handle(bodies)
    for (status, body), req in zip(out, bodies):
        assert status == 200
        want = pipe(**req)
        assert_same_answers(body, want)


def test_docs_options_table_is_the_code_table():
    from qa_serving.core.options import markdown_table

    doc = (Path(__file__).resolve().parents[1] / "docs" / "options.md").read_text()
    assert markdown_table() in doc, "regenerate the table in docs/options.md (see the line above it)"
