"""ONNX export of span models (Optimum) and the parity report against the PyTorch model.

``qa-serving export`` (:mod:`qa_serving.cli.export`) is a thin adapter over :func:`export_onnx` and
:func:`check_export`; optimum and onnxruntime are imported only when an export runs.
"""

from __future__ import annotations

from qa_serving.export.onnx import (
    ExportResult,
    detect_quantization_target,
    export_onnx,
    supported_model_types,
)
from qa_serving.export.parity import (
    ParityReport,
    ParityRow,
    check_export,
    format_table,
    logit_parity,
    quality_parity,
)

__all__ = [
    "ExportResult",
    "ParityReport",
    "ParityRow",
    "check_export",
    "detect_quantization_target",
    "export_onnx",
    "format_table",
    "logit_parity",
    "quality_parity",
    "supported_model_types",
]
