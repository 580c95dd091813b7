"""The request model of the served model: what a server hands to the core, whatever the wire format.

A :class:`Request` holds the examples of one HTTP request (each a core :class:`Example` with its own
options), or the :class:`RequestError` that answers it; the wire formats are envelopes around it
(:mod:`qa_serving.serving.json_api`, :mod:`qa_serving.serving.v2_api`). No TorchServe, no model.

Deliberate simplification: bodies nested deeper than :data:`MAX_DEPTH` are refused outright (no real
request needs it; deeper ones would exhaust recursion).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qa_serving.core.answering import Example
from qa_serving.core.options import parse_options
from qa_serving.core.windowing import lone_surrogate
from qa_serving.errors import QAError

MAX_DEPTH = 32  # nesting of JSON objects/lists; a v2 body needs 4 (+ the tensor's rank)
PHRASES = {
    400: "Bad Request",
    413: "Payload Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class RequestError(QAError):
    """A request answered with an error object and a non-200 status (the rest of the batch is served)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    def body(self) -> dict:
        return {"error": str(self), "status": self.status}


@dataclass(frozen=True)
class Limits:
    """Per-request limits (413 beyond them): the handler settings ``max_context_chars`` and ``max_examples``."""

    max_context_chars: int = 100_000
    max_examples: int = 64

    @classmethod
    def of(cls, settings: Any) -> Limits:
        return cls(settings.max_context_chars, settings.max_examples)


@dataclass
class Request:
    """One request: its examples and how to answer it (``envelope``: ``"json"`` or ``"v2"``; ``single``:
    a JSON object rather than a list; ``v2``: what a v2 response needs), or why it failed."""

    examples: list[Example] = field(default_factory=list)
    single: bool = True
    error: RequestError | None = None
    envelope: str = "json"
    v2: Any = None


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


def decode_body(body: Any) -> Any:
    """A request body as JSON values: bytes/str are decoded and parsed, parsed JSON is checked for depth.

    Servers hand over parsed JSON (TorchServe does when the request said ``Content-Type:
    application/json`` and the bytes parsed), a ``str`` for ``text/*``, else the raw bytes.
    Example: ``decode_body(b'{"a": 1}')`` -> ``{"a": 1}``.
    """
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
        except ValueError as err:  # e.g. an integer of more than 4,300 digits (Python's conversion limit)
            raise RequestError(400, f"the request body is not valid JSON here: {err}") from None
    if nesting_depth(body) > MAX_DEPTH:
        raise _too_deep()
    return body


def row_body(row: Any) -> Any:
    """The raw body of one TorchServe request row (``{"body": ...}`` or ``{"data": ...}``), ``None`` if none."""
    if not isinstance(row, Mapping):
        return None
    body = row.get("body")
    return row.get("data") if body is None else body


def request_body(row: Any) -> Any:
    """The decoded JSON body of one TorchServe request row.

    Example: ``{"body": b'{"a": 1}'}`` -> ``{"a": 1}``.
    """
    return decode_body(row_body(row))


def check_count(n: int, limits: Limits) -> None:
    if n > limits.max_examples:
        raise RequestError(
            413, f"{n} examples in one request; the limit is {limits.max_examples} (QA_MAX_EXAMPLES)"
        )


def make_example(
    question: Any, context: Any, options: Mapping[str, Any], limits: Limits, passages: Any = None
) -> Example:
    """A checked :class:`Example`: non-empty strings within the size limit, per-example options from the
    one options table (the same names, ranges and error wording as the pipeline and the CLI).

    ``passages`` (instead of ``context``): a list of passages for one question, each within the size
    limit, at most ``max_examples`` of them (each is read like one example's context)."""
    if passages is not None:
        return _passages_example(question, context, options, limits, passages)
    texts = {}
    for name, value in (("question", question), ("context", context)):
        if value is None:
            raise RequestError(400, f"missing '{name}'")
        if not isinstance(value, str):
            raise RequestError(400, f"'{name}' must be a string, got {type(value).__name__}")
        if not value.strip():
            raise RequestError(400, f"'{name}' is empty")
        at = lone_surrogate(value)
        if at is not None:  # refused here, so it cannot fail the batch it would join
            raise RequestError(400, f"'{name}' is not valid Unicode text (a lone surrogate at character {at})")
        texts[name] = value
    if len(texts["context"]) > limits.max_context_chars:
        raise RequestError(
            413,
            f"the context has {len(texts['context'])} characters; the limit is {limits.max_context_chars} "
            "(handler.max_context_chars / QA_MAX_CONTEXT_CHARS)",
        )
    return Example(texts["question"], texts["context"], request_options(options))


def _passages_example(
    question: Any, context: Any, options: Mapping[str, Any], limits: Limits, passages: Any
) -> Example:
    if context is not None:
        raise RequestError(400, "give 'context' or 'passages', not both")
    if not isinstance(passages, list) or not passages:
        raise RequestError(400, "'passages' must be a non-empty list of strings")
    if len(passages) > limits.max_examples:
        raise RequestError(
            413,
            f"{len(passages)} passages in one question; the limit is {limits.max_examples} (QA_MAX_EXAMPLES)",
        )
    checked = [make_example(question, p, {}, limits).context for p in passages]
    return Example(question, "", request_options(options), tuple(checked))


def request_options(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Per-request options, checked by the one options table; a bad one is a 400 with its wording."""
    try:
        return parse_options(raw, per_example_only=True)
    except QAError as err:
        raise RequestError(400, str(err)) from None
