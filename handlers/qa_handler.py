"""TorchServe handler for extractive QA: a thin adapter over :mod:`qa_serving`.

Request body: JSON ``{"question": str, "context": str}`` with optional ``top_k``, ``max_answer_len`` and
``handle_impossible_answer``, or a list of such objects. Response: the ``custom-qa`` pipeline's answer
dicts ``{"answer", "score", "start", "end"}`` (one dict, or a list when ``top_k > 1``; a list of those for
a list body), or ``{"error": message, "status": 400|413}`` with that HTTP status. Open Inference Protocol
(KServe v2) bodies, ``{"inputs": [{"name": "question", "datatype": "BYTES", ...}, {"name": "context", ...}]}``,
get a v2 response with the outputs ``answer``, ``score``, ``start`` and ``end`` (see :func:`parse_v2_request`).

One TorchServe batch (``batchSize``/``maxBatchDelay`` in model-config.yaml) is answered in one pass:
``preprocess`` parses every request (bad ones get an error, never an exception), ``inference`` windows
all valid examples together with :func:`qa_serving.windowing.prepare_features` and runs the windows
through the backend in length-sorted, dynamically padded chunks (:func:`qa_serving.inference.window_logits`),
``postprocess`` scores answers per example (:func:`qa_serving.inference.answers_from_logits`), grouped by
the per-request settings, and maps them back to each request in order.

Settings come from the ``handler:`` section of the archive's model-config.yaml; environment variables
(``QA_BACKEND``, ``QA_DTYPE``, ``QA_DEVICE``, ``QA_MAX_CONTEXT_CHARS``, ``QA_MAX_EXAMPLES``,
``QA_FEATURE_BATCH_SIZE``, ``QA_THREADS``) override them for every model of the server.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

# The archive carries the library as qa_serving.zip beside this file; prefer it over whatever is installed,
# so a served model runs exactly the code it was archived with (and needs no repo checkout).
_BUNDLE = Path(__file__).resolve().with_name("qa_serving.zip")
if _BUNDLE.is_file() and str(_BUNDLE) not in sys.path:
    sys.path.insert(0, str(_BUNDLE))

import numpy as np
from ts.torch_handler.base_handler import BaseHandler

import qa_serving
from qa_serving.backends import load_backend
from qa_serving.config import QAConfig
from qa_serving.errors import QAError
from qa_serving.inference import answers_from_logits, window_logits
from qa_serving.windowing import Features, prepare_features

logger = logging.getLogger(__name__)

BATCH_SIZE_HEADER = "x-qa-batch-size"
_PHRASES = {400: "Bad Request", 413: "Payload Too Large", 500: "Internal Server Error"}
_FIELDS = ("question", "context", "top_k", "max_answer_len", "handle_impossible_answer")


@dataclass
class HandlerSettings:
    """The ``handler:`` section of model-config.yaml; each field can be overridden by its env var."""

    backend: str = "torch"  # torch | onnx
    dtype: str = "fp32"  # fp32 | fp16 | bf16 (torch backend)
    device: str = "auto"  # auto: the worker's GPU (gpu_id) when CUDA is available, else CPU; or cpu
    max_context_chars: int = 100_000  # longer contexts are answered with 413
    max_examples: int = 64  # examples in one list body; more -> 413
    feature_batch_size: int = 0  # windows per forward pass; 0 = qa_config.json batch_size
    threads: int = 0  # torch intra-op threads per worker; 0 = available_cpus() // maxWorkers

    ENV: ClassVar[dict[str, str]] = {
        "backend": "QA_BACKEND",
        "dtype": "QA_DTYPE",
        "device": "QA_DEVICE",
        "max_context_chars": "QA_MAX_CONTEXT_CHARS",
        "max_examples": "QA_MAX_EXAMPLES",
        "feature_batch_size": "QA_FEATURE_BATCH_SIZE",
        "threads": "QA_THREADS",
    }

    def __post_init__(self) -> None:
        if self.backend not in ("torch", "onnx"):
            raise QAError(f"handler.backend must be 'torch' or 'onnx', got {self.backend!r}")
        if self.dtype not in ("fp32", "fp16", "bf16"):
            raise QAError(f"handler.dtype must be fp32, fp16 or bf16, got {self.dtype!r}")
        if self.device not in ("auto", "cpu"):
            raise QAError(f"handler.device must be 'auto' or 'cpu', got {self.device!r}")
        for name in ("max_context_chars", "max_examples"):
            if getattr(self, name) < 1:
                raise QAError(f"handler.{name} must be positive, got {getattr(self, name)}")
        for name in ("feature_batch_size", "threads"):
            if getattr(self, name) < 0:
                raise QAError(f"handler.{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def resolve(
        cls, section: Mapping[str, Any] | None, env: Mapping[str, str] = os.environ
    ) -> HandlerSettings:
        """Settings from the yaml section, then the env vars on top.

        Example: ``resolve({"backend": "torch"}, {"QA_BACKEND": "onnx"}).backend`` -> ``"onnx"``.
        """
        section = dict(section or {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(section) - set(fields)
        if unknown:
            raise QAError(
                f"unknown handler setting(s) {sorted(unknown)} in model-config.yaml; known: {sorted(fields)}"
            )
        for name, var in cls.ENV.items():
            if env.get(var):
                section[name] = env[var]
        values = {}
        for name, value in section.items():
            kind = type(fields[name].default)
            try:
                values[name] = kind(value)
            except (TypeError, ValueError):
                raise QAError(f"handler setting {name}={value!r} is not a valid {kind.__name__}") from None
        return cls(**values)


class RequestError(QAError):
    """A request the handler answers with an error object and a non-200 status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Example:
    question: str
    context: str
    top_k: int
    max_answer_len: int
    version_2: bool


