"""The Open Inference Protocol (KServe v2) envelope: BYTES inputs ``question`` and ``context`` of n strings
each (shape ``[n]``, or nested lists of that shape), optional ``parameters`` (the per-example options of
the one options table, for all n examples), optional ``outputs`` (a subset of answer, score, start, end,
probability, passage). The response has one tensor per output: shape ``[n]``, or ``[n, top_k]`` when
``top_k > 1`` (rows with fewer answers are filled with the empty answer, score 0). By default the outputs
are answer, score, start, end, plus ``probability`` (FP32) for a calibrated model and ``passage`` (INT64)
for a request with passages.

Several passages per question: a BYTES input ``passages`` of shape ``[n, K]`` (``[K]`` for one question)
instead of ``context``: K passages for each of the n questions (empty strings are left out, so ragged
sets can be padded).

TorchServe routes ``POST /v2/models/<name>/infer`` to the handler like ``/predictions/<name>``; the body is
recognised by its ``"inputs"`` key (never a field of the JSON envelope). Parsed here rather than by
TorchServe's kservev2 envelope, which reads only the first request of a batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qa_serving.core.options import PER_EXAMPLE
from qa_serving.core.postprocess import NO_ANSWER
from qa_serving.serving.request import Limits, Request, RequestError, check_count, make_example

V2_OUTPUTS = {
    "answer": "BYTES",
    "score": "FP32",
    "start": "INT64",
    "end": "INT64",
    "probability": "FP32",
    "passage": "INT64",
}
DEFAULT_OUTPUTS = ("answer", "score", "start", "end")


@dataclass(frozen=True)
class V2Request:
    """What a v2 response needs from its request: the request id, the outputs asked for, ``top_k``."""

    id: Any = None
    outputs: tuple[str, ...] | None = None  # None: the defaults (see the module doc)
    top_k: int = 1
    passages: bool = False


def is_v2_body(body: Any) -> bool:
    return isinstance(body, Mapping) and "inputs" in body


def parse_v2(body: Mapping, limits: Limits) -> Request:
    """An inference request of the Open Inference Protocol -> its :class:`Request` (or a RequestError).

    Example: ``{"inputs": [{"name": "question", "datatype": "BYTES", "shape": [1], "data": ["Who?"]},
    {"name": "context", "datatype": "BYTES", "shape": [1], "data": ["Ada did."]}]}`` -> one example.
    """
    unknown = sorted(set(body) - {"id", "inputs", "outputs", "parameters"})
    if unknown:
        raise RequestError(400, f"unknown field(s) {unknown} in a v2 inference request")
    tensors, shapes = _input_tensors(body["inputs"])
    questions = tensors["question"]
    passages = None
    if "passages" in tensors:
        passages = _passage_rows(tensors["passages"], shapes["passages"], len(questions))
        contexts = [None] * len(questions)
    else:
        contexts = tensors["context"]
    if len(questions) != len(contexts) or not questions:
        raise RequestError(
            400, f"'question' and 'context' must hold the same number (>= 1) of strings, got "
            f"{len(questions)} and {len(contexts)}",
        )  # fmt: skip
    check_count(len(questions), limits)
    params = body.get("parameters") or {}
    if not isinstance(params, Mapping):
        raise RequestError(
            400, f"'parameters' must be an object of options {list(PER_EXAMPLE)}, got {params!r}"
        )
    outputs = body.get("outputs") or [{"name": n} for n in DEFAULT_OUTPUTS]
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
            row = passages[i] if passages is not None else None
            examples.append(make_example(question, context, params, limits, row))
        except RequestError as err:
            raise RequestError(err.status, f"example {i}: {err}") from None
    top_k = examples[0].options.get("top_k", 1)
    asked = tuple(names) if body.get("outputs") else None
    v2 = V2Request(body.get("id"), asked, top_k, passages is not None)
    return Request(examples=examples, single=False, envelope="v2", v2=v2)


def _passage_rows(data: list, shape: list[int], n: int) -> list[list[str]]:
    """The ``passages`` tensor as n rows of passages (``[K]`` for one question, ``[n, K]``), "" left out."""
    if len(shape) == 1 and n == 1:
        rows = [data]
    elif len(shape) == 2 and shape[0] == n:
        rows = [data[i * shape[1] : (i + 1) * shape[1]] for i in range(n)]
    else:
        raise RequestError(400, f"input 'passages': shape {shape!r} must be [n, K] for n = {n} questions")
    return [[p for p in row if p != ""] for row in rows]


def _input_tensors(inputs: Any) -> tuple[dict[str, list], dict[str, list[int]]]:
    if not isinstance(inputs, list) or not inputs:
        raise RequestError(400, "'inputs' must be a non-empty list of tensors {name, datatype, shape, data}")
    tensors: dict[str, list] = {}
    shapes: dict[str, list[int]] = {}
    for i, tensor in enumerate(inputs):
        name = tensor.get("name") if isinstance(tensor, Mapping) else None
        if name not in ("question", "context", "passages"):
            raise RequestError(
                400,
                f"inputs[{i}]: expected tensors named 'question' and 'context' (or 'passages'), got {name!r}",
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
        tensors[name] = [_text(d) for d in data]
        shapes[name] = shape
    if "context" in tensors and "passages" in tensors:
        raise RequestError(400, "give the input 'context' or 'passages', not both")
    texts = "passages" if "passages" in tensors else "context"
    missing = sorted({"question", texts} - set(tensors))
    if missing:
        raise RequestError(400, f"missing input {missing[0]!r}")
    return tensors, shapes


def _text(value: Any) -> Any:
    """v2 BYTES elements may arrive as bytes (gRPC); strings are checked later by the request model."""
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError(400, "a BYTES element is not valid UTF-8") from None
    return value


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


def render_v2(
    request: Request, answers: Sequence[list[dict]], model_name: str | None, model_version: str | None
) -> dict:
    """An Open Inference Protocol response: one tensor per output, in example order."""
    v2: V2Request = request.v2
    k = v2.top_k
    calibrated = all("probability" in a for ans in answers for a in ans)
    names = v2.outputs
    if names is None:
        names = DEFAULT_OUTPUTS + (("probability",) if calibrated else ())
        names += ("passage",) if v2.passages else ()
    if "probability" in names and not calibrated:
        raise RequestError(400, "output 'probability' needs a calibrated model (qa-serving calibrate)")
    if "passage" in names and not v2.passages:
        raise RequestError(400, "output 'passage' needs the input 'passages'")
    empty = {**NO_ANSWER, "probability": 0.0, "passage": -1}
    rows = [(list(a) + [empty] * k)[:k] for a in answers]
    cast = {"BYTES": str, "FP32": float, "INT64": int}
    outputs = []
    for name in names:
        kind = V2_OUTPUTS[name]
        values = [[cast[kind](a.get(name, empty[name])) for a in row] for row in rows]
        data = [x for row in values for x in row]  # row-major, as the protocol's flat form
        shape = [len(rows)] if k == 1 else [len(rows), k]
        outputs.append({"name": name, "datatype": kind, "shape": shape, "data": data})
    response = {"model_name": model_name, "model_version": model_version, "outputs": outputs}
    return {"id": v2.id, **response} if v2.id is not None else response
