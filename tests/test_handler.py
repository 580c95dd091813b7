"""The TorchServe handler in-process (no server): batches of good and bad requests through a real
``ts.context.Context``, answers checked against ``pipeline("custom-qa")`` on the same tiny model.

The tiny random BERT gets a scaled-up span head so its logits are spread apart: answers then do not
depend on float noise between differently padded batches, and comparisons can be exact.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("ts", reason="TorchServe is not installed (pip install 'qa-serving[serve]')")

import torch
import ts
from conftest import assert_same_answers, save_tiny_span_model
from qa_serving.handlers import qa_handler
from qa_serving.handlers.qa_handler import BATCH_SIZE_HEADER, QAHandler
from transformers import pipeline
from ts.context import Context, RequestProcessor
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

import qa_serving  # noqa: F401  (registers custom-qa)
from qa_serving.errors import QAError
from qa_serving.serving.settings import HandlerSettings

TEXTS = [
    "Shakespeare wrote Hamlet in 1600 while living in London.",
    "The cat sat on the mat. The dog slept in the garden near the old oak tree.",
    "세종대왕은 1443년에 훈민정음을 창제하였다.",
    "Marie Curie won the Nobel Prize in Physics in 1903 and in Chemistry in 1911.",
]
LONG = " ".join(TEXTS * 6)  # several windows at max_length 64
GOOD = [
    {"question": "Who wrote Hamlet?", "context": TEXTS[0]},
    {"question": "Where did the dog sleep?", "context": TEXTS[1]},
    {"question": "훈민정음은 언제 창제되었나?", "context": TEXTS[2]},
    {"question": "When did Curie win the prize? 🏆", "context": LONG},
    {"question": "cat?", "context": "mat 🐈 mat"},
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_span_model(tmp_path_factory.mktemp("tiny_qa"), TEXTS)


@pytest.fixture(scope="module")
def reference(model_dir):
    return pipeline("custom-qa", model=str(model_dir), tokenizer=str(model_dir))


def make_context(model_dir: Path, handler: dict | None = None, **yaml) -> Context:
    """The context TorchServe's worker builds (real class, real metrics cache)."""
    metrics_yaml = Path(ts.__file__).parent / "configs" / "metrics.yaml"
    metrics = MetricsCacheYamlImpl(str(metrics_yaml))
    metrics.initialize_cache()
    config = {"minWorkers": 1, "maxWorkers": 1, "batchSize": 8, **yaml, "handler": handler or {}}
    return Context(
        "tiny",
        str(model_dir),
        {"model": {"modelName": "tiny"}},
        8,
        None,
        "0.12.0",
        metrics=metrics,
        model_yaml_config=config,
    )


@pytest.fixture(scope="module")
def served(model_dir):
    handler = QAHandler()
    context = make_context(model_dir, {"max_context_chars": 2000, "max_examples": 4})
    handler.initialize(context)
    return handler, context


def run_batch(handler: QAHandler, context: Context, rows: list) -> tuple[list, list[int], list[dict]]:
    """One TorchServe batch: ``rows`` as the worker passes them; returns outputs, statuses, headers."""
    context.request_processor = [RequestProcessor({}) for _ in rows]
    context.request_ids = {i: f"req-{i}" for i in range(len(rows))}
    context.metrics.request_ids = context.request_ids
    outputs = handler.handle(rows, context)
    statuses = [context.get_response_status(i)[0] for i in range(len(rows))]
    headers = [context.get_response_headers(i) for i in range(len(rows))]
    return outputs, statuses, headers


def as_json(body) -> dict:
    """How TorchServe hands over an ``application/json`` body that parsed."""
    return {"body": body}


