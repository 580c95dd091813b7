"""The one table of public options: every door (pipeline, HTTP JSON, Open Inference Protocol v2, CLI,
handler settings) reads its names, aliases, types, ranges and defaults from :data:`OPTIONS`.

An option is either *per example* (it changes how answers are picked from the logits, so two examples of
one batch may differ: ``top_k``, ``max_answer_len``, ``handle_impossible_answer``, ...) or *per call*
(it changes windowing or batching, so it holds for a whole call: ``max_seq_len``, ``doc_stride``,
``batch_size``, ...). Defaults differ per span-scoring mode (:mod:`qa_serving.core.config`): ``"pipeline"``
has the stock pipeline's, ``"squad"`` the SQuAD reference's; :class:`~qa_serving.core.config.QAConfig`
takes its field defaults from here.

Example: ``parse_options({"topk": 3})`` -> ``{"top_k": 3}``; ``parse_options({"top_k": 0})`` raises
``QAError("top_k must be an integer from 1 to 1000, got 0")`` at every door.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qa_serving.core.hardware import PRECISIONS  # the one precision vocabulary
from qa_serving.errors import QAError

MODES = ("pipeline", "squad")


@dataclass(frozen=True)
class Option:
    """One public option. ``field``: its :class:`QAConfig` field (``None``: not saved with a model).

    ``default``: one value, or ``{"pipeline": ..., "squad": ...}`` when the modes differ.
    """

    name: str
    kind: type
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    aliases: tuple[str, ...] = ()
    field: str | None = None
    per_example: bool = False
    nullable: bool = False

    def default_for(self, mode: str) -> Any:
        return self.default[mode] if isinstance(self.default, dict) else self.default

    @property
    def range_text(self) -> str:
        """How the valid values read in an error or ``--help``: ``an integer from 1 to 1000``."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind is bool:
            return "true or false"
        noun = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            return f"{noun} from {_num(self.low)} to {_num(self.high)}"
        if self.low is not None:
            return f"{noun} >= {_num(self.low)}"
        return noun

    def check(self, value: Any) -> Any:
        """``value`` if valid (an int is accepted for a float option), else a QAError with the one wording."""
        if value is None and self.nullable:
            return None
        ok = True
        if self.choices is not None:
            ok = value in self.choices
        elif self.kind is bool:
            ok = isinstance(value, bool)
        elif self.kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif self.kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
            value = float(value) if ok else value
        if ok and self.kind in (int, float) and self.choices is None:
            ok = (self.low is None or value >= self.low) and (self.high is None or value <= self.high)
        if not ok:
            raise QAError(f"{self.name} must be {self.range_text}, got {value!r}")
        return value


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


OPTIONS: dict[str, Option] = {
    o.name: o
    for o in (
        # --- per example: how answers are picked from the logits ---
        Option(
            "top_k", int, 1, "Answers returned per question.", 1, 1000, aliases=("topk",), per_example=True
        ),
        Option(
            "max_answer_len",
            int,
            {"pipeline": 15, "squad": 30},
            "Longest answer, in tokens.",
            1,
            1000,
            field="max_answer_len",
            per_example=True,
        ),
        Option(
            "handle_impossible_answer",
            bool,
            False,
            "Allow the empty answer (SQuAD v2 / unanswerable questions).",
            field="handle_impossible_answer",
            per_example=True,
        ),
        Option(
            "null_score_diff_threshold",
            float,
            0.0,
            "'squad' mode with handle_impossible_answer: answer '' when null score - best span score "
            "exceeds this.",
            -1000.0,
            1000.0,
            field="null_score_diff_threshold",
            per_example=True,
        ),
        Option(
            "n_best_size",
            int,
            20,
            "'squad' mode: start and end candidates kept per window.",
            1,
            1000,
            field="n_best_size",
            per_example=True,
        ),
        Option(
            "align_to_words",
            bool,
            True,
            "Widen answers to whole words (as the stock pipeline does).",
            field="align_to_words",
            per_example=True,
        ),
        Option(
            "min_probability",
            float,
            0.0,
            "Calibrated models: answer '' (start = end = 0) when the top answer's probability of being "
            "exactly right is below this (0: never abstain). Applied after handle_impossible_answer.",
            0.0,
            1.0,
            field="min_probability",
            per_example=True,
        ),
        Option(
            "passage_match_weight",
            float,
            4.0,
            "'squad' mode, several passages per question: added to a span's start + end logit per unit of "
            "match with the question: the IDF-weighted share of the question's words in the span's passage, "
            "plus twice the share of its word pairs there, plus the share of its words beside the span "
            "(each 0..1).",
            0.0,
            1000.0,
            field="passage_match_weight",
            per_example=True,
        ),
        # --- per call: windowing and batching ---
        Option(
            "max_seq_len",
            int,
            384,
            "Tokens per window (question + context + special tokens).",
            8,
            100_000,
            aliases=("max_length",),
            field="max_length",
        ),
        Option(
            "doc_stride",
            int,
            128,
            "Tokens shared by two consecutive windows (stock default: min(max_seq_len // 2, 128)).",
            1,
            100_000,
            field="doc_stride",
        ),
        Option(
            "max_question_len",
            int,
            64,
            "Longer questions are cut to this many tokens.",
            1,
            100_000,
            field="max_question_len",
        ),
        Option(
            "batch_size",
            int,
            32,
            "Windows per forward pass. 'pipeline' mode: given to a call, also the stock pipeline's batch_size "
            "whose padding it reproduces (1 when not given, the stock default).",
            1,
            100_000,
            field="batch_size",
        ),
        Option(
            "max_padding",
            float,
            0.25,
            "Dynamic padding: a window shorter than (1 - this) x the longest of its batch starts a new "
            "batch (1: always fill batch_size).",
            0.0,
            1.0,
            field="max_padding",
        ),
        Option(
            "span_scoring",
            str,
            {"pipeline": "pipeline", "squad": "squad"},
            "How spans are ranked: 'pipeline' (the stock question-answering pipeline, exactly) or 'squad' "
            "(the SQuAD reference: start+end logits across windows, n-best, null threshold).",
            choices=MODES,
            field="span_scoring",
        ),
    )
}

