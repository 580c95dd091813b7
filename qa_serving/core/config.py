"""Inference settings shared by training, evaluation, the pipeline, the exporter and the handler.

Training saves a :class:`QAConfig` as ``qa_config.json`` next to the model; every other caller reads it
back with :func:`QAConfig.from_model_dir`, so a served model answers exactly as it was evaluated. Names,
ranges and defaults come from the one table of public options (:mod:`qa_serving.core.options`).

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

from qa_serving.core.calibration import Calibrator, load_calibrator
from qa_serving.core.options import OPTIONS, config_changes
from qa_serving.errors import QAError

CONFIG_NAME = "qa_config.json"
SPAN_SCORING = ("pipeline", "squad")
_BY_FIELD = {o.field: o for o in OPTIONS.values() if o.field is not None}
_RENAMED = {"version_2": "handle_impossible_answer"}  # qa_config.json files saved before the rename


def _option(name: str, mode: str = "squad") -> Any:
    """A dataclass field whose default and help are the option table's row."""
    option = OPTIONS[name]
    return field(default=option.default_for(mode), metadata={"help": option.help})


@dataclass
class QAConfig:
    """Windowing and answer-extraction settings (the defaults are the SQuAD reference ones)."""

    max_length: int = _option("max_seq_len")
    doc_stride: int = _option("doc_stride")
    max_question_len: int = _option("max_question_len")
    n_best_size: int = _option("n_best_size")
    max_answer_len: int = _option("max_answer_len")
    handle_impossible_answer: bool = _option("handle_impossible_answer")
    null_score_diff_threshold: float = _option("null_score_diff_threshold")
    align_to_words: bool = _option("align_to_words")
    batch_size: int = _option("batch_size")
    pad_to_max_length: bool = field(
        default=False, metadata={"help": "Pad every batch to max_length (fixed-shape backends)."}
    )
    span_scoring: str = _option("span_scoring")
    max_padding: float = _option("max_padding")
    min_probability: float = _option("min_probability")
    passage_match_weight: float = _option("passage_match_weight")
    # The model's qa_calibrator.json, read by from_model_dir: not a setting (never saved in qa_config.json,
    # no CLI flag), but it travels with the config so every door's core call adds ``probability``.
    calibrator: Calibrator | None = field(
        default=None, repr=False, compare=False, metadata={"internal": True}
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            option = _BY_FIELD.get(f.name)
            if option is not None:
                setattr(self, f.name, option.check(getattr(self, f.name)))
        if self.doc_stride >= self.max_length:
            raise QAError(
                f"doc_stride ({self.doc_stride}) must be smaller than max_seq_len ({self.max_length})"
            )
        # max_question_len is not checked against max_length: windowing cuts questions to what fits.

    @property
    def version_2(self) -> bool:
        """The SQuAD v2 name of ``handle_impossible_answer`` (read-only)."""
        return self.handle_impossible_answer

    @classmethod
    def stock(cls, model_max_length: int | None = None, **changes: Any) -> QAConfig:
        """The stock pipeline's settings: ``"pipeline"`` scoring, max_answer_len 15, max_seq_len
        ``min(model_max_length, 384)``, doc_stride ``min(max_seq_len // 2, 128)``, max_question_len 64.

        Example: ``QAConfig.stock(model_max_length=128)`` -> max_length 128, doc_stride 64.
        """
        max_length = changes.pop("max_length", None) or min(model_max_length or 384, 384)
        doc_stride = changes.pop("doc_stride", None) or stock_stride(max_length)
        defaults = {o.field: o.default_for("pipeline") for o in _BY_FIELD.values()}
        base = cls(**{**defaults, "max_length": max_length, "doc_stride": doc_stride})
        return base.replace(**changes)

    def replace(self, **changes: Any) -> QAConfig:
        """A copy with some fields changed; ``None`` values are ignored (handy for CLI/kwargs)."""
        changes = {_RENAMED.get(k, k): v for k, v in changes.items() if v is not None}
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise QAError(f"unknown QAConfig field(s) {unknown}; known: {sorted(known)}")
        return dataclasses.replace(self, **changes)

    def with_options(self, options: dict[str, Any]) -> QAConfig:
        """A copy with checked public options applied (:func:`qa_serving.core.options.parse_options`).

        A new ``max_seq_len`` without a ``doc_stride`` moves the stride as the stock pipeline does
        (``min(max_seq_len // 2, 128)``), unless a saved ``"squad"`` stride still fits.
        """
        changes = config_changes(options)
        if "max_length" in changes and "doc_stride" not in changes:
            fits = self.span_scoring == "squad" and self.doc_stride < changes["max_length"] // 2 + 1
            changes["doc_stride"] = self.doc_stride if fits else stock_stride(changes["max_length"])
        return self.replace(**changes)

    def to_dict(self) -> dict[str, Any]:
        """The saved settings (``qa_config.json``): every field but the calibrator (its own file)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "calibrator"}

    def save(self, model_dir: str | Path) -> Path:
        """Write ``qa_config.json``, and the calibrator this config was loaded with (``qa_calibrator.json``),
        so every folder made from a model (ONNX/OpenVINO exports, archives) answers with ``probability``."""
        path = Path(model_dir) / CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        if self.calibrator is not None:
            self.calibrator.save(model_dir)
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QAConfig:
        known = {f.name for f in dataclasses.fields(cls)} - {"calibrator"}
        data = {_RENAMED.get(k, k): v for k, v in data.items()}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_model_dir(cls, model_dir: str | Path | None, model_max_length: int | None = None) -> QAConfig:
        """The config saved with a model (``"squad"`` scoring unless it says otherwise: only our trainer
        writes it), or the stock pipeline's settings when there is none (e.g. a hub checkpoint); with the
        folder's calibrator (``qa_calibrator.json``) when it has one."""
        path = Path(model_dir) / CONFIG_NAME if model_dir is not None else None
        if path is None or not path.is_file():
            config = cls.stock(model_max_length)
        else:
            config = cls.from_dict(json.loads(path.read_text()))
        config.calibrator = load_calibrator(model_dir)  # None without qa_calibrator.json: stock output
        return config


def stock_stride(max_length: int) -> int:
    """The stock pipeline's default ``doc_stride`` for a window length: ``min(max_length // 2, 128)``."""
    return min(max_length // 2, 128)
