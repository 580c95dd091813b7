"""``pipeline("custom-qa", model=...)``: the stock question-answering call shape over our path.

Same arguments and output dicts as ``pipeline("question-answering")`` (``question=``/``context=``,
lists, dicts, ``top_k``, ``doc_stride``, ``max_answer_len``, ``max_seq_len``, ``max_question_len``,
``handle_impossible_answer``, ``batch_size``, ``align_to_words``), but windows of all inputs are batched
together, sorted by length and padded per batch, then scored by :mod:`qa_serving.postprocess`.
The model may be a PyTorch span model or an Optimum ``ORTModelForQuestionAnswering``; a path to an
exported ONNX folder loads on ONNX Runtime (``backend="onnx"`` forces it).

Deliberate differences from the stock pipeline: spans from different windows are compared by their
start+end logits (the SQuAD reference scoring), not by per-window probabilities, and ``score`` is the
softmax over the n-best candidates of the example. Single-window answers pick the same span, except that
with ``align_to_words`` the stock pipeline adds up the scores of its top token spans that widen to the same
text (the several subword spans of one word), which can promote a span the logits do not rank first; we
keep the best single span (the SQuAD reference's choice).
"""

from __future__ import annotations

from typing import Any

from transformers import AutoModelForQuestionAnswering, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .backends import load_model, make_backend
from .config import QAConfig
from .errors import QAError
from .inference import answer

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
}


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
            raise QAError("custom-qa needs a fast tokenizer: pass tokenizer=AutoTokenizer.from_pretrained(...)")
        self.qa_config = qa_config or QAConfig.from_model_dir(_model_dir(self.model))
        on_ort = hasattr(self.model, "session") or hasattr(self.model, "ov_config")  # ONNX Runtime / OpenVINO
        self.backend = make_backend(self.model, device=None if on_ort else str(self.device), dtype=dtype_backend)

    def _sanitize_parameters(self, top_k=None, progress=None, **kwargs):
        unknown = set(kwargs) - set(_ARG_TO_FIELD)
        if unknown:
            raise QAError(f"unknown custom-qa argument(s): {sorted(unknown)}; known: {sorted(_ARG_TO_FIELD)}")
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise QAError(f"top_k must be a positive integer, got {top_k!r}")
        post = {"top_k": top_k, "progress": progress}
        return {}, {}, {**{k: v for k, v in post.items() if v is not None}, **kwargs}

    def __call__(self, *args, **kwargs):
        questions, contexts, single = _parse_inputs(args, kwargs)
        settings = {k: kwargs.pop(k) for k in list(kwargs) if k in _ARG_TO_FIELD}
        _, _, params = self._sanitize_parameters(**kwargs, **settings)
        top_k = params.pop("top_k", 1)
        progress = params.pop("progress", False)
        config = self.qa_config.replace(**{_ARG_TO_FIELD[k]: v for k, v in params.items()})
        predictions = answer(self.backend, self.tokenizer, questions, contexts, config, top_k=top_k, progress=progress)
        results = [p.answers[0] if top_k == 1 else p.answers for p in predictions]
        return results[0] if single else results

    # The Pipeline base class requires these; __call__ above batches across inputs instead of using them.
    def preprocess(self, inputs):  # pragma: no cover - not used
        raise NotImplementedError

    def _forward(self, inputs):  # pragma: no cover - not used
        raise NotImplementedError

    def postprocess(self, outputs):  # pragma: no cover - not used
        raise NotImplementedError


def _parse_inputs(args: tuple, kwargs: dict) -> tuple[list[str], list[str], bool]:
    """Accept the stock pipeline's shapes: question=/context= (str or lists), a dict, a list of dicts."""
    if args:
        if "question" in kwargs or "context" in kwargs:
            raise QAError("pass examples either positionally or as question=/context=, not both")
        items = args[0] if len(args) == 1 else list(args)
        if isinstance(items, dict):
            items, single = [items], True
        else:
            single = False
        if not isinstance(items, (list, tuple)) or not all(isinstance(x, dict) for x in items):
            raise QAError("positional input must be a dict {'question', 'context'} or a list of such dicts")
        try:
            questions = [x["question"] for x in items]
            contexts = [x["context"] for x in items]
        except KeyError as err:
            raise QAError(f"every input dict needs 'question' and 'context' (missing {err})") from None
    else:
        if "question" not in kwargs or "context" not in kwargs:
            raise QAError("custom-qa needs question= and context=")
        q, c = kwargs.pop("question"), kwargs.pop("context")
        single = isinstance(q, str) and isinstance(c, str)
        if isinstance(q, str) and isinstance(c, (list, tuple)):
            q = [q] * len(c)
        if isinstance(c, str) and isinstance(q, (list, tuple)):
            c = [c] * len(q)
        questions, contexts = ([q], [c]) if single else (list(q), list(c))
    if not questions:
        raise QAError("no questions given")
    return questions, contexts, single


PIPELINE_REGISTRY.register_pipeline(
    "custom-qa",
    pipeline_class=CustomQAPipeline,
    pt_model=(QAModelLoader, AutoModelForQuestionAnswering),
    type="text",
)
