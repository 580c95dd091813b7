"""Does the exported model answer like the PyTorch one? Logit and answer parity, as a table and JSON.

Both sides run the library's own path (:func:`qa_serving.core.windowing.prepare_features`,
:func:`qa_serving.core.answering.window_logits`/:func:`~qa_serving.core.answering.answer`,
:func:`qa_serving.data.evaluation.evaluate_predictions`), so a difference can only come from the model.

Rules (a variant passes when all of its rules hold):
- fp32: max |logit diff| on real windows <= 1e-3;
- fp32, O1, O2: the same predicted span (start and end character) on >= 99.5% of the questions;
- every variant: F1 drop vs PyTorch <= ``max_f1_drop`` points (int8, O3's GELU approximation and O4's
  fp16 are only held to this one).

Without an eval file, a generated synthetic SQuAD set supplies the windows and questions: fine for
parity (both sides see the same inputs), while its EM/F1 only mean something for models trained on it.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from qa_serving.core.answering import Backend, answer, window_logits
from qa_serving.core.config import QAConfig
from qa_serving.core.windowing import load_tokenizer, prepare_features
from qa_serving.data.evaluation import evaluate_predictions, pick_metric
from qa_serving.errors import QAError
from qa_serving.tables import Column, markdown_table

logger = logging.getLogger(__name__)

MAX_LOGIT_DIFF = 1e-3
MIN_IDENTICAL_SPANS = 0.995
SPAN_EXACT_VARIANTS = ("fp32", "O1", "O2")
PARITY_NAME = "parity.json"
LOGIT_QUESTIONS = 64  # questions whose windows are compared logit by logit


@dataclass
class ParityRow:
    """One model's figures; ``variant`` is ``"pytorch"`` for the reference row."""

    variant: str
    path: str
    exact: float
    f1: float
    questions_per_second: float
    max_logit_diff: float | None = None
    identical_spans: float | None = None  # share of questions, 0..1
    f1_drop: float | None = None  # PyTorch F1 - this F1, in points
    passed: bool = True
    problems: list[str] = field(default_factory=list)


