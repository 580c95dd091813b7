"""``pipeline("custom-qa", model=...)``: a drop-in for ``pipeline("question-answering")`` over our path.

Same arguments, input forms and outputs as the stock pipeline (``question=``/``context=`` as strings or
lists, a dict, a list of dicts, ``SquadExample``, ``X=``/``data=``, a generator or torch ``Dataset`` such as
``KeyDataset`` (answered lazily, as an iterator), a ``datasets.Dataset``; ``top_k``, ``doc_stride``,
``max_answer_len``, ``max_seq_len``, ``max_question_len``, ``handle_impossible_answer``, ``align_to_words``,
``batch_size``), but windows of many inputs share length-sorted forward passes padded per batch.
The model may be a PyTorch span model or an Optimum ``ORTModelForQuestionAnswering``; a path to an
exported ONNX folder loads on ONNX Runtime (``backend="onnx"`` forces it).

Answers follow the model's ``span_scoring`` (:mod:`qa_serving.core.config`): a model without qa_config.json
(e.g. from the hub) runs in ``"pipeline"`` mode with the stock defaults and returns exactly the stock
pipeline's answers, scores and list shapes (``batch_size`` included: the stock batches pad windows, and
padding can decide ties); a model trained here runs in ``"squad"`` mode, as it was evaluated. Known
difference: the stock pipeline fails when a question leaves no more than ``doc_stride`` context tokens in
a window (a tokenizer panic); we cut the question to fit.
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm
from transformers import AutoModelForQuestionAnswering, Pipeline, SquadExample
from transformers.pipelines import PIPELINE_REGISTRY

from qa_serving.core.backends import load_model, make_backend
from qa_serving.core.config import QAConfig
from qa_serving.errors import QAError
from qa_serving.core.answering import answer_stream

# Stock pipeline argument -> QAConfig field.
_ARG_TO_FIELD = {
    "doc_stride": "doc_stride",
    "max_seq_len": "max_length",
    "max_question_len": "max_question_len",
    "max_answer_len": "max_answer_len",
    "handle_impossible_answer": "version_2",
    "batch_size": "batch_size",
    "max_padding": "max_padding",
    "align_to_words": "align_to_words",
    "n_best_size": "n_best_size",
    "null_score_diff_threshold": "null_score_diff_threshold",
    "span_scoring": "span_scoring",
}
_OTHER_ARGS = {"top_k", "topk", "progress", "num_workers", "padding"}
# Inputs read per chunk from a generator or dataset: results come back while the rest is unread.
STREAM_CHUNK = 64


class QAModelLoader:
    """``from_pretrained`` that returns a torch or ONNX Runtime span model, for ``pipeline(model=path)``."""

    @classmethod
    def from_pretrained(
        cls, path, backend: str = "auto", device: str | None = None, dtype=None, torch_dtype=None, **_: Any
    ):
        """``dtype``/``torch_dtype`` (``pipeline(..., dtype=torch.bfloat16)``) cast a PyTorch model."""
        model = load_model(path, backend=backend, device=device)
        wanted = dtype if dtype is not None else torch_dtype
        if wanted is None or wanted == "auto" or hasattr(model, "session") or hasattr(model, "ov_config"):
            return model
        import torch

        if isinstance(wanted, str):
            wanted = getattr(torch, wanted, None)
        if not isinstance(wanted, torch.dtype):
            raise QAError(f"dtype must be a torch dtype such as torch.bfloat16, got {dtype or torch_dtype!r}")
        return model.to(wanted)


def _model_dir(model) -> str | None:
    for attr in ("model_save_dir", "name_or_path"):
        value = getattr(model, attr, None)
        if value:
            return str(value)
    return getattr(getattr(model, "config", None), "_name_or_path", None) or None


class CustomQAPipeline(Pipeline):
    """Extractive QA over :mod:`qa_serving` (see the module docstring)."""

    def __init__(
        self,
        *args,
        qa_config: QAConfig | None = None,
        dtype_backend: str | None = None,
        precision: str | None = None,
        **kwargs,
    ) -> None:
        """``dtype_backend``: ``"fp32"``/``"bf16"``/``"fp16"`` to cast the PyTorch model; by default the
        model keeps its dtype (``pipeline("custom-qa", model=path, dtype=torch.bfloat16)`` runs bf16).
        ``precision="auto"``: bf16 where the hardware runs it natively (avx512_bf16/AMX CPU, bf16 GPU),
        else fp32, logged; opt-in, since it changes the numerics of the stock pipeline's fp32 default."""
        if precision is not None and dtype_backend is not None:
            raise QAError("pass precision= or dtype_backend=, not both")
        dtype_backend = precision if precision is not None else dtype_backend
        super().__init__(*args, **kwargs)
        if self.tokenizer is None or not getattr(self.tokenizer, "is_fast", False):
            raise QAError(
                "custom-qa needs a fast tokenizer: pass tokenizer=AutoTokenizer.from_pretrained(...)"
            )
        max_len = getattr(self.tokenizer, "model_max_length", None)
        self.qa_config = qa_config or QAConfig.from_model_dir(
            _model_dir(self.model), model_max_length=max_len
        )
        on_ort = hasattr(self.model, "session") or hasattr(self.model, "ov_config")  # ONNX Runtime / OpenVINO
        self.backend = make_backend(
            self.model, device=None if on_ort else str(self.device), dtype=dtype_backend
        )

    def _sanitize_parameters(self, **kwargs):
        unknown = set(kwargs) - set(_ARG_TO_FIELD) - _OTHER_ARGS
        if unknown:
            known = sorted(set(_ARG_TO_FIELD) | _OTHER_ARGS)
            raise QAError(f"unknown custom-qa argument(s): {sorted(unknown)}; known: {known}")
        return {}, {}, kwargs

    def _settings(self, params: dict) -> tuple[QAConfig, int, int, bool]:
        """``(config, top_k, stock batch size, progress)`` for one call."""
        top_k = params.pop("top_k", None)
        topk = params.pop("topk", None)
        top_k = topk if top_k is None else top_k
        top_k = 1 if top_k is None else top_k
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise QAError(f"top_k must be a positive integer, got {top_k!r}")
        progress = bool(params.pop("progress", False))
        params.pop("num_workers", None)
        if params.pop("padding", None) not in (None, False, "do_not_pad", "longest"):
            raise QAError("custom-qa pads windows itself: padding must be 'do_not_pad' (the default)")
        if params.get("batch_size") is None and self._batch_size is not None:
            params["batch_size"] = self._batch_size
        stock_batch = params.get("batch_size") or 1
        changes = {_ARG_TO_FIELD[k]: v for k, v in params.items() if v is not None}
        base = self.qa_config
        if "max_length" in changes and "doc_stride" not in changes:
            # The stock default stride is min(max_seq_len // 2, 128); a saved stride stays where it fits.
            fits = base.span_scoring == "squad" and base.doc_stride < changes["max_length"] // 2 + 1
            changes["doc_stride"] = base.doc_stride if fits else min(changes["max_length"] // 2, 128)
        try:
            config = base.replace(**changes)
        except TypeError as err:
            raise QAError(f"bad custom-qa argument: {err}") from None
        return config, top_k, stock_batch, progress

    def __call__(self, *args, **kwargs):
        inputs = _parse_inputs(args, kwargs)
        _, _, params = self._sanitize_parameters(**kwargs)
        config, top_k, stock_batch, progress = self._settings(params)
        if isinstance(inputs, list):
            predictions = self._answer(iter(inputs), config, top_k, stock_batch, 512, progress)
            results = [_shape(p.answers) for p in predictions]
            return results[0] if len(results) == 1 else results
        # A generator or torch Dataset: an iterator of results, as the stock pipeline returns.
        return (
            _shape(p.answers)
            for p in self._answer(inputs, config, top_k, stock_batch, STREAM_CHUNK, progress)
        )

    def _answer(self, items, config: QAConfig, top_k: int, stock_batch: int, chunk: int, progress: bool):
        examples = (_normalize(item, i) for i, item in enumerate(items))
        stream = answer_stream(
            self.backend,
            self.tokenizer,
            examples,
            config,
            top_k=top_k,
            chunk_size=chunk,
            stock_batch_size=stock_batch,
        )
        return tqdm(stream, desc="questions", unit="q", disable=not progress)

    # The Pipeline base class requires these; __call__ above batches across inputs instead of using them.
    def preprocess(self, inputs):  # pragma: no cover - not used
        raise NotImplementedError

    def _forward(self, inputs):  # pragma: no cover - not used
        raise NotImplementedError

    def postprocess(self, outputs):  # pragma: no cover - not used
        raise NotImplementedError


def _shape(answers: list[dict]) -> dict | list[dict]:
    """The stock pipeline's result shape: one answer -> the dict, otherwise the list (maybe empty)."""
    return answers[0] if len(answers) == 1 else answers


def _normalize(item, i: int) -> tuple[str, str]:
    """``(question, context)`` from a dict or ``SquadExample`` (checked again by windowing)."""
    if isinstance(item, SquadExample):
        return item.question_text, item.context_text
    if not isinstance(item, dict):
        raise QAError(
            f"input {i}: expected a dict {{'question', 'context'}} or a SquadExample, got {type(item).__name__}"
        )
    try:
        return item["question"], item["context"]
    except KeyError as err:
        raise QAError(f"input {i}: every input dict needs 'question' and 'context' (missing {err})") from None


def _is_stream(inputs) -> bool:
    """What the stock pipeline answers lazily: generators and torch ``Dataset`` objects (``KeyDataset``)."""
    if isinstance(inputs, types.GeneratorType):
        return True
    try:
        from torch.utils.data import Dataset
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return isinstance(inputs, Dataset)


def _dataset_rows(dataset):
    for i in range(len(dataset)):
        yield dataset[i]


def _parse_inputs(args: tuple, kwargs: dict) -> list | Iterator:
    """The stock argument handler's input forms -> a list of items, or an iterator for lazy inputs.

    Positional: one input (dict, SquadExample, list, generator, dataset), ``(question, context)`` strings,
    or several items; ``X=``/``data=``; ``question=``/``context=`` (a string or lists; one question over
    several contexts too). Items are dicts with "question" and "context" or ``SquadExample`` objects.
    """
    if args:
        if "question" in kwargs or "context" in kwargs:
            raise QAError("pass examples either positionally or as question=/context=, not both")
        if len(args) == 2 and all(isinstance(a, str) for a in args):
            inputs = [{"question": args[0], "context": args[1]}]
        else:
            inputs = args[0] if len(args) == 1 else list(args)
    elif "X" in kwargs or "data" in kwargs:
        inputs = kwargs.pop("X") if "X" in kwargs else kwargs.pop("data")
    elif "question" in kwargs and "context" in kwargs:
        q, c = kwargs.pop("question"), kwargs.pop("context")
        if isinstance(q, str) and isinstance(c, str):
            inputs = [{"question": q, "context": c}]
        elif isinstance(q, (list, tuple)) or isinstance(c, (list, tuple)):
            q = [q] * len(c) if isinstance(q, str) else q
            c = [c] * len(q) if isinstance(c, str) else c
            if not isinstance(q, (list, tuple)) or not isinstance(c, (list, tuple)):
                raise QAError("question= and context= must be strings or lists of strings")
            if len(q) != len(c):
                raise QAError(f"got {len(q)} questions but {len(c)} contexts")
            inputs = [{"question": a, "context": b} for a, b in zip(q, c)]
        else:
            raise QAError("question= and context= must be strings or lists of strings")
    else:
        raise QAError("custom-qa needs question= and context= (or a dict, a list of dicts, a generator)")
    if _is_stream(inputs):
        return inputs if isinstance(inputs, types.GeneratorType) else _dataset_rows(inputs)
    if isinstance(inputs, (dict, SquadExample)):
        return [inputs]
    if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Iterable):
        raise QAError(
            "input must be a dict {'question', 'context'}, a SquadExample, or a list or generator of them"
        )
    items = list(inputs)
    if not items:
        raise QAError("no questions given")
    for i, item in enumerate(items):
        _normalize(item, i)
    return items


PIPELINE_REGISTRY.register_pipeline(
    "custom-qa",
    pipeline_class=CustomQAPipeline,
    pt_model=(QAModelLoader, AutoModelForQuestionAnswering),
    type="text",
)
