"""ONNX export: fp32 / O2 / int8 variants load and answer like the PyTorch model; bad input fails clearly.

One tiny random BERT (``qa_serving.training.scratch``) is exported once per module and shared; a random model is
enough for parity, since both sides see the same weights and the same windows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("optimum.onnxruntime")

from conftest import EXPORT_QA_CONFIG_FIELDS
from qa_serving.export.onnx import detect_quantization_target, export_onnx
from qa_serving.export.parity import check_export, format_table, logit_parity, quality_parity

from qa_serving.cli.main import main
from qa_serving.core.backends import load_backend, load_onnx_model
from qa_serving.core.config import QAConfig
from qa_serving.data.loading import load_examples
from qa_serving.errors import QAError

QA_CONFIG = QAConfig(**EXPORT_QA_CONFIG_FIELDS)
RANDOM_MODEL_F1_DROP = 50.0  # see the `exported` fixture


@pytest.fixture(scope="module")
def exported(tiny_model_dir, eval_file, tmp_path_factory):
    """fp32 + O2 + int8 (auto) export and its parity report, shared by the tests below.

    The model is random, so its int8 F1 on 45 questions is noise (one changed answer moves F1 by up to
    2.2 points, and the int8 kernels differ between CPUs: CI failed here once with the default 1-point
    threshold). The F1-drop rule itself is tested on a controlled backend in
    ``test_rules_fail_on_logit_drift_and_f1_drop`` and through the CLI below.
    """
    out = tmp_path_factory.mktemp("onnx") / "out"
    result = export_onnx(model_dir=tiny_model_dir, output_dir=out, optimize="O2", quantize="auto")
    report = check_export(
        model_dir=tiny_model_dir, result=result, eval_file=eval_file, max_f1_drop=RANDOM_MODEL_F1_DROP
    )
    return result, report


def _row(report, variant):
    return next(r for r in report.rows if r.variant == variant)


# --- export + parity ---------------------------------------------------------------------------------


def test_layout_each_variant_is_a_complete_model_folder(exported):
    result, _ = exported
    assert set(result.variants()) == {"fp32", "O2", "int8"}
    assert result.quantize == detect_quantization_target()
    for folder in result.variants().values():
        names = {p.name for p in folder.iterdir()}
        assert {"config.json", "tokenizer.json", "qa_config.json"} <= names
        assert len([n for n in names if n.endswith(".onnx")]) == 1
        assert QAConfig.from_model_dir(folder) == QA_CONFIG
    saved = json.loads((result.output_dir / "parity.json").read_text())
    assert saved["passed"] is True and saved["max_f1_drop"] == RANDOM_MODEL_F1_DROP
    assert [row["variant"] for row in saved["rows"]] == ["pytorch", "fp32", "O2", "int8"]


def test_fp32_loads_with_optimum_dynamic_axes_and_logit_parity(exported):
    from optimum.onnxruntime import ORTModelForQuestionAnswering

    result, report = exported
    model = ORTModelForQuestionAnswering.from_pretrained(result.output_dir)
    assert Path(model.path) == result.fp32
    # Optimum searches folders recursively: the variants' files must not shadow the fp32 one.
    assert list(result.output_dir.rglob("model.onnx")) == [result.fp32]
    for inp in model.session.get_inputs():
        assert all(isinstance(dim, str) for dim in inp.shape), inp.shape  # dynamic batch and sequence
    fp32 = _row(report, "fp32")
    assert fp32.max_logit_diff < 1e-3
    assert fp32.identical_spans >= 0.995
    assert fp32.passed and report.passed
    assert report.n_logit_windows > report.n_questions // 4  # real windows, several per long context


def test_o2_loads_and_answers(exported):
    result, report = exported
    backend = load_backend(result.optimized.parent)
    assert backend.ort_model.path == result.optimized
    o2 = _row(report, "O2")
    assert o2.identical_spans >= 0.995 and o2.passed


def test_int8_loads_answers_and_reports_f1_drop(exported):
    from optimum.onnxruntime import ORTModelForQuestionAnswering

    result, report = exported
    model = ORTModelForQuestionAnswering.from_pretrained(
        result.quantized.parent, file_name=result.quantized.name
    )
    graph = __import__("onnx").load(str(result.quantized)).graph
    ops = {node.op_type for node in graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeLinear"}, ops  # really quantized
    # Per-channel weight scales by default (one scale per output column, not one per tensor).
    scales = [
        t for t in graph.initializer if t.name.endswith("_scale") and len(t.dims) == 1 and t.dims[0] > 1
    ]
    assert scales, "expected per-channel weight scales"
    assert model.session is not None
    int8 = _row(report, "int8")
    assert int8.f1_drop is not None and np.isfinite(int8.f1_drop)
    assert int8.max_logit_diff > 0
    table = format_table(report.rows)
    assert "| int8 |" in table and "| pytorch |" in table


def test_pipeline_and_evaluate_accept_the_onnx_folders(exported, eval_file, capsys):
    from transformers import pipeline

    result, report = exported
    context = "Ada Brook was born in Lisbon in 1901. She worked as a painter."
    for folder in result.variants().values():
        out = pipeline("custom-qa", model=str(folder))(question="Where was Ada Brook born?", context=context)
        assert set(out) == {"answer", "score", "start", "end"}
        assert context[out["start"] : out["end"]] == out["answer"]
    capsys.readouterr()
    assert (
        main(
            ["evaluate", "--model", str(result.output_dir), "--eval-file", str(eval_file), "--device", "cpu"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    metrics = json.loads(printed[printed.index("{") :])
    assert metrics["f1"] == pytest.approx(_row(report, "fp32").f1)  # same path, same figures
    assert main(["evaluate", "--model", str(result.quantized.parent), "--eval-file", str(eval_file)]) == 0


def test_frozen_encoder_head_exports(tmp_path, tiny_model_dir, eval_file):
    """`train --freeze-encoder` models are not an Optimum model type; they export via their encoder's config."""
    from transformers import AutoTokenizer, BertModel

    from qa_serving.training.heads import FrozenEncoderForQuestionAnswering
    from qa_serving.training.scratch import scratch_config

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    BertModel(scratch_config(len(tokenizer), "tiny")).save_pretrained(tmp_path / "encoder")
    model = FrozenEncoderForQuestionAnswering.from_encoder(str(tmp_path / "encoder"), head_hidden_size=16)
    model.save_pretrained(tmp_path / "frozen")
    tokenizer.save_pretrained(tmp_path / "frozen")
    QA_CONFIG.save(tmp_path / "frozen")
    result = export_onnx(model_dir=tmp_path / "frozen", output_dir=tmp_path / "out", optimize="O1")
    report = check_export(
        model_dir=tmp_path / "frozen", result=result, eval_file=eval_file, max_eval_samples=20
    )
    assert report.passed, format_table(report.rows)
    assert _row(report, "fp32").max_logit_diff < 1e-3
    assert (
        json.loads((result.optimized.parent / "config.json").read_text())["model_type"]
        == model.config.model_type
    )


