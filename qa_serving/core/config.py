"""Inference settings shared by training, evaluation, the pipeline, the exporter and the handler.

Training saves a :class:`QAConfig` as ``qa_config.json`` next to the model; every other caller reads it
back with :func:`QAConfig.from_model_dir`, so a served model answers exactly as it was evaluated.

Two span-scoring modes (``span_scoring``), one implementation (:mod:`qa_serving.core.postprocess`):
- ``"pipeline"``: exactly the stock ``pipeline("question-answering")`` (per-window probabilities, its
  masking, cross-window ranking, ``top_k`` and answer merging). A model folder without ``qa_config.json``
  (e.g. a hub checkpoint) runs in this mode with the stock defaults (:meth:`QAConfig.stock`).
- ``"squad"``: the SQuAD reference (start + end logits across windows, n-best, null threshold); what
  ``qa-serving train`` evaluates and saves. A ``qa_config.json`` without the key means ``"squad"``.
In both modes an answer's ``score`` is the stock one (p_start x p_end in its window).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qa_serving.errors import QAError

CONFIG_NAME = "qa_config.json"
SPAN_SCORING = ("pipeline", "squad")


@dataclass
class QAConfig:
    """Windowing and answer-extraction settings (the defaults are the SQuAD reference ones)."""

    max_length: int = field(
        default=384, metadata={"help": "Tokens per window (question + context + specials)."}
    )
    doc_stride: int = field(default=128, metadata={"help": "Tokens shared by two consecutive windows."})
    max_question_len: int = field(
        default=64, metadata={"help": "Longer questions are cut to this many tokens."}
    )
    n_best_size: int = field(default=20, metadata={"help": "Start and end candidates kept per window."})
    max_answer_len: int = field(default=30, metadata={"help": "Longest answer, in tokens."})
    version_2: bool = field(default=False, metadata={"help": "SQuAD v2: allow the empty (no) answer."})
    null_score_diff_threshold: float = field(
        default=0.0, metadata={"help": "v2: answer '' when null score - best span score exceeds this."}
    )
    align_to_words: bool = field(
        default=True, metadata={"help": "Widen answers to whole words (as the stock pipeline does)."}
    )
    batch_size: int = field(default=32, metadata={"help": "Windows per forward pass at inference."})
    pad_to_max_length: bool = field(
        default=False, metadata={"help": "Pad every batch to max_length (fixed-shape backends)."}
    )
    span_scoring: str = field(
        default="squad",
        metadata={
            "help": "How spans are ranked: 'pipeline' (the stock question-answering pipeline, exactly) or "
            "'squad' (the SQuAD reference: start+end logits across windows, n-best, null threshold)."
        },
    )
    max_padding: float = field(
        default=0.25,
        metadata={
            "help": "Dynamic padding: a window shorter than (1 - this) x the longest of its batch starts a new "
            "batch, so padding is at most this share of a row (1: always fill batch_size)."
        },
    )

    def __post_init__(self) -> None:
        ints = ("max_length", "doc_stride", "max_question_len", "n_best_size", "max_answer_len", "batch_size")
        for name in ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise QAError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.max_padding, bool) or not 0.0 <= self.max_padding <= 1.0:
            raise QAError(f"max_padding must be between 0 and 1, got {self.max_padding!r}")
        if self.doc_stride >= self.max_length:
            raise QAError(
                f"doc_stride ({self.doc_stride}) must be smaller than max_length ({self.max_length})"
            )
        if self.span_scoring not in SPAN_SCORING:
            raise QAError(f"span_scoring must be 'pipeline' or 'squad', got {self.span_scoring!r}")
        # max_question_len is not checked against max_length: windowing cuts questions to what fits.

    @classmethod
    def stock(cls, model_max_length: int | None = None, **changes: Any) -> QAConfig:
        """The stock pipeline's settings: ``"pipeline"`` scoring, max_answer_len 15, max_seq_len
        ``min(model_max_length, 384)``, doc_stride ``min(max_seq_len // 2, 128)``, max_question_len 64.

        Example: ``QAConfig.stock(model_max_length=128)`` -> max_length 128, doc_stride 64.
        """
        max_length = changes.pop("max_length", None) or min(model_max_length or 384, 384)
        doc_stride = changes.pop("doc_stride", None) or min(max_length // 2, 128)
        base = cls(
            span_scoring="pipeline",
            max_length=max_length,
            doc_stride=doc_stride,
            max_question_len=64,
            max_answer_len=15,
        )
        return base.replace(**changes)

    def replace(self, **changes: Any) -> QAConfig:
        """A copy with some fields changed; ``None`` values are ignored (handy for CLI/kwargs)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, model_dir: str | Path) -> Path:
        path = Path(model_dir) / CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QAConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_model_dir(cls, model_dir: str | Path | None, model_max_length: int | None = None) -> QAConfig:
        """The config saved with a model (``"squad"`` scoring unless it says otherwise: only our trainer
        writes it), or the stock pipeline's settings when there is none (e.g. a hub checkpoint)."""
        path = Path(model_dir) / CONFIG_NAME if model_dir is not None else None
        if path is None or not path.is_file():
            return cls.stock(model_max_length)
        return cls.from_dict(json.loads(path.read_text()))
