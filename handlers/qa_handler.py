"""TorchServe handler for extractive QA: TorchServe glue over :class:`qa_serving.serving.service.QAService`.

The request model and its wire envelopes (project JSON, Open Inference Protocol v2, per-request errors)
are :mod:`qa_serving.serving.request`, ``json_api`` and ``v2_api``; the answers come from the one core call
(:mod:`qa_serving.core.answering`), as for ``pipeline("custom-qa")``. The settings (the ``handler:``
section of model-config.yaml and the ``QA_*`` env vars) are :class:`qa_serving.serving.settings.HandlerSettings`.
One TorchServe batch is answered in one pass: ``preprocess`` parses every request (a bad one gets its error,
never an exception), ``inference`` answers all valid examples in one core call, ``postprocess`` renders each
request's body in its envelope, in order.

This file is the entry ``torch-model-archiver --handler`` packs (installed as ``qa_serving.handlers``);
in an archive it sits beside ``qa_serving.zip``, the library it was archived with.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# The archive carries the library as qa_serving.zip beside this file; prefer it over whatever is installed,
# so a served model runs exactly the code it was archived with (and needs no repo checkout).
_BUNDLE = Path(__file__).resolve().with_name("qa_serving.zip")
if _BUNDLE.is_file() and str(_BUNDLE) not in sys.path:
    sys.path.insert(0, str(_BUNDLE))

from ts.torch_handler.base_handler import BaseHandler

import qa_serving
from qa_serving.core.hardware import available_cpus
from qa_serving.serving.request import PHRASES, Request, row_body
from qa_serving.serving.service import QAService
from qa_serving.serving.settings import HandlerSettings

logger = logging.getLogger(__name__)

BATCH_SIZE_HEADER = "x-qa-batch-size"


class QAHandler(BaseHandler):
    """Batched extractive QA over :mod:`qa_serving` (see the module docstring)."""

    def initialize(self, context) -> None:
        self.context = context
        self.manifest = getattr(context, "manifest", None)
        yaml_config = getattr(context, "model_yaml_config", None) or {}
        self.settings = HandlerSettings.resolve(yaml_config.get("handler"))
        path = self._model_path(Path(context.system_properties["model_dir"]))
        self.device = self._device(context.system_properties.get("gpu_id"))
        self._set_threads(yaml_config)
        self.service = QAService.load(path, self.settings, device=self.device)
        self.config = self.service.config
        self.initialized = True
        logger.info(
            "qa handler ready: model %s, backend=%s precision=%s device=%s threads=%s, qa_serving from %s, %s",
            path,
            self.settings.backend,
            self.settings.precision,
            self.device,
            _torch_threads(),
            Path(qa_serving.__file__).parent,
            self.config,
        )

    def _model_path(self, model_dir: Path) -> Path:
        # `qa-serving archive` puts the model in model/ and an optional ONNX export in onnx/.
        if self.settings.backend == "onnx" and (model_dir / "onnx").is_dir():
            return model_dir / "onnx"
        return model_dir / "model" if (model_dir / "model").is_dir() else model_dir

    def _device(self, gpu_id) -> str:
        import torch

        if self.settings.device == "auto" and gpu_id is not None and torch.cuda.is_available():
            return f"cuda:{int(gpu_id)}"
        return "cpu"

    def _set_threads(self, yaml_config: Mapping[str, Any]) -> None:
        import torch

        threads = self.settings.threads
        if not threads:
            workers = int(yaml_config.get("maxWorkers") or yaml_config.get("minWorkers") or 1)
            threads = max(1, available_cpus() // max(1, workers))
        torch.set_num_threads(threads)

    # --- template method ---------------------------------------------------------------------------

    def preprocess(self, data: list) -> list[Request]:
        """Parse every request of the batch; a bad one records its error and never raises."""
        return [self.service.parse(row_body(row)) for row in data]

    def inference(self, requests: list[Request]) -> tuple[list[Request], list]:
        """All valid examples of the batch in one core call (they share windows and forward passes)."""
        answers = self.service.answer(requests)
        stats = self.service.last
        if stats.examples:
            logger.info(
                "qa batch: %d requests, %d examples, %d windows, %.1f ms",
                stats.requests, stats.examples, stats.windows, 1000 * stats.seconds,
            )  # fmt: skip
        return requests, answers

    def postprocess(self, scored: tuple[list[Request], list]) -> list:
        """Bodies per request, in request order; error objects (with their HTTP status) for bad ones."""
        requests, answers = scored
        model = (getattr(self.context, "manifest", None) or {}).get("model", {})
        out = []
        rendered = self.service.render(requests, answers, model.get("modelName"), model.get("modelVersion"))
        for idx, (status, body) in enumerate(rendered):
            self._set_header(idx, "content-type", "application/json")
            self._set_header(idx, BATCH_SIZE_HEADER, str(len(requests)))
            if status != 200:
                self._set_status(idx, status)
            out.append(body)
        self._metric("QABatchSize", len(requests))
        self._metric("QAWindows", self.service.last.windows)
        return out

    # --- context helpers (the unit tests' mock context may lack some of these) ----------------------

    def _set_status(self, idx: int, status: int) -> None:
        setter = getattr(self.context, "set_response_status", None)
        if setter is not None:
            setter(status, PHRASES.get(status, ""), idx)

    def _set_header(self, idx: int, key: str, value: str) -> None:
        try:
            self.context.set_response_header(idx, key, value)
        except (AttributeError, TypeError, IndexError):
            pass

    def _metric(self, name: str, value: float) -> None:
        metrics = getattr(self.context, "metrics", None)
        if metrics is None:
            return
        try:
            from ts.metrics.metric_type_enum import MetricTypes

            metrics.add_metric(name, value, "count", metric_type=MetricTypes.GAUGE)
        except Exception:  # metrics must never fail a batch
            logger.debug("could not emit metric %s", name, exc_info=True)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


# TorchServe entry point. A module-level function (rather than the class) because the loader accepts a
# class only when it is the module's single class. TorchServe calls handle(None, context) once at load.
_service = QAHandler()


def handle(data: list | None, context) -> list | None:
    """Initialize on the load call, then answer one batch per call."""
    if not _service.initialized:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