# --- verdicts --------------------------------------------------------------------------------------


class _Shifted:
    """A backend whose logits are off by a constant: parity must catch it."""

    def __init__(self, backend, shift: float) -> None:
        self.backend, self.shift = backend, shift

    def __call__(self, inputs):
        start, end = self.backend(inputs)
        return start + self.shift, end


def test_rules_fail_on_logit_drift_and_f1_drop(tiny_model_dir, eval_file):
    from transformers import AutoTokenizer

    torch_backend = load_backend(tiny_model_dir, backend="torch", device="cpu")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    data = load_examples(eval_file).select(range(12))
    diff, n = logit_parity(
        torch_backend, torch_backend, tokenizer, data["question"], data["context"], QA_CONFIG
    )
    assert diff == 0.0 and n >= 12
    report = quality_parity(
        torch_backend,
        {"fp32": ("x", _Shifted(torch_backend, 0.01))},
        tokenizer,
        data,
        QA_CONFIG,
        max_f1_drop=-1.0,
    )
    (row,) = report.rows[1:]
    assert row.max_logit_diff == pytest.approx(0.01, rel=1e-3)
    assert not report.passed
    assert any("logit diff" in p for p in row.problems) and any("F1 drop" in p for p in row.problems)
    assert "FAIL" in format_table(report.rows)


# --- CLI -------------------------------------------------------------------------------------------