def test_batch_of_single_requests_matches_pipeline(served, reference):
    handler, context = served
    outputs, statuses, headers = run_batch(handler, context, [as_json(ex) for ex in GOOD])
    assert statuses == [200] * len(GOOD)
    assert all(h[BATCH_SIZE_HEADER] == str(len(GOOD)) for h in headers)
    for out, ex in zip(outputs, GOOD):
        assert_same_answers(out, reference(question=ex["question"], context=ex["context"]))


def test_raw_bytes_and_text_bodies_are_parsed(served, reference):
    # TorchServe passes bytes when the content type is not JSON, str for text/*.
    handler, context = served
    ex = GOOD[0]
    rows = [
        {"body": json.dumps(ex).encode()},
        {"data": bytearray(json.dumps(ex).encode())},
        {"body": json.dumps(ex)},
    ]
    outputs, statuses, _ = run_batch(handler, context, rows)
    assert statuses == [200, 200, 200]
    want = reference(question=ex["question"], context=ex["context"])
    for out in outputs:
        assert_same_answers(out, want)


def test_list_bodies_and_per_request_settings(served, reference):
    handler, context = served
    rows = [
        as_json(GOOD[:3]),
        as_json({**GOOD[3], "top_k": 3}),
        as_json({**GOOD[0], "max_answer_len": 2}),
        as_json({**GOOD[1], "handle_impossible_answer": True, "top_k": 2}),
        as_json([{**GOOD[3], "top_k": 2}, GOOD[4]]),
        as_json([GOOD[4]]),
    ]
    outputs, statuses, _ = run_batch(handler, context, rows)
    assert statuses == [200] * len(rows)
    assert_same_answers(outputs[0], reference(GOOD[:3]))
    assert_same_answers(outputs[1], reference(question=GOOD[3]["question"], context=GOOD[3]["context"], top_k=3))
    assert_same_answers(
        outputs[2], reference(question=GOOD[0]["question"], context=GOOD[0]["context"], max_answer_len=2)
    )
    assert_same_answers(
        outputs[3],
        reference(
            question=GOOD[1]["question"], context=GOOD[1]["context"], handle_impossible_answer=True, top_k=2
        ),
    )
    assert_same_answers(outputs[4][0], reference(question=GOOD[3]["question"], context=GOOD[3]["context"], top_k=2))
    assert_same_answers(outputs[4][1], reference(question=GOOD[4]["question"], context=GOOD[4]["context"]))
    assert isinstance(outputs[5], list) and len(outputs[5]) == 1
    assert_same_answers(outputs[5][0], reference(question=GOOD[4]["question"], context=GOOD[4]["context"]))


BAD = [
    ({"body": b'{"question": "who?", "context": '}, 400, "not valid JSON"),
    ({"body": b'{"question": "\xff\xfe", "context": "x"}'}, 400, "not valid UTF-8"),
    ({"body": b""}, 400, "empty"),
    ({}, 400, "no request body"),
    (as_json({"context": "some text"}), 400, "missing 'question'"),
    (as_json({"question": "who?"}), 400, "missing 'context'"),
    (as_json({"question": 42, "context": "some text"}), 400, "'question' must be a string"),
    (as_json({"question": "who?", "context": ["a", "b"]}), 400, "'context' must be a string"),
    (as_json({"question": "   ", "context": "some text"}), 400, "'question' is empty"),
    (as_json({"question": "who?", "context": ""}), 400, "'context' is empty"),
    (as_json({"question": "who?", "context": "x" * 2001}), 413, "limit is 2000"),
    (as_json([GOOD[0]] * 5), 413, "limit is 4"),
    (as_json([GOOD[0], {"question": "who?"}]), 400, "item 1: missing 'context'"),
    (as_json([]), 400, "empty list"),
    (as_json(42), 400, "got int"),
    (as_json("just a string"), 400, "not valid JSON"),  # a JSON string: read as the JSON text itself
    (as_json(None), 400, "no request body"),
    (as_json(True), 400, "got bool"),
    (as_json({**GOOD[0], "tpk": 2}), 400, "unknown field(s) ['tpk']"),
    (as_json({**GOOD[0], "top_k": 0}), 400, "top_k must be an integer from 1 to 1000, got 0"),
    (as_json({**GOOD[0], "topk": True}), 400, "top_k must be an integer"),
    (as_json({**GOOD[0], "max_answer_len": "3"}), 400, "max_answer_len must be an integer"),
    (as_json({**GOOD[0], "handle_impossible_answer": "yes"}), 400, "handle_impossible_answer must be true"),
    # TorchServe forwards the raw bytes when its own json.loads fails (it recurses per level).
    ({"body": b"[" * 5000 + b"]" * 5000}, 400, "nested more than 32 levels deep"),
    # JSON's "\ud800" parses to a lone surrogate that no tokenizer takes (it failed the whole batch: 503).
    (as_json({"question": "who\ud800?", "context": "some text"}), 400, "'question' is not valid Unicode"),
    ({"body": b'{"question": "who?", "context": "a\\udc00b"}'}, 400, "'context' is not valid Unicode"),
    # An integer past Python's 4,300-digit conversion limit (was a 500).
    ({"body": b'{"question": "who?", "context": "x", "top_k": ' + b"9" * 5000 + b"}"}, 400, "not valid JSON"),
]


