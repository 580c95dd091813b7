"""Export a fine-tuned span model folder to OpenVINO IR with Optimum-Intel, plus int8 variants via NNCF.

Layout of the output folder (each variant is a complete ``OVModelForQuestionAnswering`` folder with
``config.json``, the tokenizer and ``qa_config.json``, so ``pipeline("custom-qa", model=...)``,
``qa-serving evaluate --model ...`` and the handler load any of them; ``openvino_model.xml`` makes
:func:`qa_serving.core.backends.load_model` pick the OpenVINO backend by itself)::

    out/             openvino_model.xml/.bin   fp32 weights, dynamic batch and sequence axes
    out/int8-weights/                          NNCF weight-only int8 (activations stay fp32/bf16)
    out/int8/                                  NNCF full int8 (weights + activations, calibrated)
    out/parity.json                            the same gate as the ONNX export (export/parity.py)

Deliberate choices:
- NNCF is called directly on the OpenVINO model (``compress_weights`` / ``quantize``) rather than
  through ``OVQuantizer``: the calibration windows then come from our own windowing, the same inputs
  the served model sees, and no hub dataset is needed.
- The IR stores fp32 weights; precision at run time is a compile-time hint (bf16 where the CPU has
  avx512_bf16/AMX), chosen by :func:`qa_serving.core.backends.openvino_config`, not baked into the file.
- The parity report has a ``bf16`` row (the fp32 IR run with the bf16 hint) on CPUs with native bf16:
  it is held to the F1-drop rule only, like int8.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from qa_serving.core.config import QAConfig
from qa_serving.core.windowing import quiet_mistral_regex_warning
from qa_serving.errors import QAError

logger = logging.getLogger(__name__)

OV_XML = "openvino_model.xml"
QUANTIZE_MODES = ("int8-weights", "int8")
CALIBRATION_WINDOWS = 128


@dataclass
class OVExportResult:
    """Where each exported variant went (folders are loadable models)."""

    output_dir: Path
    quantized: dict[str, Path]

    @property
    def fp32(self) -> Path:
        return self.output_dir / OV_XML

    def variants(self) -> dict[str, Path]:
        """Variant label -> model folder, e.g. ``{"fp32": out, "int8-weights": out/"int8-weights"}``."""
        return {"fp32": self.output_dir, **self.quantized}


def _openvino():
    try:
        import nncf
        import openvino
        from optimum.intel import OVModelForQuestionAnswering
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "OpenVINO export needs optimum-intel, openvino and nncf: pip install 'qa-serving[openvino]'; "
            f"import failed with: {err}"
        ) from err
    return nncf, openvino, OVModelForQuestionAnswering


def _check(model_dir: Path, output_dir: Path, quantize: tuple[str, ...], overwrite: bool) -> None:
    bad = [q for q in quantize if q not in QUANTIZE_MODES]
    if bad:
        raise QAError(f"quantize must be among {QUANTIZE_MODES}, got {bad}")
    if not (model_dir / "config.json").is_file():
        raise QAError(f"{model_dir} holds no config.json; pass a fine-tuned PyTorch model folder")
    if output_dir.resolve() == model_dir.resolve():
        raise QAError("the output folder must differ from the model folder")
    if output_dir.exists() and any(output_dir.iterdir()):
        if not overwrite:
            raise QAError(
                f"output folder {output_dir} is not empty; choose another one or pass overwrite=True"
            )
        if not (output_dir / OV_XML).is_file():
            raise QAError(f"overwrite only replaces a previous export; {output_dir} holds no {OV_XML}")
        shutil.rmtree(output_dir)


def calibration_batches(
    tokenizer, questions, contexts, config: QAConfig, n_windows: int = CALIBRATION_WINDOWS
):
    """Padded single-window feeds (numpy dicts) for NNCF, built by the library's own windowing."""
    from qa_serving.core.batching import make_batch
    from qa_serving.core.windowing import prepare_features

    features = prepare_features(tokenizer, list(questions), list(contexts), config)
    return [make_batch(features, [i], None).inputs for i in range(min(n_windows, len(features)))]


def _finish_folder(folder: Path, config, tokenizer, qa_config: QAConfig) -> None:
    config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    qa_config.save(folder)


