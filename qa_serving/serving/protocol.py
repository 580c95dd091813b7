"""The request protocol of the served model: bodies in, answers or per-request errors out. No TorchServe.

A request body is JSON ``{"question": str, "context": str}`` with optional ``top_k``, ``max_answer_len``
and ``handle_impossible_answer``, or a list of such objects. The response is the ``custom-qa``
pipeline's answer dicts ``{"answer", "score", "start", "end"}`` (one dict, or a list when ``top_k > 1``; a
list of those for a list body), or ``{"error": message, "status": 400|413|500}``. Open Inference Protocol
(KServe v2) bodies, ``{"inputs": [{"name": "question", "datatype": "BYTES", ...}, {"name": "context", ...}]}``,
get a v2 response with the outputs ``answer``, ``score``, ``start`` and ``end`` (:func:`parse_v2_request`).

Like TorchServe's ``request_envelope/``, this is plain Python over decoded rows, so any server (TorchServe,
a FastAPI app, a test) can use it. Deliberate simplification: bodies nested deeper than
:data:`MAX_DEPTH` are refused outright (no real request needs it; deeper ones would exhaust recursion).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from qa_serving.core.config import QAConfig
from qa_serving.errors import QAError

if TYPE_CHECKING:
    from qa_serving.serving.settings import HandlerSettings
    from qa_serving.core.windowing import Features

logger = logging.getLogger(__name__)

FIELDS = ("question", "context", "top_k", "max_answer_len", "handle_impossible_answer")
MAX_DEPTH = 32  # nesting of JSON objects/lists; a v2 body needs 4 (+ the tensor's rank)
PHRASES = {400: "Bad Request", 413: "Payload Too Large", 500: "Internal Server Error"}


class RequestError(QAError):
    """A request answered with an error object and a non-200 status (the rest of the batch is served)."""

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
    """One request of a batch: its examples, or why it failed."""

    examples: list[Example] = field(default_factory=list)
    single: bool = True
    error: RequestError | None = None
    v2: V2Request | None = None  # set for an Open Inference Protocol (KServe v2) body


# --- bodies ------------------------------------------------------------------------------------------


def nesting_depth(obj: Any, limit: int = MAX_DEPTH) -> int:
    """Depth of nested dicts/lists, without recursion; stops counting once past ``limit``.

    Example: ``nesting_depth({"a": [1, [2]]})`` -> 3; ``nesting_depth("x")`` -> 0.
    """
    deepest, stack = 0, [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, Mapping) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _too_deep() -> RequestError:
    return RequestError(
        400, f"the request body is nested more than {MAX_DEPTH} levels deep (JSON objects/lists); "
        "send {question, context} objects, a list of them, or a KServe v2 body",
    )  # fmt: skip


def request_body(row: Any) -> Any:
    """The decoded JSON body of one request row (``{"body": ...}`` or ``{"data": ...}``).

    Servers hand over parsed JSON (TorchServe does when the request said ``Content-Type:
    application/json`` and the bytes parsed), a ``str`` for ``text/*``, else the raw bytes.
    Example: ``{"body": b'{"a": 1}'}`` -> ``{"a": 1}``.
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
        except RecursionError:  # the decoder recurses per level: thousands of [[[... end here
            raise _too_deep() from None
    if nesting_depth(body) > MAX_DEPTH:
        raise _too_deep()
    return body


def parse_row(row: Any, settings: HandlerSettings, config: QAConfig) -> Request:
    """One row of a batch -> its :class:`Request`; never raises (a bad row records its error)."""
    try:
        body = request_body(row)
        if is_v2_body(body):
            examples, v2 = parse_v2_request(body, settings, config)
            return Request(examples=examples, single=False, v2=v2)
        examples, single = parse_body(body, settings, config)
        return Request(examples=examples, single=single)
    except RequestError as err:
        return Request(error=err)
    except Exception as err:  # one odd request must not fail the others
        logger.exception("a request of the batch could not be parsed")
        return Request(error=RequestError(500, f"internal error while parsing the request: {err}"))


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
        _check_count(len(body), settings)
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


def _check_count(n: int, settings: HandlerSettings) -> None:
    if n > settings.max_examples:
        raise RequestError(
            413, f"{n} examples in one request; the limit is {settings.max_examples} (QA_MAX_EXAMPLES)"
        )


def parse_example(obj: Any, settings: HandlerSettings, config: QAConfig) -> Example:
    """Validate one ``{question, context, ...}`` object (types, emptiness, sizes, setting ranges)."""
    if not isinstance(obj, Mapping):
        raise RequestError(400, f"expected a JSON object {{question, context}}, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(FIELDS))
    if unknown:
        raise RequestError(400, f"unknown field(s) {unknown}; known: {list(FIELDS)}")
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


# --- Open Inference Protocol (KServe v2) -----------------------------------------------------------------
# TorchServe routes POST /v2/models/<name>/infer to the handler like /predictions/<name>; the body is
# recognised by its "inputs" key (never a field of the plain JSON API). Parsed here rather than by
# TorchServe's kservev2 envelope, which reads only the first request of a batch (batchSize must be 1).

V2_OUTPUTS = {"answer": "BYTES", "score": "FP32", "start": "INT64", "end": "INT64"}
V2_PARAMETERS = ("max_answer_len", "handle_impossible_answer")


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
        data = flatten(data) if isinstance(data, list) else None
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
    _check_count(len(questions), settings)
    params = body.get("parameters") or {}
    if not isinstance(params, Mapping) or set(params) - set(V2_PARAMETERS):
        raise RequestError(
            400, f"'parameters' may hold {list(V2_PARAMETERS)} (top_k > 1: use the JSON API), got {params!r}"
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


def flatten(data: list) -> list:
    """Row-major flattening of nested lists (v2 data may be given as nested lists of the tensor's shape).

    Iterative, so a deep body cannot exhaust recursion. Example: ``flatten([["a", "b"], ["c"]])`` -> a, b, c.
    """
    out, stack = [], [iter(data)]
    while stack:
        item = next(stack[-1], stack)  # the stack itself marks an exhausted iterator
        if item is stack:
            stack.pop()
        elif isinstance(item, list):
            stack.append(iter(item))
        else:
            out.append(item)
    return out


def v2_response(
    answers: Sequence[dict], request: V2Request, model_name: str | None, model_version: str | None
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


# --- answers -----------------------------------------------------------------------------------------


def answer_examples(
    examples: Sequence[Example],
    features: Features,
    starts: list[np.ndarray],
    ends: list[np.ndarray],
    config: QAConfig,
) -> list:
    """One pipeline-shaped result per example (a dict, or a list when ``top_k > 1``); examples sharing
    per-request settings are post-processed together."""
    from qa_serving.core.answering import answers_from_logits

    groups: dict[tuple[int, int, bool], list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault((ex.top_k, ex.max_answer_len, ex.version_2), []).append(i)
    results: list = [None] * len(examples)
    for (top_k, max_answer_len, version_2), ids in groups.items():
        group_config = config.replace(max_answer_len=max_answer_len, version_2=version_2)
        subset, windows = features.select(ids)
        contexts = [examples[i].context for i in ids]
        picked = [starts[w] for w in windows], [ends[w] for w in windows]
        predictions = answers_from_logits(subset, *picked, contexts, group_config, top_k=top_k)
        for i, pred in zip(ids, predictions):
            results[i] = pred.best if top_k == 1 else pred.answers
    return results


def responses(
    requests: Sequence[Request],
    answers: Sequence,
    model_name: str | None = None,
    model_version: str | None = None,
) -> list[tuple[int, Any]]:
    """``(status, body)`` per request, in order: ``answers`` holds one result per valid example."""
    out, cursor = [], 0
    for req in requests:
        if req.error is not None:
            out.append((req.error.status, {"error": str(req.error), "status": req.error.status}))
            continue
        mine = list(answers[cursor : cursor + len(req.examples)])
        cursor += len(req.examples)
        if req.v2 is not None:
            out.append((200, v2_response(mine, req.v2, model_name, model_version)))
        else:
            out.append((200, mine[0] if req.single else mine))
    return out
