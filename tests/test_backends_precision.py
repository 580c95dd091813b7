"""``dtype="auto"`` / ``precision="auto"``: bf16 only where the hardware runs it natively, logged; the
defaults stay fp32 like the stock pipeline. Tiny random BERT, offline."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from qa_serving.core import hardware
from qa_serving.core.backends import TorchBackend, load_backend, make_backend, resolve_dtype
from qa_serving.core.config import QAConfig
from qa_serving.data.synthetic import generate_squad
from qa_serving.errors import QAError
from qa_serving.training.scratch import scratch_model, train_wordpiece_tokenizer


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    squad = generate_squad(6, seed=3)
    texts = [p["context"] for a in squad["data"] for p in a["paragraphs"]]
    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = train_wordpiece_tokenizer(texts, vocab_size=300)
    scratch_model(tokenizer, "tiny", seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    QAConfig(max_length=64, doc_stride=24, max_question_len=20).save(path)
    return path


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (frozenset({"avx512f", "avx512_bf16"}), "bf16"),
        (frozenset({"amx_bf16"}), "bf16"),
        (frozenset({"avx2"}), "fp32"),
    ],
)
def test_auto_follows_the_cpu_flags(monkeypatch, flags, expected, caplog):
    monkeypatch.setattr(hardware, "cpu_flags", lambda *a, **k: flags)
    with caplog.at_level(logging.INFO, logger="qa_serving.core.hardware"):
        assert resolve_dtype("auto", "cpu") == expected
    assert f"precision auto -> {expected}" in caplog.text


def test_explicit_values_pass_and_bad_ones_fail():
    assert resolve_dtype("fp32") == "fp32" and resolve_dtype("bf16") == "bf16"
    with pytest.raises(QAError, match="precision must be one of .auto., .fp32., .bf16., .fp16., got .int4."):
        resolve_dtype("int4")


def test_default_is_fp32_and_auto_casts(tiny_model_dir, monkeypatch):
    assert load_backend(tiny_model_dir).dtype == "fp32"  # nothing passed: the stock pipeline's numerics
    monkeypatch.setattr(hardware, "cpu_flags", lambda *a, **k: frozenset({"avx512_bf16"}))
    backend = load_backend(tiny_model_dir, dtype="auto")
    assert isinstance(backend, TorchBackend) and backend.dtype == "bf16"
    ids = np.array([[2, 5, 6, 3]], dtype=np.int64)
    start, _ = backend({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    assert start.dtype == np.float32  # logits come back fp32 whatever the compute precision
    monkeypatch.setattr(hardware, "cpu_flags", lambda *a, **k: frozenset({"avx2"}))
    assert load_backend(tiny_model_dir, dtype="auto").dtype == "fp32"


def test_pipeline_precision_argument(tiny_model_dir, monkeypatch, caplog):
    from transformers import pipeline

    import qa_serving  # noqa: F401  (registers custom-qa)

    assert pipeline("custom-qa", model=str(tiny_model_dir)).backend.dtype == "fp32"
    monkeypatch.setattr(hardware, "cpu_flags", lambda *a, **k: frozenset({"avx512_bf16"}))
    with caplog.at_level(logging.INFO, logger="qa_serving.core.hardware"):
        qa = pipeline("custom-qa", model=str(tiny_model_dir), precision="auto")
    assert qa.backend.dtype == "bf16" and "precision auto -> bf16" in caplog.text
    out = qa(question="who built it", context="the king built the tower in paris")
    assert set(out) == {"answer", "score", "start", "end"}
    with pytest.raises(QAError, match="precision must be one of 'auto', 'fp32', 'bf16', 'fp16', got 'int4'"):
        pipeline("custom-qa", model=str(tiny_model_dir), precision="int4")


def test_onnx_runtime_auto_is_fp32(tiny_model_dir, tmp_path):
    pytest.importorskip("optimum.onnxruntime")
    from export.onnx import export_onnx

    result = export_onnx(model_dir=tiny_model_dir, output_dir=tmp_path / "onnx")
    backend = load_backend(result.output_dir, dtype="auto")
    assert type(backend).__name__ == "OrtBackend"
    with pytest.raises(QAError, match="dtype applies"):
        make_backend(backend.ort_model, dtype="bf16")


def test_graph_feed_gives_a_graph_what_it_takes():
    """An XLM-R tokenizer gives no token_type_ids, a BERT-architecture graph (multilingual-e5-small
    exported) requires them: zeros are fed, inputs the graph does not take are dropped."""
    from qa_serving.core.backends import graph_feed

    ids = np.array([[0, 17, 2, 1]], dtype=np.int64)
    inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": ids}
    feed = graph_feed(inputs, {"input_ids", "attention_mask", "token_type_ids"})
    assert set(feed) == {"input_ids", "attention_mask", "token_type_ids"}
    assert feed["token_type_ids"].shape == ids.shape and not feed["token_type_ids"].any()
    given = {**inputs, "token_type_ids": np.ones_like(ids)}
    assert graph_feed(given, {"input_ids", "token_type_ids"})["token_type_ids"] is given["token_type_ids"]
    assert set(graph_feed(inputs, {"input_ids"})) == {"input_ids"}