def test_cli_export_end_to_end_and_impossible_f1_threshold(tiny_model_dir, eval_file, tmp_path, capsys):
    out = tmp_path / "cli-out"
    args = [
        "export",
        "--model",
        str(tiny_model_dir),
        "--output",
        str(out),
        "--eval-file",
        str(eval_file),
        "--max-eval-samples",
        "20",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| fp32 |" in printed and "PASS" in printed
    parity = json.loads((out / "parity.json").read_text())
    assert parity["passed"] and parity["n_questions"] == 20
    assert [r["variant"] for r in parity["rows"]] == ["pytorch", "fp32"]

    assert main(args + ["--overwrite", "--quantize", "--max-f1-drop", "-1"]) == 1
    assert "FAIL" in capsys.readouterr().out
    assert json.loads((out / "parity.json").read_text())["passed"] is False


def test_cli_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = capsys.readouterr().out
    for flag in ("--optimize", "--quantize", "--device", "--eval-file", "--max-f1-drop", "--skip-parity"):
        assert flag in text


# --- errors ----------------------------------------------------------------------------------------


def test_bad_model_path(tmp_path, capsys):
    with pytest.raises(QAError, match="does not exist"):
        export_onnx(model_dir=tmp_path / "missing", output_dir=tmp_path / "out")
    with pytest.raises(QAError, match="no config.json"):
        export_onnx(model_dir=tmp_path, output_dir=tmp_path / "out")
    assert main(["export", "--model", str(tmp_path / "missing"), "--output", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_missing_weights(tiny_model_dir, tmp_path):
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (no_weights / name).write_bytes((tiny_model_dir / name).read_bytes())
    with pytest.raises(QAError, match="could not export"):
        export_onnx(model_dir=no_weights, output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()  # no half-written export left behind


def test_output_folder_guarded(tiny_model_dir, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(QAError, match="not empty"):
        export_onnx(model_dir=tiny_model_dir, output_dir=tmp_path)
    with pytest.raises(QAError, match="previous export"):
        export_onnx(model_dir=tiny_model_dir, output_dir=tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").exists()
    with pytest.raises(QAError, match="differ"):
        export_onnx(model_dir=tiny_model_dir, output_dir=tiny_model_dir)


def test_unsupported_architecture(tmp_path):
    """GPT-2 has a QA head in transformers, but Optimum exports gpt2 only for other tasks."""
    from transformers import GPT2Config, GPT2ForQuestionAnswering

    GPT2ForQuestionAnswering(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50)).save_pretrained(
        tmp_path
    )
    with pytest.raises(QAError, match="cannot export gpt2 models.*bert"):
        export_onnx(model_dir=tmp_path, output_dir=tmp_path / "out")


def test_o4_needs_a_gpu(tiny_model_dir, tmp_path):
    with pytest.raises(QAError, match="O4.*GPU"):
        export_onnx(model_dir=tiny_model_dir, output_dir=tmp_path / "out", optimize="O4", device="cpu")


def test_bad_options(tiny_model_dir, tmp_path):
    with pytest.raises(QAError, match="optimize must be"):
        export_onnx(model_dir=tiny_model_dir, output_dir=tmp_path / "out", optimize="O9")
    with pytest.raises(QAError, match="quantize must be"):
        export_onnx(model_dir=tiny_model_dir, output_dir=tmp_path / "out", quantize="avx9000")
    with pytest.raises(QAError, match="device must be"):
        export_onnx(model_dir=tiny_model_dir, output_dir=tmp_path / "out", device="tpu")


def test_cuda_without_onnxruntime_gpu(tiny_model_dir, exported, tmp_path):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed")
    with pytest.raises(QAError, match="onnxruntime-gpu"):
        export_onnx(model_dir=tiny_model_dir, output_dir=tmp_path / "out", device="cuda")
    with pytest.raises(QAError, match="onnxruntime-gpu"):
        load_onnx_model(exported[0].output_dir, device="cuda")


def test_missing_optimum_says_what_to_install(monkeypatch):
    import sys

    from qa_serving.export import onnx as export_module

    monkeypatch.setitem(sys.modules, "optimum.exporters.onnx", None)
    with pytest.raises(ImportError, match=r"qa-serving\[onnx\]"):
        export_module._optimum()
