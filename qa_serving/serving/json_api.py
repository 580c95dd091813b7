"""The project's JSON envelope: ``{"question", "context", <options>}`` or a list of them, answered with the
``custom-qa`` pipeline's answer dicts (one dict, or a list when ``top_k > 1``; a list of those for a
list body), or ``{"error": message, "status": 4xx|5xx}``. ``{"question", "passages": [...]}`` asks one
question over several passages (each answer then carries its ``passage`` index); a calibrated model adds
``probability`` to every answer and honours ``min_probability``.

Per-example options are the rows of the one options table marked "per example"
(:data:`qa_serving.core.options.PER_EXAMPLE`: ``top_k``, ``max_answer_len``, ``handle_impossible_answer``,
...), under their names or aliases; the same bad value gets the same wording as in the pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from qa_serving.core.options import ALIASES, PER_EXAMPLE
from qa_serving.core.postprocess import NO_ANSWER
from qa_serving.serving.request import Limits, Request, RequestError, check_count, make_example

TEXT_FIELDS = ("question", "context", "passages")
FIELDS = TEXT_FIELDS + PER_EXAMPLE


def parse_json(body: Any, limits: Limits) -> Request:
    """A decoded JSON body -> its :class:`Request` (raises :class:`RequestError` for a bad one)."""
    if isinstance(body, Mapping):
        return Request(examples=[parse_item(body, limits)], single=True)
    if isinstance(body, list):
        if not body:
            raise RequestError(
                400, "the request body is an empty list; send at least one {question, context}"
            )
        check_count(len(body), limits)
        examples = []
        for i, item in enumerate(body):
            try:
                examples.append(parse_item(item, limits))
            except RequestError as err:
                raise RequestError(err.status, f"item {i}: {err}") from None
        return Request(examples=examples, single=False)
    raise RequestError(
        400,
        f"the request body must be a JSON object {{question, context}} or a list of them, got {type(body).__name__}",
    )


def parse_item(obj: Any, limits: Limits) -> Any:
    """One ``{question, context, <options>}`` object -> a checked core ``Example``."""
    if not isinstance(obj, Mapping):
        raise RequestError(400, f"expected a JSON object {{question, context}}, got {type(obj).__name__}")
    unknown = sorted(k for k in obj if k not in TEXT_FIELDS and ALIASES.get(k) not in PER_EXAMPLE)
    if unknown:
        raise RequestError(400, f"unknown field(s) {unknown}; known: {list(FIELDS)}")
    options = {k: v for k, v in obj.items() if k not in TEXT_FIELDS}
    return make_example(obj.get("question"), obj.get("context"), options, limits, obj.get("passages"))


def render_json(request: Request, answers: Sequence[list[dict]]) -> Any:
    """The response body: per example its best answer dict (``top_k`` 1) or its list of answers."""
    results = [
        (a[0] if a else dict(NO_ANSWER)) if ex.options.get("top_k", 1) == 1 else list(a)
        for ex, a in zip(request.examples, answers)
    ]
    return results[0] if request.single else results