@quiet_mistral_regex_warning()
def export_openvino(
    *,
    model_dir: str | Path,
    output_dir: str | Path,
    quantize: tuple[str, ...] | list[str] = ("int8-weights",),
    calibration: tuple[list[str], list[str]] | None = None,
    overwrite: bool = False,
) -> OVExportResult:
    """Export ``model_dir`` to an fp32 OpenVINO IR in ``output_dir``, plus NNCF int8 variants.

    ``quantize``: any of ``"int8-weights"`` (weight-only, no data needed) and ``"int8"`` (weights and
    activations; calibrated on ``calibration`` = ``(questions, contexts)``, by default a generated
    synthetic set, which only fixes activation ranges).

    >>> export_openvino(model_dir="runs/model", output_dir="runs/ov", quantize=["int8-weights", "int8"]).variants()  # doctest: +SKIP
    {'fp32': PosixPath('runs/ov'), 'int8-weights': PosixPath('runs/ov/int8-weights'), 'int8': ...}
    """
    nncf, openvino, ov_cls = _openvino()
    from transformers import AutoConfig

    from qa_serving.core.windowing import load_tokenizer

    model_dir, output_dir = Path(model_dir), Path(output_dir)
    quantize = tuple(quantize or ())
    _check(model_dir, output_dir, quantize, overwrite)
    config = AutoConfig.from_pretrained(model_dir)
    tokenizer = load_tokenizer(model_dir)
    qa_config = QAConfig.from_model_dir(model_dir)
    logger.info("exporting %s (%s) to OpenVINO IR in %s", model_dir, config.model_type, output_dir)
    try:
        ov_model = ov_cls.from_pretrained(str(model_dir), export=True, compile=False)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise QAError(f"Optimum-Intel could not convert {model_dir} to OpenVINO: {err}") from err
    output_dir.mkdir(parents=True, exist_ok=True)
    ov_model.save_pretrained(output_dir)
    _finish_folder(output_dir, config, tokenizer, qa_config)

    result = OVExportResult(output_dir, {})
    for mode in quantize:
        folder = output_dir / mode
        folder.mkdir(parents=True, exist_ok=True)
        graph = openvino.Core().read_model(output_dir / OV_XML)
        if mode == "int8-weights":
            logger.info("NNCF weight-only int8 to %s", folder)
            graph = nncf.compress_weights(graph, mode=nncf.CompressWeightsMode.INT8_ASYM)
        else:
            questions, contexts = calibration or _synthetic_calibration()
            feeds = calibration_batches(tokenizer, questions, contexts, qa_config)
            logger.info("NNCF int8 (%d calibration windows) to %s", len(feeds), folder)
            graph = nncf.quantize(
                graph,
                nncf.Dataset(feeds),
                model_type=nncf.ModelType.TRANSFORMER,
                subset_size=len(feeds),
            )
        openvino.save_model(graph, folder / OV_XML, compress_to_fp16=False)
        _finish_folder(folder, config, tokenizer, qa_config)
        result.quantized[mode] = folder
    return result


def _synthetic_calibration() -> tuple[list[str], list[str]]:
    from qa_serving.data.synthetic import generate_squad

    squad = generate_squad(20, seed=1234)
    pairs = [
        (qa["question"], p["context"]) for a in squad["data"] for p in a["paragraphs"] for qa in p["qas"]
    ]
    return [q for q, _ in pairs], [c for _, c in pairs]


def check_openvino_export(
    *, model_dir: str | Path, result: OVExportResult, bf16: bool | None = None, **options
):
    """Parity of every OpenVINO variant vs the PyTorch model, with the ONNX export's rules
    (:func:`qa_serving.export.parity.check_variants`; ``options`` are its keywords).

    The ``fp32`` row runs with the f32 precision hint (logits within 1e-3, identical spans); int8 rows
    and, where the CPU has native bf16 (``bf16=None``: detected), a ``bf16`` row are held to the F1-drop
    rule. Writes ``parity.json`` into the export folder.
    """
    from qa_serving.export.parity import check_variants

    from qa_serving.core.backends import load_backend
    from qa_serving.core.hardware import has_native_bf16

    def load_variants() -> dict:
        out = {"fp32": (str(result.output_dir), load_backend(result.output_dir, "openvino", dtype="fp32"))}
        if has_native_bf16() if bf16 is None else bf16:
            out["bf16"] = (str(result.output_dir), load_backend(result.output_dir, "openvino", dtype="bf16"))
        for name, folder in result.quantized.items():
            out[name] = (str(folder), load_backend(folder, "openvino", dtype="fp32"))
        return out

    return check_variants(model_dir, result.output_dir, load_variants, device="cpu", **options)


__all__ = [
    "QUANTIZE_MODES",
    "OVExportResult",
    "calibration_batches",
    "check_openvino_export",
    "export_openvino",
]