@dataclass
class Request:
    """One request of the TorchServe batch: its examples, or why it failed."""

    examples: list[Example] = field(default_factory=list)
    single: bool = True
    error: RequestError | None = None
    v2: V2Request | None = None  # set for an Open Inference Protocol (KServe v2) body


@dataclass
class Scored:
    """What ``inference`` hands to ``postprocess``: the parsed batch and the logits of every window."""

    requests: list[Request]
    examples: list[Example]
    features: Features | None
    starts: list[np.ndarray]
    ends: list[np.ndarray]


class QAHandler(BaseHandler):
    """Batched extractive QA over :mod:`qa_serving` (see the module docstring)."""

    def initialize(self, context) -> None:
        from transformers import AutoTokenizer

        self.context = context
        self.manifest = getattr(context, "manifest", None)
        yaml_config = getattr(context, "model_yaml_config", None) or {}
        self.settings = HandlerSettings.resolve(yaml_config.get("handler"))
        model_dir = Path(context.system_properties["model_dir"])
        path = self._model_path(model_dir)
        self.device = self._device(context.system_properties.get("gpu_id"))
        self._set_threads(yaml_config)
        self.config = QAConfig.from_model_dir(path)
        if self.settings.feature_batch_size:
            self.config = self.config.replace(batch_size=self.settings.feature_batch_size)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), use_fast=True)
        self.backend = load_backend(
            path, backend=self.settings.backend, device=self.device, dtype=self.settings.dtype
        )
        # One example end to end, so a broken model or config fails the worker's load, not the first request.
        features = prepare_features(self.tokenizer, ["warm up?"], ["warm up the model."], self.config)
        window_logits(self.backend, features, self.config)
        self.initialized = True
        logger.info(
            "qa handler ready: model %s, backend=%s dtype=%s device=%s threads=%s, qa_serving from %s, %s",
            path,
            self.settings.backend,
            self.settings.dtype,
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
        requests = []
        for i, row in enumerate(data):
            try:
                body = request_body(row)
                if is_v2_body(body):
                    examples, v2 = parse_v2_request(body, self.settings, self.config)
                    requests.append(Request(examples=examples, single=False, v2=v2))
                else:
                    examples, single = parse_body(body, self.settings, self.config)
                    requests.append(Request(examples=examples, single=single))
            except RequestError as err:
                requests.append(Request(error=err))
            except Exception as err:  # one odd request must not fail the others
                logger.exception("request %d of the batch could not be parsed", i)
                requests.append(
                    Request(error=RequestError(500, f"internal error while parsing the request: {err}"))
                )
        return requests

    def inference(self, requests: list[Request]) -> Scored:
        """Window every valid example of the batch at once and run all windows through the backend."""
        examples = [ex for req in requests if req.error is None for ex in req.examples]
        if not examples:
            return Scored(requests, examples, None, [], [])
        start = time.perf_counter()
        features = prepare_features(
            self.tokenizer, [ex.question for ex in examples], [ex.context for ex in examples], self.config
        )
        starts, ends = window_logits(self.backend, features, self.config)
        logger.info(
            "qa batch: %d requests, %d examples, %d windows, %.1f ms",
            len(requests),
            len(examples),
            len(features),
            1000 * (time.perf_counter() - start),
        )
        return Scored(requests, examples, features, starts, ends)

    def postprocess(self, scored: Scored) -> list:
        """Answers per request, in request order; error objects (with their HTTP status) for bad ones."""
        answers = self._answers(scored)
        out, cursor = [], 0
        for idx, req in enumerate(scored.requests):
            self._set_header(idx, "content-type", "application/json")
            self._set_header(idx, BATCH_SIZE_HEADER, str(len(scored.requests)))
            if req.error is not None:
                status = req.error.status
                self._set_status(idx, status)
                out.append({"error": str(req.error), "status": status})
                continue
            mine = answers[cursor : cursor + len(req.examples)]
            cursor += len(req.examples)
            if req.v2 is not None:
                model = (getattr(self.context, "manifest", None) or {}).get("model", {})
                out.append(v2_response(mine, req.v2, model.get("modelName"), model.get("modelVersion")))
            else:
                out.append(mine[0] if req.single else mine)
        self._metric("QABatchSize", len(scored.requests))
        self._metric("QAWindows", len(scored.features) if scored.features is not None else 0)
        return out

    def _answers(self, scored: Scored) -> list:
        """One pipeline-shaped result per example; examples sharing settings are post-processed together."""
        groups: dict[tuple[int, int, bool], list[int]] = {}
        for i, ex in enumerate(scored.examples):
            groups.setdefault((ex.top_k, ex.max_answer_len, ex.version_2), []).append(i)
        results: list = [None] * len(scored.examples)
        for (top_k, max_answer_len, version_2), ids in groups.items():
            config = self.config.replace(max_answer_len=max_answer_len, version_2=version_2)
            features, starts, ends = select_examples(scored.features, scored.starts, scored.ends, ids)
            contexts = [scored.examples[i].context for i in ids]
            predictions = answers_from_logits(features, starts, ends, contexts, config, top_k=top_k)
            for i, pred in zip(ids, predictions):
                results[i] = pred.answers[0] if top_k == 1 else pred.answers
        return results

    # --- context helpers (the unit tests' mock context may lack some of these) ----------------------

    def _set_status(self, idx: int, status: int) -> None:
        setter = getattr(self.context, "set_response_status", None)
        if setter is not None:
            setter(status, _PHRASES.get(status, ""), idx)

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


def available_cpus(cgroup: str | Path = "/sys/fs/cgroup") -> int:
    """CPUs this process may use: ``os.cpu_count()`` capped by the cgroup CPU quota (``docker --cpus``, a
    Kubernetes CPU limit), which ``os.cpu_count()`` ignores; so that workers x threads <= CPUs there too.

    Example: 16 CPUs and ``cpu.max`` = ``"200000 100000"`` (2 CPUs' worth of time) -> 2.
    """
    cpus = os.cpu_count() or 1
    root = Path(cgroup)
    for quota_file, period_file in (("cpu.max", None), ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")):
        try:
            fields = (root / quota_file).read_text().split()
            quota, period = fields[0], fields[1] if period_file is None else (root / period_file).read_text()
            if quota not in ("max", "-1"):
                cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
            break
        except (OSError, ValueError, IndexError):
            continue
    return max(1, cpus)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


# --- request parsing -------------------------------------------------------------------------------


def request_body(row: Any) -> Any:
    """The decoded JSON body of one TorchServe request row (``{"body": ...}`` or ``{"data": ...}``).

    TorchServe hands over parsed JSON when the request said ``Content-Type: application/json`` and the
    bytes parsed, a ``str`` for ``text/*``, else the raw bytes. Example: ``{"body": b'{"a": 1}'}`` -> ``{"a": 1}``.
    """
    body = None
    if isinstance(row, Mapping):
        body = row.get("body")
        if body is None:
            body = row.get("data")
    if body is None:
        raise RequestError(
            400,
            'no request body: send JSON {"question": ..., "context": ...} with Content-Type: application/json '
            "(curl: -H 'Content-Type: application/json' --data-binary @request.json)",
        )
    if isinstance(body, (bytes, bytearray)):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as err:
            raise RequestError(
                400, f"the request body is not valid UTF-8 (bad byte at offset {err.start})"
            ) from None
    if isinstance(body, str):
        if not body.strip():
            raise RequestError(400, "the request body is empty")
        try:
            body = json.loads(body)
        except json.JSONDecodeError as err:
            raise RequestError(
                400, f"the request body is not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})"
            ) from None
    return body


def parse_request(row: Any, settings: HandlerSettings, config: QAConfig) -> tuple[list[Example], bool]:
    """Examples of one request and whether it was a single object (else a list)."""
    return parse_body(request_body(row), settings, config)


def parse_body(body: Any, settings: HandlerSettings, config: QAConfig) -> tuple[list[Example], bool]:
    """Examples of a decoded JSON body and whether it was a single object (else a list)."""
    if isinstance(body, Mapping):
        return [parse_example(body, settings, config)], True
    if isinstance(body, list):
        if not body:
            raise RequestError(
                400, "the request body is an empty list; send at least one {question, context}"
            )
        if len(body) > settings.max_examples:
            raise RequestError(
                413,
                f"{len(body)} examples in one request; the limit is {settings.max_examples} (QA_MAX_EXAMPLES)",
            )
        examples = []
        for i, item in enumerate(body):
            try:
                examples.append(parse_example(item, settings, config))
            except RequestError as err:
                raise RequestError(err.status, f"item {i}: {err}") from None
        return examples, False
    raise RequestError(
        400,
        f"the request body must be a JSON object {{question, context}} or a list of them, got {type(body).__name__}",
    )


def parse_example(obj: Any, settings: HandlerSettings, config: QAConfig) -> Example:
    """Validate one ``{question, context, ...}`` object (types, emptiness, sizes, setting ranges)."""
    if not isinstance(obj, Mapping):
        raise RequestError(400, f"expected a JSON object {{question, context}}, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(_FIELDS))
    if unknown:
        raise RequestError(400, f"unknown field(s) {unknown}; known: {list(_FIELDS)}")
    texts = {}
    for name in ("question", "context"):
        if name not in obj:
            raise RequestError(400, f"missing '{name}'")
        value = obj[name]
        if not isinstance(value, str):
            raise RequestError(400, f"'{name}' must be a string, got {type(value).__name__}")
        if not value.strip():
            raise RequestError(400, f"'{name}' is empty")
        texts[name] = value
    if len(texts["context"]) > settings.max_context_chars:
        raise RequestError(
            413,
            f"the context has {len(texts['context'])} characters; the limit is {settings.max_context_chars} "
            "(handler.max_context_chars / QA_MAX_CONTEXT_CHARS)",
        )
    top_k = _int_field(obj, "top_k", 1, 1, config.n_best_size)
    max_answer_len = _int_field(obj, "max_answer_len", config.max_answer_len, 1, config.max_length)
    version_2 = obj.get("handle_impossible_answer", config.version_2)
    if not isinstance(version_2, bool):
        raise RequestError(400, f"'handle_impossible_answer' must be true or false, got {version_2!r}")
    return Example(texts["question"], texts["context"], top_k, max_answer_len, version_2)


def _int_field(obj: Mapping, name: str, default: int, low: int, high: int) -> int:
    value = obj.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise RequestError(400, f"'{name}' must be an integer from {low} to {high}, got {value!r}")
    return value


# --- Open Inference Protocol (KServe v2) bodies ------------------------------------------------------
# TorchServe routes POST /v2/models/<name>/infer to the handler like /predictions/<name>; the body is
# recognised by its "inputs" key (never a field of the plain JSON API). Parsed here rather than by
# TorchServe's kservev2 envelope, which reads only the first request of a batch (batchSize must be 1).

V2_OUTPUTS = {"answer": "BYTES", "score": "FP32", "start": "INT64", "end": "INT64"}
_V2_PARAMETERS = ("max_answer_len", "handle_impossible_answer")


@dataclass(frozen=True)
class V2Request:
    """What a v2 response needs from its request: the request id and the outputs asked for."""

    id: Any = None
    outputs: tuple[str, ...] = tuple(V2_OUTPUTS)


def is_v2_body(body: Any) -> bool:
    return isinstance(body, Mapping) and "inputs" in body


def parse_v2_request(
    body: Mapping, settings: HandlerSettings, config: QAConfig
) -> tuple[list[Example], V2Request]:
    """Examples of an inference request of the Open Inference Protocol: two BYTES inputs ``question`` and
    ``context`` holding n strings each (shape ``[n]``), optional ``parameters`` ``max_answer_len`` and
    ``handle_impossible_answer``, optional ``outputs`` (a subset of answer, score, start, end).

    Example: ``{"inputs": [{"name": "question", "datatype": "BYTES", "shape": [1], "data": ["Who?"]},
    {"name": "context", "datatype": "BYTES", "shape": [1], "data": ["Ada did."]}]}`` -> one example.
    """
    unknown = sorted(set(body) - {"id", "inputs", "outputs", "parameters"})
    if unknown:
        raise RequestError(400, f"unknown field(s) {unknown} in a v2 inference request")
    inputs = body["inputs"]
    if not isinstance(inputs, list) or not inputs:
        raise RequestError(400, "'inputs' must be a non-empty list of tensors {name, datatype, shape, data}")
    tensors: dict[str, list] = {}
    for i, tensor in enumerate(inputs):
        name = tensor.get("name") if isinstance(tensor, Mapping) else None
        if name not in ("question", "context"):
            raise RequestError(
                400, f"inputs[{i}]: expected tensors named 'question' and 'context', got {name!r}"
            )
        if name in tensors:
            raise RequestError(400, f"input {name!r} given twice")
        if tensor.get("datatype") != "BYTES":
            raise RequestError(400, f"input {name!r}: datatype must be BYTES, got {tensor.get('datatype')!r}")
        data, shape = tensor.get("data"), tensor.get("shape")
        data = _flatten(data) if isinstance(data, list) else None
        if data is None:
            raise RequestError(400, f"input {name!r}: 'data' must be a list of strings")
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)) or (
            math.prod(shape) != len(data)
        ):
            raise RequestError(400, f"input {name!r}: shape {shape!r} does not match its {len(data)} strings")
        tensors[name] = data
    if len(tensors) != 2:
        raise RequestError(400, f"missing input {({'question', 'context'} - set(tensors)).pop()!r}")
    questions, contexts = tensors["question"], tensors["context"]
    if len(questions) != len(contexts) or not questions:
        raise RequestError(
            400, f"'question' and 'context' must hold the same number (>= 1) of strings, got "
            f"{len(questions)} and {len(contexts)}",
        )  # fmt: skip
    if len(questions) > settings.max_examples:
        raise RequestError(
            413,
            f"{len(questions)} examples in one request; the limit is {settings.max_examples} (QA_MAX_EXAMPLES)",
        )
    params = body.get("parameters") or {}
    if not isinstance(params, Mapping) or set(params) - set(_V2_PARAMETERS):
        raise RequestError(
            400, f"'parameters' may hold {list(_V2_PARAMETERS)} (top_k > 1: use the JSON API), got {params!r}"
        )
    outputs = body.get("outputs") or [{"name": n} for n in V2_OUTPUTS]
    names = (
        [o.get("name") if isinstance(o, Mapping) else None for o in outputs]
        if isinstance(outputs, list)
        else [None]
    )
    if not names or any(n not in V2_OUTPUTS for n in names):
        raise RequestError(400, f"'outputs' may ask for {list(V2_OUTPUTS)}, got {outputs!r}")
    examples = []
    for i, (question, context) in enumerate(zip(questions, contexts)):
        try:
            examples.append(
                parse_example({"question": question, "context": context, **params}, settings, config)
            )
        except RequestError as err:
            raise RequestError(err.status, f"example {i}: {err}") from None
    return examples, V2Request(body.get("id"), tuple(names))


def _flatten(data: list) -> list:
    """Row-major flattening of nested lists (v2 data may be given as nested lists of the tensor's shape)."""
    return [x for item in data for x in (_flatten(item) if isinstance(item, list) else [item])]


def v2_response(
    answers: list[dict], request: V2Request, model_name: str | None, model_version: str | None
) -> dict:
    """An Open Inference Protocol response: one tensor per output, shape ``[n]``, in example order."""
    n = len(answers)
    cast = {"BYTES": str, "FP32": float, "INT64": int}
    outputs = [
        {"name": name, "datatype": V2_OUTPUTS[name], "shape": [n],
         "data": [cast[V2_OUTPUTS[name]](a[name]) for a in answers]}
        for name in request.outputs
    ]  # fmt: skip
    response = {"model_name": model_name, "model_version": model_version, "outputs": outputs}
    return {"id": request.id, **response} if request.id is not None else response


def select_examples(
    features: Features, starts: list[np.ndarray], ends: list[np.ndarray], example_ids: list[int]
) -> tuple[Features, list[np.ndarray], list[np.ndarray]]:
    """The windows of some examples, renumbered 0..len(example_ids)-1 in the given order."""
    if list(example_ids) == list(range(int(features.example_index.max()) + 1)):
        return features, starts, ends
    new_id = np.full(int(features.example_index.max()) + 1, -1, dtype=np.int64)
    new_id[np.asarray(example_ids)] = np.arange(len(example_ids))
    windows = np.flatnonzero(new_id[features.example_index] >= 0)
    pick = lambda seq: [seq[w] for w in windows]
    subset = Features(
        input_ids=pick(features.input_ids),
        token_type_ids=pick(features.token_type_ids) if features.token_type_ids is not None else None,
        example_index=new_id[features.example_index[windows]],
        offsets=pick(features.offsets),
        word_offsets=pick(features.word_offsets),
        cls_index=features.cls_index[windows],
        pad_token_id=features.pad_token_id,
        padding_side=features.padding_side,
    )
    return subset, pick(starts), pick(ends)


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
