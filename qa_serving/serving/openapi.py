"""An OpenAPI 3 description of the QA request and response bodies, generated from the options table.

Both engines serve the same bodies: TorchServe at ``POST /predictions/{model}`` and the KServe runtime at
``POST /v1/models/{model}:predict`` (project JSON) and ``POST /v2/models/{model}/infer`` (Open Inference
Protocol). The KServe runtime serves :func:`openapi_spec` at ``/v1/models/{model}/openapi.json``; for
TorchServe the same document is the file ``docs/openapi.json`` (a test keeps the two identical; rewrite
the file with ``python -m qa_serving.serving.openapi > docs/openapi.json``).
"""

from __future__ import annotations

import json
from typing import Any

import qa_serving
from qa_serving.core.options import OPTIONS, PER_EXAMPLE
from qa_serving.serving.settings import SETTINGS

_KIND = {int: "integer", float: "number", bool: "boolean", str: "string"}


def _option_schema(name: str) -> dict[str, Any]:
    option = OPTIONS[name]
    schema: dict[str, Any] = {"type": _KIND[option.kind], "description": option.help}
    if option.low is not None:
        schema["minimum"] = option.low
    if option.high is not None:
        schema["maximum"] = option.high
    if option.choices is not None:
        schema["enum"] = list(option.choices)
    if not isinstance(option.default, dict):
        schema["default"] = option.default
    return schema


def _error(description: str, retry: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if retry:
        response["headers"] = {
            "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}
        }
    return response


def _errors() -> dict[str, Any]:
    return {
        "400": _error("the body is not valid JSON or breaks a rule (the message says which)"),
        "413": _error("a context or an example list over the server's limits"),
        "503": _error("overloaded (queue full) or shutting down: retry after Retry-After", retry=True),
        "504": _error("no answer within the request deadline (queue + compute)", retry=True),
    }


def openapi_spec() -> dict[str, Any]:
    """The OpenAPI 3.0 document (a plain dict; ``json.dumps`` it)."""
    max_examples = SETTINGS["max_examples"].default
    item = {
        "type": "object",
        "required": ["question"],
        "description": "one question over a context, or over several passages (give one of the two)",
        "properties": {
            "question": {"type": "string", "minLength": 1},
            "passages": {
                "type": "array",
                "items": {"type": "string"},
                "minItems": 1,
                "description": "several passages read as one: one ranked list, each answer with its passage",
            },
            "context": {
                "type": "string",
                "minLength": 1,
                "maxLength": SETTINGS["max_context_chars"].default,
                "description": "longer contexts get a 413 (handler.max_context_chars)",
            },
            **{name: _option_schema(name) for name in PER_EXAMPLE},
        },
    }
    answer = {
        "type": "object",
        "required": ["answer", "score", "start", "end"],
        "properties": {
            "answer": {"type": "string", "description": "'' for no answer (handle_impossible_answer)"},
            "score": {"type": "number", "description": "the stock pipeline's score"},
            "start": {"type": "integer", "description": "character offset in the context"},
            "end": {"type": "integer"},
            "probability": {"type": "number", "description": "calibrated models only"},
            "passage": {"type": "integer", "description": "requests with passages: the passage's index"},
        },
    }
    json_body = {
        "oneOf": [
            {"$ref": "#/components/schemas/Question"},
            {"type": "array", "items": {"$ref": "#/components/schemas/Question"}, "minItems": 1,
             "maxItems": max_examples},
        ]
    }  # fmt: skip
    one = {"oneOf": [{"$ref": "#/components/schemas/Answer"},
                     {"type": "array", "items": {"$ref": "#/components/schemas/Answer"}}]}  # fmt: skip
    json_answers = {"oneOf": [one, {"type": "array", "items": one}]}
    tensor = {
        "type": "object",
        "required": ["name", "datatype", "shape", "data"],
        "properties": {
            "name": {"type": "string", "enum": ["question", "context", "passages"]},
            "datatype": {"type": "string", "enum": ["BYTES"]},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "data": {"type": "array", "items": {"type": "string"}},
        },
    }
    v2_request = {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "inputs": {"type": "array", "items": tensor, "minItems": 2, "maxItems": 3},
            "parameters": {"type": "object", "properties": {n: _option_schema(n) for n in PER_EXAMPLE}},
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"enum": ["answer", "score", "start", "end", "probability", "passage"]}
                    },
                },
            },
        },
    }
    model = [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}]

    def post(summary: str, request: dict, response: dict) -> dict:
        return {
            "post": {
                "summary": summary,
                "parameters": model,
                "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
                "responses": {"200": {"description": "answers, in request order",
                                      "content": {"application/json": {"schema": response}}}, **_errors()},
            }
        }  # fmt: skip

    return {
        "openapi": "3.0.3",
        "info": {
            "title": "qa-serving: extractive question answering",
            "version": qa_serving.__version__,
            "description": "One question over one context per item; a list body is answered in order. "
            "TorchServe serves /predictions, the KServe runtime /v1 and /v2 (TorchServe also answers /v2 "
            "infer bodies).",
        },
        "paths": {
            "/predictions/{model}": post("TorchServe: answer questions", json_body, json_answers),
            "/v1/models/{model}:predict": post("KServe runtime: answer questions", json_body, json_answers),
            "/v2/models/{model}/infer": post(
                "Open Inference Protocol v2 (both engines)",
                v2_request,
                {"$ref": "#/components/schemas/V2Response"},
            ),
        },
        "components": {
            "schemas": {
                "Question": item,
                "Answer": answer,
                "Error": {
                    "type": "object",
                    "required": ["error", "status"],
                    "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
                },
                "V2Response": {
                    "type": "object",
                    "required": ["model_name", "outputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "model_name": {"type": "string"},
                        "model_version": {"type": "string", "nullable": True},
                        "outputs": {"type": "array", "items": {"type": "object"}},
                    },
                },
            }
        },
    }


def openapi_text() -> str:
    """The document as the text of ``docs/openapi.json``."""
    return json.dumps(openapi_spec(), indent=2) + "\n"


if __name__ == "__main__":
    print(openapi_text(), end="")