def test_bad_requests_get_their_own_error_and_spare_the_batch(served, reference):
    handler, context = served
    rows, expected = [], []
    for i, (row, status, message) in enumerate(BAD):  # interleave good requests between bad ones
        rows += [row, as_json(GOOD[i % len(GOOD)])]
        expected += [(status, message), (200, GOOD[i % len(GOOD)])]
    outputs, statuses, headers = run_batch(handler, context, rows)
    assert len(outputs) == len(rows)
    for out, status, header, (want_status, want) in zip(outputs, statuses, headers, expected):
        assert status == want_status
        assert header["content-type"] == "application/json"
        if want_status == 200:
            assert_same_answers(out, reference(question=want["question"], context=want["context"]))
        else:
            assert out["status"] == want_status and want in out["error"], out


def test_batch_of_only_bad_requests_skips_the_model(served):
    handler, context = served
    outputs, statuses, _ = run_batch(handler, context, [BAD[0][0], BAD[10][0]])
    assert statuses == [400, 413]
    assert [o["status"] for o in outputs] == [400, 413]


@pytest.mark.parametrize(
    "context_text",
    ["\x00\x01\x02", "\u200b\u200b", "🙂🙂🙂", "a", "x" * 2000, "ㄱ" * 300],
    ids=["control", "zero-width", "emoji", "one-char", "at-limit", "jamo"],
)
def test_odd_but_valid_contexts_are_answered_like_the_pipeline(served, reference, context_text):
    handler, context = served
    outputs, statuses, _ = run_batch(
        handler, context, [as_json({"question": "what?", "context": context_text})]
    )
    assert statuses == [200]
    assert_same_answers(outputs[0], reference(question="what?", context=context_text))


def test_module_entry_point_initializes_on_the_load_call(model_dir, monkeypatch, reference):
    # TorchServe calls handle(None, context) once at load, then handle(batch, context).
    monkeypatch.setattr(qa_handler, "_service", QAHandler())
    context = make_context(model_dir)
    assert qa_handler.handle(None, context) is None
    assert qa_handler._service.initialized
    context.request_processor = [RequestProcessor({})]
    [out] = qa_handler.handle([as_json(GOOD[0])], context)
    assert_same_answers(out, reference(question=GOOD[0]["question"], context=GOOD[0]["context"]))


def test_works_with_torchserves_mock_context(model_dir, reference):
    # ts' unit-test MockContext has no per-request status/headers: the handler must not need them.
    from ts.torch_handler.unit_tests.test_utils.mock_context import MockContext

    context = MockContext(model_pt_file=None, model_dir=str(model_dir), model_file=None, model_name="tiny")
    handler = QAHandler()
    handler.initialize(context)
    good, bad = handler.handle([as_json(GOOD[1]), as_json({"question": "x"})], context)
    assert_same_answers(good, reference(question=GOOD[1]["question"], context=GOOD[1]["context"]))
    assert bad == {"error": "missing 'context'", "status": 400}