ALIASES: dict[str, str] = {alias: o.name for o in OPTIONS.values() for alias in (o.name, *o.aliases)}
PER_EXAMPLE: tuple[str, ...] = tuple(n for n, o in OPTIONS.items() if o.per_example)
# Chosen when a model loads, not per call: outside OPTIONS, but one name, one set of values everywhere.
PRECISION = Option(
    "precision",
    str,
    "fp32",
    "PyTorch/OpenVINO precision: fp32 (the stock numerics), bf16, fp16 (GPU only), or auto (bf16 where the "
    "CPU/GPU runs it natively, else fp32; logged).",
    choices=PRECISIONS,
)


def canonical(name: str) -> str | None:
    """The option a name or alias stands for (``"topk"`` -> ``"top_k"``), ``None`` if unknown."""
    return ALIASES.get(name)


def parse_options(
    raw: Mapping[str, Any], *, per_example_only: bool = False, where: str = "option"
) -> dict[str, Any]:
    """Checked options under their canonical names; ``None`` values mean "not given" and are dropped.

    ``per_example_only``: refuse per-call options (a request cannot change the server's windowing).
    Example: ``parse_options({"topk": 2, "max_length": 256})`` -> ``{"top_k": 2, "max_seq_len": 256}``.
    """
    out: dict[str, Any] = {}
    allowed = PER_EXAMPLE if per_example_only else tuple(OPTIONS)
    unknown = [k for k in raw if canonical(k) not in allowed]
    if unknown:
        raise QAError(f"unknown {where}(s) {sorted(map(str, unknown))}; known: {sorted(allowed)}")
    for key, value in raw.items():
        name = canonical(key)
        if value is None:
            continue
        if name in out and out[name] != value:
            raise QAError(f"{name} given twice (as {key!r} too)")
        out[name] = OPTIONS[name].check(value)
    return out


def config_changes(options: Mapping[str, Any]) -> dict[str, Any]:
    """Checked options -> :class:`QAConfig` field changes (options without a field are left out)."""
    return {OPTIONS[n].field: v for n, v in options.items() if OPTIONS[n].field is not None}


def markdown_table() -> str:
    """The table as markdown (docs/options.md is generated from it), written by :mod:`qa_serving.tables`."""
    from qa_serving.tables import Column
    from qa_serving.tables import markdown_table as write

    rows = [
        {
            "option": f"`{o.name}`",
            "aliases": ", ".join(f"`{a}`" for a in o.aliases),
            "range": o.range_text,
            "default": " / ".join(repr(o.default_for(m)) for m in MODES)
            if isinstance(o.default, dict)
            else repr(o.default),
            "per": "example" if o.per_example else "call",
            "help": o.help,
        }
        for o in OPTIONS.values()
    ]
    headers = ("option", "aliases", "type / range", "default pipeline / squad", "per", "help")
    keys = ("option", "aliases", "range", "default", "per", "help")
    return write(rows, [Column(k, h, align="left") for k, h in zip(keys, headers)]) + "\n"
