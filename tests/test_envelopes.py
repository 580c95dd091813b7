"""The request model and its envelopes (:mod:`qa_serving.serving.request`, ``json_api``, ``v2_api``,
``service.parse_request``/``render``) without TorchServe: bodies, validation, KServe v2 in and out,
per-request errors, the nesting guard; and the core call's per-example options."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qa_serving.core.config import QAConfig
from qa_serving.serving.json_api import parse_json, render_json
from qa_serving.serving.request import (
    MAX_DEPTH,
    Limits,
    Request,
    RequestError,
    nesting_depth,
    request_body,
    row_body,
)
from qa_serving.serving.service import parse_request, render
from qa_serving.serving.settings import HandlerSettings
from qa_serving.serving.v2_api import V2Request, flatten, parse_v2, render_v2

SETTINGS = HandlerSettings(max_examples=4, max_context_chars=2000)
LIMITS = Limits.of(SETTINGS)


def parse_row(row: dict, *_):
    """A TorchServe row, parsed as the handler does (never raises)."""
    return parse_request(row_body(row), LIMITS)


def parse_body(body, *_):
    request = parse_json(body, LIMITS)
    return request.examples, request.single


def parse_v2_request(body, *_):
    request = parse_v2(body, LIMITS)
    return request.examples, request.v2


def v2_body(questions: list, contexts: list, **extra) -> dict:
    return {
        "inputs": [
            {"name": "question", "datatype": "BYTES", "shape": [len(questions)], "data": questions},
            {"name": "context", "datatype": "BYTES", "shape": [len(contexts)], "data": contexts},
        ],
        **extra,
    }


def nested(depth: int) -> list:
    """``[[[...]]]`` ``depth`` lists deep, built without recursion."""
    obj: list = []
    for _ in range(depth - 1):
        obj = [obj]
    return obj


# --- bodies -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "row,want",
    [
        ({"body": b'{"question": "q", "context": "c"}'}, {"question": "q", "context": "c"}),
        ({"data": '[{"question": "q", "context": "c"}]'}, [{"question": "q", "context": "c"}]),
        ({"body": {"question": "q"}}, {"question": "q"}),  # already decoded by the server
        ({"body": bytearray('{"question": "세종?"}', "utf-8")}, {"question": "세종?"}),
    ],
)
def test_request_body_decodes_bytes_text_and_parsed_json(row, want):
    assert request_body(row) == want


@pytest.mark.parametrize(
    "row,message",
    [
        ({}, "no request body"),
        ({"body": b"\xff\xfe"}, "not valid UTF-8"),
        ({"body": "   "}, "is empty"),
        ({"body": b'{"question": '}, "not valid JSON"),
    ],
)
def test_bad_bodies_get_a_400_that_says_why(row, message):
    with pytest.raises(RequestError, match=message) as err:
        request_body(row)
    assert err.value.status == 400


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5_000])
def test_deeply_nested_bodies_get_a_400_not_a_recursion_error(depth):
    text = "[" * depth + "]" * depth
    for row in ({"body": text.encode()}, {"body": nested(depth)}):
        request = parse_row(row, SETTINGS, QAConfig())
        assert request.error is not None and request.error.status == 400
        assert f"nested more than {MAX_DEPTH} levels" in str(request.error)
    body = v2_body(["q"], ["c"])
    body["inputs"][0]["data"] = nested(depth)
    request = parse_row({"body": body}, SETTINGS, QAConfig())
    assert request.error.status == 400 and "nested more than" in str(request.error)


def test_nesting_depth_and_flatten_need_no_recursion():
    assert nesting_depth("x") == 0
    assert nesting_depth({"a": [1, [2]]}) == 3
    assert nesting_depth(nested(100_000)) == MAX_DEPTH + 1  # stops counting past the limit
    assert flatten([["a", "b"], ["c", []], "d"]) == ["a", "b", "c", "d"]
    assert flatten(nested(10_000)) == []


def test_plain_json_bodies_and_their_limits():
    examples, single = parse_body({"question": "Who?", "context": "Ada.", "top_k": 2}, SETTINGS, QAConfig())
    assert single and examples[0].options == {"top_k": 2}  # the rest follows the model's QAConfig
    examples, single = parse_body([{"question": "q", "context": "c"}] * 2, SETTINGS, QAConfig())
    assert not single and len(examples) == 2
    cases = [
        ([], 400, "empty list"),
        ([{"question": "q", "context": "c"}] * 5, 413, "limit is 4"),
        ({"question": "q", "context": "c" * 2001}, 413, "limit is 2000"),
        ({"question": "q"}, 400, "missing 'context'"),
        ({"question": "q", "context": "c", "tpk": 1}, 400, "unknown field"),
        ({"question": "q", "context": "c", "top_k": 0}, 400, "top_k must be an integer from 1 to 1000, got 0"),
        ({"question": "q", "context": "c", "handle_impossible_answer": "yes"}, 400, "true or false"),
        (
            [{"question": "q", "context": "c"}, {"question": 1, "context": "c"}],
            400,
            "item 1: 'question' must be",
        ),
        ("text", 400, "must be a JSON object"),
    ]
    for body, status, message in cases:
        with pytest.raises(RequestError, match=message) as err:
            parse_body(body, SETTINGS, QAConfig())
        assert err.value.status == status


def test_an_unexpected_failure_is_a_500_for_that_request_only(monkeypatch):
    from qa_serving.serving import service

    def boom(*args):
        raise KeyError("surprise")

    monkeypatch.setattr(service, "parse_json", boom)
    request = parse_row({"body": {"question": "q", "context": "c"}}, SETTINGS, QAConfig())
    assert request.error.status == 500 and "surprise" in str(request.error)


# --- KServe v2 ------------------------------------------------------------------------------------------

V2_BAD = [
    ({"inputs": []}, 400, "non-empty list"),
    ({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}, 400, "'question' and 'context'"),
    (v2_body(["q"], ["c"]) | {"inputs": [{"name": "question", "datatype": "INT64", "shape": [1], "data": [1]}]},
     400, "datatype must be BYTES"),
    ({"inputs": v2_body(["q"], ["c"])["inputs"][:1]}, 400, "missing input 'context'"),
    (v2_body(["q", "q2"], ["c"]), 400, "same number"),
    ({"inputs": [dict(v2_body(["q"], ["c"])["inputs"][0], shape=[2]), v2_body(["q"], ["c"])["inputs"][1]]},
     400, "does not match"),
    (v2_body(["q"], [""]), 400, "example 0: 'context' is empty"),
    (v2_body(["q"], [7]), 400, "'context' must be a string"),
    (v2_body(["q"], ["c"], parameters={"top_k": 0}), 400, "top_k must be an integer from 1 to 1000, got 0"),
    (v2_body(["q"], ["c"], parameters={"max_seq_len": 64}), 400, "unknown option"),
    (v2_body(["q"], ["c"], outputs=[{"name": "logits"}]), 400, "'outputs' may ask for"),
    (v2_body(["q"], ["c"], extra=1), 400, "unknown field"),
    (v2_body(["q"] * 5, ["c"] * 5), 413, "limit is 4"),
    (v2_body(["q"], ["c" * 3000]), 413, "limit is 2000"),
]  # fmt: skip


@pytest.mark.parametrize("body,status,message", V2_BAD)
def test_bad_v2_requests_get_an_actionable_error(body, status, message):
    with pytest.raises(RequestError, match=message) as err:
        parse_v2_request(body, SETTINGS, QAConfig())
    assert err.value.status == status


def test_v2_parsing_and_response_shapes():
    body = v2_body([["Who?"], ["Where?"]], [["Ada did it."], ["In Paris."]], id="r1",
                   parameters={"max_answer_len": 5}, outputs=[{"name": "answer"}, {"name": "start"}])  # fmt: skip
    body["inputs"][0]["shape"] = body["inputs"][1]["shape"] = [2, 1]  # nested data of shape [2, 1]
    examples, request = parse_v2_request(body, HandlerSettings(), QAConfig())
    assert [(e.question, e.context, e.options) for e in examples] == [
        ("Who?", "Ada did it.", {"max_answer_len": 5}), ("Where?", "In Paris.", {"max_answer_len": 5})]  # fmt: skip
    assert request == V2Request("r1", ("answer", "start"))
    answers = [
        {"answer": "Ada", "score": 0.9, "start": 0, "end": 3},
        {"answer": "", "score": 1, "start": 0, "end": 0},
    ]
    v2 = Request(examples=examples, single=False, envelope="v2", v2=request)
    assert render_v2(v2, [[a] for a in answers], "qa", "1.0") == {
        "id": "r1", "model_name": "qa", "model_version": "1.0",
        "outputs": [{"name": "answer", "datatype": "BYTES", "shape": [2], "data": ["Ada", ""]},
                    {"name": "start", "datatype": "INT64", "shape": [2], "data": [0, 0]}],
    }  # fmt: skip


# --- responses and answers ------------------------------------------------------------------------------


def test_responses_map_answers_back_to_requests_in_order():
    rows = [
        {"body": {"question": "q1", "context": "c1"}},
        {"body": b"not json"},
        {"body": [{"question": "q2", "context": "c2"}, {"question": "q3", "context": "c3"}]},
        {"body": json.dumps(v2_body(["q4"], ["c4"], id="x"))},
    ]
    requests = [parse_row(row, SETTINGS, QAConfig()) for row in rows]
    answers = [{"answer": f"a{i}", "score": 0.5, "start": 0, "end": 2} for i in (1, 2, 3, 4)]
    per_request = [[[answers[0]]], [], [[answers[1]], [answers[2]]], [[answers[3]]]]
    out = render(requests, per_request, "qa", "1.0")
    assert [status for status, _ in out] == [200, 400, 200, 200]
    assert out[0][1] == answers[0]
    assert out[1][1]["status"] == 400 and "not valid JSON" in out[1][1]["error"]
    assert out[2][1] == answers[1:3]
    assert out[3][1]["id"] == "x" and out[3][1]["outputs"][0]["data"] == ["a4"]
    assert render([Request(error=RequestError(413, "big"))], [[]]) == [
        (413, {"error": "big", "status": 413})
    ]


def test_v2_top_k_gives_n_by_k_outputs_filled_with_the_empty_answer():
    examples, request = parse_v2_request(v2_body(["q1", "q2"], ["c1", "c2"], parameters={"topk": 2}))
    assert request.top_k == 2 and all(e.options == {"top_k": 2} for e in examples)
    v2 = Request(examples=examples, single=False, envelope="v2", v2=request)
    ada = {"answer": "Ada", "score": 0.5, "start": 0, "end": 3}
    out = render_v2(v2, [[ada, ada], [ada]], None, None)["outputs"]
    assert out[0] == {"name": "answer", "datatype": "BYTES", "shape": [2, 2], "data": ["Ada", "Ada", "Ada", ""]}


def test_answers_with_per_example_options_match_one_call_per_example(tiny_tokenizer):
    """The core call: examples with different top_k / max_answer_len / handle_impossible_answer in one call
    are answered as if each were alone with its options as the call's config."""
    from qa_serving.core.answering import answers_from_logits, answers_per_example
    from qa_serving.core.windowing import prepare_features

    config = QAConfig(max_length=48, doc_stride=16, max_question_len=8)
    rows = [
        {"question": "Who wrote Hamlet?", "context": "Shakespeare wrote Hamlet in 1600.", "top_k": 3},
        {"question": "Where?", "context": "The dog slept in the garden near the old oak tree. " * 3},
        {"question": "When?", "context": "Curie won in 1903.", "max_answer_len": 2},
        {"question": "Why?", "context": "Curie won in 1903.", "handle_impossible_answer": True, "top_k": 2},
    ]
    examples = [parse_body(row)[0][0] for row in rows]
    features = prepare_features(tiny_tokenizer, [e.question for e in examples], [e.context for e in examples],
                                config)  # fmt: skip
    rng = np.random.default_rng(0)
    starts = [rng.normal(size=len(ids)).astype(np.float32) * 5 for ids in features.input_ids]
    ends = [rng.normal(size=len(ids)).astype(np.float32) * 5 for ids in features.input_ids]
    got = answers_per_example(examples, features, starts, ends, config)
    for i, ex in enumerate(examples):
        alone = prepare_features(tiny_tokenizer, [ex.question], [ex.context], config)
        windows = np.flatnonzero(features.example_index == i)
        options = dict(ex.options)
        top_k = options.pop("top_k", 1)
        [pred] = answers_from_logits(alone, [starts[w] for w in windows], [ends[w] for w in windows],
                                     [ex.context], config.with_options(options), top_k=top_k)  # fmt: skip
        assert got[i].answers == pred.answers and got[i].windows == len(windows)