@dataclass
class ParityReport:
    """All rows plus what they were measured on; ``passed`` is the verdict the CLI exits with."""

    rows: list[ParityRow]
    data: str
    metric: str
    n_questions: int
    n_logit_windows: int
    max_f1_drop: float
    device: str

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    def to_dict(self) -> dict:
        return {
            **{k: v for k, v in asdict(self).items() if k != "rows"},
            "passed": self.passed,
            "rows": [asdict(r) for r in self.rows],
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def logit_parity(
    reference: Backend,
    candidate: Backend,
    tokenizer,
    questions: Sequence[str],
    contexts: Sequence[str],
    config: QAConfig,
) -> tuple[float, int]:
    """Max |start/end logit difference| over every real (unpadded) token of every window, and the window count.

    Example: identical backends -> ``(0.0, n_windows)``.
    """
    features = prepare_features(tokenizer, questions, contexts, config)
    ref_start, ref_end = window_logits(reference, features, config)
    cand_start, cand_end = window_logits(candidate, features, config)
    diff = max(
        float(np.max(np.abs(a - b)))
        for pair in ((ref_start, cand_start), (ref_end, cand_end))
        for a, b in zip(*pair)
    )
    return diff, len(features)


def _spans(predictions) -> list[tuple[int, int]]:
    return [(p.best["start"], p.best["end"]) for p in predictions]


def quality_parity(
    torch_backend: Backend,
    variants: Mapping[str, tuple[str, Backend]],
    tokenizer,
    dataset,
    config: QAConfig,
    *,
    metric: str = "auto",
    source: str | Path | None = None,
    max_f1_drop: float = 1.0,
    logit_questions: int = LOGIT_QUESTIONS,
    data_label: str = "",
    device: str = "cpu",
) -> ParityReport:
    """Answer ``dataset`` with PyTorch and with each variant (``{label: (path, backend)}``), then compare.

    Labels decide the rules: ``"fp32"``, ``"O1"``..``"O4"``, ``"int8"`` (see the module docstring).
    """
    metric = pick_metric(metric, config, source)
    questions, contexts = list(dataset["question"]), list(dataset["context"])

    def run(backend: Backend):
        started = time.perf_counter()
        predictions = answer(backend, tokenizer, list(zip(questions, contexts)), config)
        seconds = time.perf_counter() - started
        scores = evaluate_predictions(dataset, predictions, metric, config).metrics
        exact = scores.get("exact_match", scores.get("exact", 0.0))
        return predictions, float(exact), float(scores["f1"]), len(questions) / max(seconds, 1e-9)

    # Logits first: this also warms every backend up, so the timed runs below compare fairly.
    diffs, n_windows = {}, 0
    for label, (path, backend) in variants.items():
        logger.info("parity: logits of %s (%s)", label, path)
        diffs[label], n_windows = logit_parity(
            torch_backend, backend, tokenizer, questions[:logit_questions], contexts[:logit_questions], config
        )
    ref_preds, ref_exact, ref_f1, ref_qps = run(torch_backend)
    rows = [ParityRow("pytorch", "", ref_exact, ref_f1, ref_qps)]
    ref_spans = _spans(ref_preds)
    for label, (path, backend) in variants.items():
        logger.info("parity: answers of %s", label)
        diff = diffs[label]
        preds, exact, f1, qps = run(backend)
        same = float(np.mean([a == b for a, b in zip(ref_spans, _spans(preds))]))
        row = ParityRow(label, str(path), exact, f1, qps, diff, same, ref_f1 - f1)
        if label == "fp32" and diff > MAX_LOGIT_DIFF:
            row.problems.append(f"max |logit diff| {diff:.2e} > {MAX_LOGIT_DIFF:.0e}")
        if label in SPAN_EXACT_VARIANTS and same < MIN_IDENTICAL_SPANS:
            row.problems.append(f"identical spans {same:.2%} < {MIN_IDENTICAL_SPANS:.1%}")
        if row.f1_drop > max_f1_drop:
            row.problems.append(f"F1 drop {row.f1_drop:.2f} > {max_f1_drop:g} points")
        row.passed = not row.problems
        rows.append(row)
    return ParityReport(
        rows, data_label or str(source or "dataset"), metric, len(questions), n_windows, max_f1_drop, device
    )


_PARITY_COLUMNS = [
    Column("variant", "variant", align="left"),
    Column("exact", "EM", ".2f"),
    Column("f1", "F1", ".2f"),
    Column("f1_drop", "F1 drop", "+.2f"),
    Column("identical_spans", "identical spans", lambda v: f"{100 * v:.1f}%"),
    Column("max_logit_diff", "max abs logit diff", ".1e"),
    Column("questions_per_second", "questions/s", ".0f"),
    Column("verdict", "verdict", align="left"),
]


def format_table(rows: Sequence[ParityRow]) -> str:
    """A markdown table of the rows (what the CLI prints and ``docs/export.md`` shows)."""

    def verdict(r: ParityRow) -> str:
        if r.variant == "pytorch":
            return "reference"
        return "pass" if r.passed else "FAIL: " + "; ".join(r.problems)

    return markdown_table([{**asdict(r), "verdict": verdict(r)} for r in rows], _PARITY_COLUMNS)


def _synthetic_dataset(n_articles: int = 20):
    """A generated SQuAD v1.1 set (English), for exports run without ``--eval-file``."""
    from qa_serving.data.loading import load_examples
    from qa_serving.data.synthetic import write_squad

    with tempfile.TemporaryDirectory() as tmp:
        return load_examples(write_squad(Path(tmp) / "synthetic.json", n_articles=n_articles, seed=1234))


def check_variants(
    model_dir: str | Path,
    output_dir: str | Path,
    load_variants,
    *,
    eval_file: str | Path | None = None,
    max_eval_samples: int | None = None,
    max_f1_drop: float = 1.0,
    metric: str = "auto",
    device: str = "cpu",
) -> ParityReport:
    """The parity gate of every export format: the PyTorch model in ``model_dir`` vs the variants that
    ``load_variants()`` returns (``{label: (folder, backend)}``), on ``eval_file`` (a generated synthetic
    set when ``None``); settings and tokenizer from ``output_dir``, where ``parity.json`` is written."""
    from qa_serving.core.backends import load_backend
    from qa_serving.data.loading import load_examples

    if max_eval_samples is not None and max_eval_samples < 1:
        raise QAError(f"max_eval_samples must be a positive integer, got {max_eval_samples}")
    if eval_file is not None:
        dataset, label = load_examples(eval_file), str(eval_file)
    else:
        dataset, label = _synthetic_dataset(), "synthetic (qa_serving.data.synthetic, 20 articles, seed 1234)"
        metric = "squad" if metric == "auto" else metric
    if max_eval_samples:
        dataset = dataset.select(range(min(max_eval_samples, len(dataset))))
    config = QAConfig.from_model_dir(output_dir)
    tokenizer = load_tokenizer(output_dir)
    torch_backend = load_backend(model_dir, backend="torch", device=device)
    report = quality_parity(
        torch_backend,
        load_variants(),
        tokenizer,
        dataset,
        config,
        metric=metric,
        source=eval_file,
        max_f1_drop=max_f1_drop,
        data_label=label,
        device=device,
    )
    report.save(Path(output_dir) / PARITY_NAME)
    return report


def check_export(*, model_dir: str | Path, result, **options) -> ParityReport:
    """Parity of every variant in ``result`` (an :class:`export.onnx.ExportResult`) vs ``model_dir``;
    ``options``: those of :func:`check_variants`. Writes ``parity.json`` into the export folder. int8
    always runs on CPU: dynamic quantization targets CPU kernels (``DynamicQuantizeLinear`` has no CUDA
    kernel)."""
    from qa_serving.core.backends import load_backend

    def load_variants() -> dict:
        return {
            name: (
                str(folder),
                load_backend(folder, backend="onnx", device="cpu" if name == "int8" else result.device),
            )
            for name, folder in result.variants().items()
        }

    return check_variants(model_dir, result.output_dir, load_variants, device=result.device, **options)


__all__ = [
    "ParityReport",
    "ParityRow",
    "check_export",
    "check_variants",
    "format_table",
    "logit_parity",
    "quality_parity",
]