def test_settings_from_yaml_and_env():
    s = HandlerSettings.resolve(
        {"backend": "torch", "max_context_chars": 10}, {"QA_BACKEND": "onnx", "QA_THREADS": "3"}
    )
    assert (s.backend, s.max_context_chars, s.threads) == ("onnx", 10, 3)
    assert HandlerSettings.resolve(None, {}) == HandlerSettings()
    with pytest.raises(QAError, match="unknown handler setting"):
        HandlerSettings.resolve({"max_chars": 5}, {})
    with pytest.raises(QAError, match="not a valid int"):
        HandlerSettings.resolve({}, {"QA_MAX_CONTEXT_CHARS": "lots"})
    with pytest.raises(QAError, match="backend must be"):
        HandlerSettings.resolve({"backend": "tensorrt"}, {})
    with pytest.raises(QAError, match="precision must be one of 'auto', 'fp32', 'bf16', 'fp16', got 'int4'"):
        HandlerSettings.resolve({}, {"QA_PRECISION": "int4"})


def test_threads_and_feature_batch_size_settings(model_dir, monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(qa_handler, "available_cpus", lambda: 8)  # hardware.py has its own tests
    try:
        handler = QAHandler()
        handler.initialize(make_context(model_dir, {"feature_batch_size": 2}, maxWorkers=4))
        assert torch.get_num_threads() == 2  # 8 cores // 4 workers
        assert handler.config.batch_size == 2
        handler.initialize(make_context(model_dir, {"threads": 1}))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_request_the_model_fails_on_fails_alone(served, reference, monkeypatch):
    """The checks cannot foresee every failure inside the core call: then each request of the batch is
    answered alone, and only the failing one gets an error (400 for a QAError, 500 for anything else)."""
    from qa_serving.serving import service

    real = service.answer

    def fragile(backend, tokenizer, examples, config, **kw):
        for ex in examples:
            if ex.question == "bad?":
                raise QAError("this question breaks the model")
            if ex.question == "crash?":
                raise RuntimeError("an internal failure")
        return real(backend, tokenizer, examples, config, **kw)

    monkeypatch.setattr(service, "answer", fragile)
    handler, context = served
    bad, crash = {**GOOD[0], "question": "bad?"}, {**GOOD[0], "question": "crash?"}
    rows = [as_json(GOOD[0]), as_json(bad), as_json(GOOD[1]), as_json(crash)]
    outputs, statuses, _ = run_batch(handler, context, rows)
    assert statuses == [200, 400, 200, 500]
    assert_same_answers(outputs[0], reference(question=GOOD[0]["question"], context=GOOD[0]["context"]))
    assert_same_answers(outputs[2], reference(question=GOOD[1]["question"], context=GOOD[1]["context"]))
    assert "breaks the model" in outputs[1]["error"] and "RuntimeError" in outputs[3]["error"]


def test_a_max_seq_len_beyond_the_models_positions_fails_the_load(model_dir, tmp_path):
    """A short warm-up would load it, and the first long context would fail its whole batch."""
    import shutil

    from qa_serving.core.config import QAConfig

    copy = Path(shutil.copytree(model_dir, tmp_path / "long"))
    QAConfig.from_model_dir(copy).replace(max_length=1000, doc_stride=128).save(copy)
    with pytest.raises(QAError, match="longer than the model's 512 positions"):
        QAHandler().initialize(make_context(copy))


def test_bad_settings_fail_the_load_not_a_request(model_dir):
    with pytest.raises(QAError, match="fp16 inference needs a GPU"):
        QAHandler().initialize(make_context(model_dir, {"precision": "fp16", "device": "cpu"}))
    with pytest.raises(QAError, match="holds no .onnx model"):
        QAHandler().initialize(make_context(model_dir, {"backend": "onnx"}))


def test_onnx_backend_matches_its_pipeline(model_dir, tmp_path):
    pytest.importorskip("optimum.onnxruntime", reason="needs optimum-onnx[onnxruntime]")
    export_onnx = pytest.importorskip("qa_serving.export.onnx").export_onnx
    onnx_dir = tmp_path / "onnx"
    export_onnx(model_dir=model_dir, output_dir=onnx_dir)
    handler = QAHandler()
    # The archive layout: model/ (torch) beside onnx/ (export); QA_BACKEND/handler.service.backend picks one.
    (tmp_path / "archive").mkdir()
    (tmp_path / "archive" / "model").symlink_to(model_dir, target_is_directory=True)
    (tmp_path / "archive" / "onnx").symlink_to(onnx_dir, target_is_directory=True)
    handler.initialize(make_context(tmp_path / "archive", {"backend": "onnx"}))
    assert type(handler.service.backend).__name__ == "OrtBackend"
    reference = pipeline("custom-qa", model=str(onnx_dir), tokenizer=str(onnx_dir))
    rows = [as_json(ex) for ex in GOOD] + [as_json({**GOOD[3], "top_k": 2}), as_json({"question": 1})]
    outputs, statuses, _ = run_batch(handler, make_context(tmp_path / "archive", {"backend": "onnx"}), rows)
    assert statuses == [200] * (len(rows) - 1) + [400]
    for out, ex in zip(outputs, GOOD):
        assert_same_answers(out, reference(question=ex["question"], context=ex["context"]))
    assert_same_answers(
        outputs[len(GOOD)], reference(question=GOOD[3]["question"], context=GOOD[3]["context"], top_k=2)
    )


def test_windows_of_all_requests_share_length_sorted_forward_passes(served):
    from qa_serving.core.windowing import prepare_features

    handler, context = served
    shapes, backend = [], handler.service.backend

    def counting(inputs):
        shapes.append(inputs["input_ids"].shape)
        return backend(inputs)

    handler.service.backend = counting
    try:
        run_batch(handler, context, [as_json(ex) for ex in GOOD] + [as_json(GOOD[3:])])
    finally:
        handler.service.backend = backend
    examples = GOOD + GOOD[3:]
    features = prepare_features(
        handler.service.tokenizer, [e["question"] for e in examples], [e["context"] for e in examples], handler.config
    )
    size = handler.config.batch_size
    assert len(features) > 2 * size  # the batch really spans several forward passes
    from qa_serving.core.batching import plan_batches

    plan = plan_batches(features.lengths, size, handler.config.max_padding)
    assert [n for n, _ in shapes] == [len(g) for g in plan]  # the library's batching, nothing of its own
    assert sum(n for n, _ in shapes) == len(features) and max(n for n, _ in shapes) == size
    lengths = [t for _, t in shapes]
    assert lengths == sorted(lengths, reverse=True)  # dynamic padding, longest windows first
    assert lengths[-1] < handler.config.max_length  # short windows are not padded to max_length


@pytest.mark.parametrize(
    ("setting", "gpu_id", "cuda", "want"),
    [
        ("auto", 1, True, "cuda:1"),  # TorchServe's gpu_id picks the card
        ("auto", None, True, "cpu"),  # TorchServe gave this worker no GPU
        ("auto", 0, False, "cpu"),  # a gpu_id but no usable CUDA
        ("cpu", 0, True, "cpu"),  # forced off the GPU
    ],
)
def test_device_follows_the_workers_gpu_id(monkeypatch, setting, gpu_id, cuda, want):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    handler = QAHandler()
    handler.settings = HandlerSettings(device=setting)
    assert handler._device(gpu_id) == want
