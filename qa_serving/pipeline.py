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
padding can decide ties); a model trained here runs in ``"squad"`` mode, as it was evaluated. A model with
a calibrator (``qa_calibrator.json``, :mod:`qa_serving.core.calibration`) adds ``probability`` to every
answer and honours ``min_probability``; ``passages=[...]`` answers one question over several passages. Known
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

from qa_serving.core.answering import Example, answer_stream
from qa_serving.core.backends import load_model, make_backend
from qa_serving.core.config import QAConfig
from qa_serving.core.options import ALIASES, OPTIONS, PRECISION, parse_options
from qa_serving.errors import QAError

# Pipeline-only arguments (not answer options): how a call runs, not what it answers.
_CALL_ARGS = {"progress", "num_workers", "padding"}
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
        precision: str | None = None,
        **kwargs,
    ) -> None:
        """``precision``: ``"fp32"``/``"bf16"``/``"fp16"`` casts the PyTorch model (by default it keeps its
        dtype: ``pipeline("custom-qa", model=path, dtype=torch.bfloat16)`` runs bf16, as stock);
        ``"auto"``: bf16 where the hardware runs it natively (avx512_bf16/AMX CPU, bf16 GPU), else fp32,
        logged; opt-in, since it changes the numerics of the stock pipeline's fp32 default."""
        if precision is not None:
            PRECISION.check(precision)
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
            self.model, device=None if on_ort else str(self.device), dtype=precision
        )

    def _sanitize_parameters(self, **kwargs):
        """Check options once, at construction and at each call (the stock routing point): every public
        option of :mod:`qa_serving.core.options` under its name or alias, plus ``progress``/``padding``.
        Construction-time options are stored by ``Pipeline.__init__`` and merged under call-time ones."""
        extra = {k: kwargs.pop(k) for k in list(kwargs) if k in _CALL_ARGS}
        if extra.get("padding") not in (None, False, "do_not_pad", "longest"):
            raise QAError("custom-qa pads windows itself: padding must be 'do_not_pad' (the default)")
        unknown = sorted(k for k in kwargs if k not in ALIASES)
        if unknown:
            raise QAError(f"unknown custom-qa argument(s): {unknown}; known: {sorted({*ALIASES, *_CALL_ARGS})}")
        options = parse_options(kwargs)
        if "progress" in extra:
            options["progress"] = bool(extra["progress"])
        return {}, {}, options

    def _settings(self, params: dict) -> tuple[QAConfig, dict, int, bool]:
        """``(config, per-example options, stock batch size, progress)`` for one call."""
        params = dict(params)
        progress = params.pop("progress", False)
        if "batch_size" not in params and self._batch_size is not None:
            params["batch_size"] = OPTIONS["batch_size"].check(self._batch_size)
        stock_batch = params.get("batch_size") or 1
        per_example = {k: params.pop(k) for k in list(params) if OPTIONS[k].per_example}
        config = self.qa_config.with_options(params)
        return config, per_example, stock_batch, progress

    def __call__(self, *args, **kwargs):
        inputs = _parse_inputs(args, kwargs)
        _, _, call_params = self._sanitize_parameters(**kwargs)
        params = {**self._postprocess_params, **call_params}  # call overrides construction, as stock
        config, options, stock_batch, progress = self._settings(params)
        if isinstance(inputs, list) and not inputs:
            return []
        if isinstance(inputs, list):
            predictions = self._answer(iter(inputs), config, options, stock_batch, 512, progress)
            results = [_shape(p.answers) for p in predictions]
            return results[0] if len(results) == 1 else results
        # A generator or torch Dataset: an iterator of results, as the stock pipeline returns.
        return (
            _shape(p.answers)
            for p in self._answer(inputs, config, options, stock_batch, STREAM_CHUNK, progress)
        )

    def _answer(self, items, config: QAConfig, options: dict, stock_batch: int, chunk: int, progress: bool):
        examples = (_example(*_normalize(item, i), options) for i, item in enumerate(items))
        stream = answer_stream(
            self.backend, self.tokenizer, examples, config, chunk_size=chunk, stock_batch_size=stock_batch
        )
        return tqdm(stream, desc="questions", unit="q", disable=not progress)

    # The Pipeline base class requires these; __call__ above batches across inputs instead of using them.
    def preprocess(self, inputs):  # pragma: no cover - not used
        raise NotImplementedError

    def _forward(self, inputs):  # pragma: no cover - not used
        raise NotImplementedError

    def postprocess(self, outputs):  # pragma: no cover - not used
        raise NotImplementedError


def _example(question: str, context: str, passages: tuple[str, ...] | None, options: dict) -> Example:
    return Example(question, context, options, passages)


def _shape(answers: list[dict]) -> dict | list[dict]:
    """The stock pipeline's result shape: one answer -> the dict, otherwise the list (maybe empty)."""
    return answers[0] if len(answers) == 1 else answers


def _normalize(item, i: int) -> tuple[str, str, tuple[str, ...] | None]:
    """``(question, context, passages)`` from a dict or ``SquadExample`` (checked again by windowing); a
    dict ``{"question", "passages": [...]}`` asks one question over several passages."""
    if isinstance(item, SquadExample):
        return item.question_text, item.context_text, None
    if not isinstance(item, dict):
        raise QAError(
            f"input {i}: expected a dict {{'question', 'context'}} or a SquadExample, got {type(item).__name__}"
        )
    if "passages" in item:
        if "context" in item:
            raise QAError(f"input {i}: give 'context' or 'passages', not both")
        passages = item["passages"]
        if isinstance(passages, str) or not isinstance(passages, (list, tuple)):
            raise QAError(f"input {i}: passages must be a list of strings")
        if "question" not in item:
            raise QAError(f"input {i}: every input dict needs 'question'")
        return item["question"], "", tuple(passages)
    try:
        return item["question"], item["context"], None
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
    several contexts too); ``question=``/``passages=`` (one question over several passages, answered as
    one: a single ranked list, each answer with its ``passage``). Items are dicts with "question" and
    "context" (or "passages") or ``SquadExample`` objects.
    """
    if args:
        if "question" in kwargs or "context" in kwargs:
            raise QAError("pass examples either positionally or as question=/context=, not both")
        if len(args) == 2 and all(isinstance(a, str) for a in args):
            inputs = [{"question": args[0], "context": args[1]}]
        else:
            inputs = args[0] if len(args) == 1 else list(args)
    elif "passages" in kwargs:
        if "context" in kwargs:
            raise QAError("pass context= or passages=, not both")
        q, passages = kwargs.pop("question", None), kwargs.pop("passages")
        if not isinstance(q, str):
            raise QAError("passages= goes with one question= string")
        inputs = [{"question": q, "passages": passages}]
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
    items = list(inputs)  # empty: no answers, as the stock pipeline
    for i, item in enumerate(items):
        _normalize(item, i)
    return items


PIPELINE_REGISTRY.register_pipeline(
    "custom-qa",
    pipeline_class=CustomQAPipeline,
    pt_model=(QAModelLoader, AutoModelForQuestionAnswering),
    type="text",
)