def test_a_question_with_no_surviving_span_gets_the_empty_answer():
    """'pipeline' mode can leave an example without answers (the stock pipeline returns [] then): a served
    top_k=1 request still gets one answer dict, not an IndexError that fails the whole batch."""
    examples = [parse_body(row)[0][0] for row in (
        {"question": "Who?", "context": "Ada Park founded Acme."}, {"question": "Who?", "context": "Ada.", "top_k": 2})]
    request = Request(examples=examples, single=False)
    assert render_json(request, [[], []]) == [{"answer": "", "score": 0.0, "start": 0, "end": 0}, []]


def test_pipeline_scoring_of_features_without_stock_offsets_is_a_clear_error(tiny_tokenizer):
    """answers_from_logits with "pipeline" scoring but Features built without the stock offsets (by hand,
    not by prepare_features): a QAError saying how to prepare them, not a crash deep in postprocessing."""
    import dataclasses

    from qa_serving.core.answering import answers_from_logits
    from qa_serving.core.windowing import prepare_features
    from qa_serving.errors import QAError

    squad = QAConfig(max_length=48, doc_stride=16, span_scoring="squad")
    context = "Curie won the prize in 1903."
    features = dataclasses.replace(
        prepare_features(tiny_tokenizer, ["When?"], [context], squad), stock_offsets=None
    )
    logits = [np.zeros(len(ids), np.float32) for ids in features.input_ids]
    with pytest.raises(QAError, match="needs features with stock offsets"):
        answers_from_logits(features, logits, logits, [context], squad.replace(span_scoring="pipeline"))
    [pred] = answers_from_logits(features, logits, logits, [context], squad)  # "squad" does not need them
    assert pred.best["answer"] in context
