"""In-process inference: stock ``pipeline("question-answering")`` vs ``pipeline("custom-qa")`` on PyTorch,
ONNX fp32, ONNX O2 and ONNX int8, same model, same questions, same settings; plus both pipelines on
PyTorch bf16 (the model cast with ``.to(torch.bfloat16)``), since bf16 is what pays off on CPUs with
avx512_bf16/AMX. Ratios are against the stock pipeline in fp32 (its default).

Each variant lives in its own Python process (so peak memory is the variant's own), loaded and warmed up
once. The questions are then split into chunks of ``--chunk``; on each chunk every variant takes its turn
(the order rotating from chunk to chunk), so that load from other jobs on a shared machine hits all
variants alike. A turn answers the chunk's questions one call at a time (batch 1: questions/s and
p50/p95 latency per question), then in one call with ``batch_size=16`` (windows per forward pass, for
both pipelines). EM/F1 (SQuAD v1.1) are scored on the batch-1 answers.
Settings shared by every variant: ``max_seq_len=384``, ``doc_stride=128``, ``max_question_len=64``,
``max_answer_len=30``, ``top_k=1``; torch and ONNX Runtime intra-op threads = ``--threads``.

Peak memory is ``ru_maxrss`` of the variant's process at the end; "model + run" subtracts the peak
after imports (torch, transformers, onnxruntime, optimum, qa_serving), so it is what loading the model
and answering added.

    python -m bench.inference                      # random DistilBERT-base, 250 questions
    python -m bench.inference --model runs/minilm  # a trained folder: EM/F1 mean something
    python -m bench.inference --quick              # 24 questions, smoke-sized
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/inference.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    CACHE_DIR,
    RESULTS_DIR,
    Column,
    EvalSet,
    available_cpus,
    cache_name,
    default_eval_file,
    export_variants,
    is_random_model,
    latency_summary,
    load_eval_set,
    machine_info,
    machine_markdown,
    markdown_table,
    model_label,
    peak_rss_mib,
    random_distilbert,
    save_bar_plot,
    score,
    window_stats,
    write_report,
)


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    pipeline: str  # question-answering | custom-qa
    backend: str  # torch | onnx | openvino
    onnx: str | None = None  # fp32 | O2 | int8; OpenVINO: fp32 | int8-weights | int8 (export/openvino.py)
    dtype: str = "fp32"  # fp32 | bf16 (bf16 needs a CPU with avx512_bf16/AMX to pay off); OpenVINO: the
    # precision hint, "default" = Optimum-Intel's own (the CPU plugin's: bf16 on avx512_bf16/AMX CPUs)
    compile: bool = False  # custom-qa PyTorch through torch.compile with shape buckets

    @property
    def precision(self) -> str:
        """The precision whose matmul peak the variant's FLOP utilisation is measured against."""
        if self.onnx == "int8":
            return "int8"
        return "bf16" if self.dtype in ("bf16", "default") else "fp32"


VARIANTS = (
    Variant("stock", 'pipeline("question-answering"), PyTorch', "question-answering", "torch"),
    Variant("torch", "custom-qa, PyTorch", "custom-qa", "torch"),
    Variant("onnx-fp32", "custom-qa, ONNX fp32", "custom-qa", "onnx", "fp32"),
    Variant("onnx-o2", "custom-qa, ONNX O2", "custom-qa", "onnx", "O2"),
    Variant("onnx-int8", "custom-qa, ONNX int8", "custom-qa", "onnx", "int8"),
    Variant(
        "stock-bf16",
        'pipeline("question-answering"), PyTorch bf16',
        "question-answering",
        "torch",
        None,
        "bf16",
    ),
    Variant("torch-bf16", "custom-qa, PyTorch bf16", "custom-qa", "torch", None, "bf16"),
    Variant("torch-compile", "custom-qa, PyTorch fp32 + torch.compile", "custom-qa", "torch", compile=True),
    Variant(
        "torch-bf16-compile",
        "custom-qa, PyTorch bf16 + torch.compile",
        "custom-qa",
        "torch",
        None,
        "bf16",
        True,
    ),
    Variant(
        "optimum-intel",
        'Optimum-Intel OVModelForQuestionAnswering + pipeline("question-answering") (its defaults: bf16 hint here)',
        "question-answering",
        "openvino",
        "fp32",
        "default",
    ),
    Variant("ov-fp32", "custom-qa, OpenVINO fp32", "custom-qa", "openvino", "fp32", "fp32"),
    Variant("ov-bf16", "custom-qa, OpenVINO bf16", "custom-qa", "openvino", "fp32", "bf16"),
    Variant(
        "ov-int8w", "custom-qa, OpenVINO int8 weights + bf16", "custom-qa", "openvino", "int8-weights", "bf16"
    ),
    Variant(
        "ov-int8",
        "custom-qa, OpenVINO int8 (NNCF, calibrated) + bf16",
        "custom-qa",
        "openvino",
        "int8",
        "bf16",
    ),
)
BY_KEY = {v.key: v for v in VARIANTS}
SETTINGS = {"max_seq_len": 384, "doc_stride": 128, "max_question_len": 64, "max_answer_len": 30}
TARGET_ONNX, TARGET_INT8, TARGET_F1_DROP = 3.0, 5.0, 1.0


# --- the machine's peak and the model's work ----------------------------------------------------------

PEAK_SHAPES = ((4096, 768, 3072), (4096, 3072, 768), (2048, 2048, 2048))  # BERT-base-like GEMMs


def matmul_peak(threads: int, dtype: str = "fp32", repeats: int = 5) -> float:
    """Best GFLOP/s of ``torch.matmul`` over BERT-sized GEMMs in ``dtype`` with ``threads`` threads: the
    ceiling a model's FLOP utilisation is measured against (measured, not a datasheet figure)."""
    import torch

    torch.set_num_threads(threads)
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    best = 0.0
    for m, k, n in PEAK_SHAPES:
        a, b = torch.randn(m, k, dtype=torch_dtype), torch.randn(k, n, dtype=torch_dtype)
        torch.matmul(a, b)  # warm-up (oneDNN/MKL kernel selection)
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.matmul(a, b)
            best = max(best, 2 * m * k * n / (time.perf_counter() - t0) / 1e9)
    return best


def model_dims(model_dir: str | Path) -> dict[str, int]:
    """Hidden size, feed-forward size and layer count of a BERT/DistilBERT-like config."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model_dir)
    return {
        "d": getattr(c, "hidden_size", None) or c.dim,
        "ff": getattr(c, "intermediate_size", None) or c.hidden_dim,
        "layers": getattr(c, "num_hidden_layers", None) or c.n_layers,
    }


def window_flops(length: int, d: int, ff: int, layers: int) -> float:
    """Matmul FLOPs of one encoder pass over ``length`` real tokens (Q/K/V/O, attention, FFN, span head).

    Example: DistilBERT-base (768, 3072, 6 layers) at 384 tokens -> about 4.2e10.
    """
    per_layer = 2 * length * (4 * d * d + 2 * d * ff) + 4 * length * length * d
    return layers * per_layer + 2 * length * d * 2


def useful_flops(model_dir: str | Path, eval_set: EvalSet, config) -> float:
    """FLOPs of every window of the questions at its real (unpadded) length: the same work for every
    variant, so utilisation compares paths, not padding strategies."""
    from transformers import AutoTokenizer

    from qa_serving.core.windowing import prepare_features

    tokenizer = AutoTokenizer.from_pretrained(model_dir, use_fast=True)
    features = prepare_features(tokenizer, eval_set.questions, eval_set.contexts, config)
    dims = model_dims(model_dir)
    return float(sum(window_flops(int(n), **dims) for n in features.lengths))


TORCH_PATH_SHAPES = {"b8": (8, 128), "b1": (1, 128)}  # (batch, tokens): small, so a busy machine copes


def torch_paths(
    model_dir: str | Path, threads: int, rounds: int = 3, compile_: bool = True, one_thread: bool = False
) -> list[dict[str, Any]]:
    """Forward-pass time of the torch options the issue names, on fixed shapes (:data:`TORCH_PATH_SHAPES`),
    rounds interleaved: SDPA vs eager attention, inference_mode vs no_grad, torch.compile (``dynamic=False``,
    the shape a bucket pads to) vs not, optionally 1 vs N threads; fp32 and bf16. Returns rows with ms per
    pass and the speed-up over the plain (SDPA, inference_mode) path of the same precision; compile rows
    also report the compile seconds per shape."""
    import torch
    from transformers import AutoModelForQuestionAnswering

    shapes = TORCH_PATH_SHAPES
    feeds = {
        name: {
            "input_ids": torch.randint(1000, 2000, (b, n)),
            "attention_mask": torch.ones(b, n, dtype=torch.long),
        }
        for name, (b, n) in shapes.items()
    }
    paths: dict[str, Any] = {}
    compile_s: dict[str, float] = {}
    for dtype, torch_dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        for attn in ("sdpa", "eager"):
            model = AutoModelForQuestionAnswering.from_pretrained(model_dir, attn_implementation=attn)
            paths[f"{dtype} {attn}"] = (model.to(torch_dtype).eval(), "inference_mode", threads)
        base = paths[f"{dtype} sdpa"][0]
        paths[f"{dtype} sdpa, no_grad"] = (base, "no_grad", threads)
        if threads > 1 and one_thread:
            paths[f"{dtype} sdpa, 1 thread"] = (base, "inference_mode", 1)
        if compile_:
            import torch._dynamo
            import torch._inductor.config

            torch._dynamo.config.cache_size_limit = 64
            torch._inductor.config.freezing = True  # constant weights: oneDNN-packed linears (CPU)
            compiled = torch.compile(base, dynamic=False)
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            with torch.inference_mode():
                for feed in feeds.values():
                    compiled(**feed)
            compile_s[f"{dtype} sdpa + torch.compile"] = (time.perf_counter() - t0) / len(feeds)
            paths[f"{dtype} sdpa + torch.compile"] = (compiled, "inference_mode", threads)
    times: dict[tuple[str, str], list[float]] = {(p, s): [] for p in paths for s in shapes}
    for _ in range(rounds):
        for name, (model, mode, n_threads) in paths.items():
            torch.set_num_threads(n_threads)
            ctx = torch.inference_mode if mode == "inference_mode" else torch.no_grad
            for shape, feed in feeds.items():
                with ctx():
                    model(**feed)  # a warm-up pass per round: thread pools after a thread-count change
                    t0 = time.perf_counter()
                    model(**feed)
                    times[(name, shape)].append(time.perf_counter() - t0)
    torch.set_num_threads(threads)
    rows = []
    for name in paths:
        row: dict[str, Any] = {"path": name, "compile_s": compile_s.get(name)}
        for shape in shapes:
            ms = 1000 * sorted(times[(name, shape)])[len(times[(name, shape)]) // 2]
            ref = times[(f"{name.split()[0]} sdpa", shape)]
            row[f"ms_{shape}"] = ms
            row[f"x_{shape}"] = 1000 * sorted(ref)[len(ref) // 2] / ms
        rows.append(row)
    return rows


def torch_paths_columns() -> list[Column]:
    cols = [Column("path", "torch path (precision, attention, mode)", align="left")]
    for name, (b, n) in TORCH_PATH_SHAPES.items():
        cols += [
            Column(f"ms_{name}", f"ms/pass {b}x{n}", ".1f"),
            Column(f"x_{name}", f"x plain {b}x{n}", ".2f"),
        ]
    return cols + [Column("compile_s", "compile s/shape", lambda v: "—" if v is None else f"{v:.0f}")]


# --- one variant (runs in its own process) ------------------------------------------------------------


def load_variant(
    variant: Variant,
    model_dir: Path,
    onnx_dirs: dict[str, Path],
    device: str,
    threads: int,
    ov_dirs: dict[str, Path] | None = None,
):
    """The pipeline object of ``variant`` (and the device it actually runs on)."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, pipeline

    import qa_serving  # noqa: F401  (registers custom-qa)

    if variant.backend == "openvino":
        from optimum.intel import OVModelForQuestionAnswering

        from qa_serving.core.backends import load_openvino_model

        folder = (ov_dirs or {})[variant.onnx]
        tokenizer = AutoTokenizer.from_pretrained(folder, use_fast=True)
        if variant.pipeline == "question-answering":
            # As Optimum-Intel's docs show it: load the OpenVINO model, hand it to the stock pipeline.
            model = OVModelForQuestionAnswering.from_pretrained(folder)
            return pipeline("question-answering", model=model, tokenizer=tokenizer), "cpu"
        model = load_openvino_model(folder, dtype=variant.dtype, threads=threads)
        return pipeline("custom-qa", model=model, tokenizer=tokenizer), "cpu"

    if variant.backend == "onnx":
        import onnxruntime

        from qa_serving.core.backends import load_onnx_model

        # Dynamic int8 has CPU kernels only; fp32/O2 use CUDA when onnxruntime-gpu is there.
        cuda_ok = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        ort_device = device if device.startswith("cuda") and cuda_ok and variant.onnx != "int8" else "cpu"
        folder = onnx_dirs[variant.onnx]
        tokenizer = AutoTokenizer.from_pretrained(folder, use_fast=True)
        model = load_onnx_model(folder, device=ort_device, threads=threads)
        return pipeline("custom-qa", model=model, tokenizer=tokenizer), ort_device
    tokenizer = AutoTokenizer.from_pretrained(model_dir, use_fast=True)
    model = AutoModelForQuestionAnswering.from_pretrained(model_dir).eval()
    if variant.dtype == "bf16":
        import torch

        model = model.to(torch.bfloat16)
    torch_device = device if device.startswith("cuda") else -1
    qa = pipeline(variant.pipeline, model=model, tokenizer=tokenizer, device=torch_device)
    if variant.compile:
        from qa_serving.core.backends import make_backend

        qa.backend = make_backend(qa.model, dtype=None, compile=True)
    return qa, device


def _texts(out: Any) -> list[str]:
    out = out if isinstance(out, list) else [out]
    return [o["answer"] for o in out]


class VariantRunner:
    """One variant, loaded and warmed up, answering measurement commands (see :meth:`handle`)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import onnxruntime  # noqa: F401  (imported before the baseline: every variant may need it)
        import optimum.onnxruntime

        try:
            import optimum.intel  # noqa: F401
        except ImportError:  # the OpenVINO variants then fail with their own message
            pass
        import torch
        import transformers  # noqa: F401

        import qa_serving  # noqa: F401

        self.rss_imports = peak_rss_mib()
        torch.set_num_threads(spec["threads"])
        self.variant = BY_KEY[spec["variant"]]
        eval_set = EvalSet.from_json(spec["eval_json"])
        self.qs, self.cs = eval_set.questions, eval_set.contexts
        onnx_dirs = {k: Path(v) for k, v in spec["onnx_dirs"].items()}
        ov_dirs = {k: Path(v) for k, v in spec.get("ov_dirs", {}).items()}
        started = time.perf_counter()
        self.qa, self.device = load_variant(
            self.variant, Path(spec["model_dir"]), onnx_dirs, spec["device"], spec["threads"], ov_dirs
        )
        self.load_s = time.perf_counter() - started
        # Warm up: a few single questions and one batched call (allocators, ORT arenas, thread pools).
        for q, c in zip(self.qs[: spec["warmup"]], self.cs[: spec["warmup"]]):
            self.qa(question=q, context=c, batch_size=1, **SETTINGS)
        self.qa(question=self.qs[:16], context=self.cs[:16], batch_size=16, **SETTINGS)
        if self.variant.compile:
            self._compile_buckets()
        self.warm_s = time.perf_counter() - started - self.load_s

    def _compile_buckets(self) -> None:
        """Compile every (batch, bucket) shape the timed calls can meet, before timing: batch 1 and 16
        at each bucket <= max_seq_len (the last batch of a chunk may be smaller and still compile once)."""
        import numpy as np

        from qa_serving.core.backends import SEQ_BUCKETS

        for bs in (1, 16):
            for n in (b for b in SEQ_BUCKETS if b <= SETTINGS["max_seq_len"]):
                ids = np.full((bs, n), 1000, dtype=np.int64)
                self.qa.backend(
                    {
                        "input_ids": ids,
                        "attention_mask": np.ones_like(ids),
                        "token_type_ids": np.zeros_like(ids),
                    }
                )

    def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """``{"cmd": "b1", "lo", "hi"}``: one call per question, latencies and answers;
        ``{"cmd": "batch", "bs", "lo", "hi"}``: one call for the slice, its seconds and answers;
        ``{"cmd": "finish"}``: peak memory and load time."""
        if cmd["cmd"] == "b1":
            latencies, answers = [], []
            for q, c in zip(self.qs[cmd["lo"] : cmd["hi"]], self.cs[cmd["lo"] : cmd["hi"]]):
                t0 = time.perf_counter()
                out = self.qa(question=q, context=c, batch_size=1, **SETTINGS)
                latencies.append(time.perf_counter() - t0)
                answers.extend(_texts(out))
            return {"latencies": latencies, "answers": answers}
        if cmd["cmd"] == "batch":
            qs, cs = self.qs[cmd["lo"] : cmd["hi"]], self.cs[cmd["lo"] : cmd["hi"]]
            t0 = time.perf_counter()
            out = self.qa(question=qs, context=cs, batch_size=cmd["bs"], **SETTINGS)
            return {"seconds": time.perf_counter() - t0, "answers": _texts(out)}
        if cmd["cmd"] == "finish":
            peak = peak_rss_mib()
            return {
                "device": self.device,
                "load_s": self.load_s,
                "rss_imports_mib": self.rss_imports,
                "rss_peak_mib": peak,
                "rss_model_mib": peak - self.rss_imports,
                "warm_s": self.warm_s,
            }
        raise ValueError(f"unknown command {cmd!r}")


def _worker_main(spec_path: str) -> None:
    """A variant in its own process: JSON commands on stdin, one JSON reply per line on stdout."""
    replies = sys.stdout
    sys.stdout = sys.stderr  # stray prints of libraries must not mix with the replies
    runner = VariantRunner(json.loads(Path(spec_path).read_text()))
    replies.write(json.dumps({"ready": True}) + "\n")
    replies.flush()
    for line in sys.stdin:
        cmd = json.loads(line)
        replies.write(json.dumps(runner.handle(cmd)) + "\n")
        replies.flush()
        if cmd["cmd"] == "finish":
            break


class LocalWorker:
    """:class:`VariantRunner` in this process (``--in-process``: peak memory is then shared)."""

    def __init__(self, spec: dict[str, Any], tmp: Path) -> None:
        self.runner = VariantRunner(spec)

    def call(self, cmd: dict[str, Any]) -> dict[str, Any]:
        return self.runner.handle(cmd)

    def close(self) -> None:
        self.runner = None


class SubprocessWorker:
    """:class:`VariantRunner` in a fresh Python process, so its ``ru_maxrss`` is the variant's own."""

    def __init__(self, spec: dict[str, Any], tmp: Path) -> None:
        spec_path = tmp / f"spec-{spec['variant']}.json"
        spec_path.write_text(json.dumps(spec))
        self.name = spec["variant"]
        self.stderr_path = tmp / f"stderr-{spec['variant']}.txt"
        code = "import sys; from bench.inference import _worker_main; _worker_main(sys.argv[1])"
        with open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code, str(spec_path)],
                cwd=Path(__file__).resolve().parent.parent,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        self._read()  # {"ready": true} once loaded and warmed up

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=30)
            tail = self.stderr_path.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"variant {self.name} died (exit {self.proc.returncode}):\n{tail}")
        return json.loads(line)

    def call(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def measure_interleaved(
    workers: dict[str, Any], n: int, batch_sizes: list[int], chunk: int, log=lambda msg: None
) -> list[dict[str, Any]]:
    """Run every variant over the questions in chunks, variant after variant within each chunk (the order
    rotating from chunk to chunk), so that load from other jobs on a shared machine hits every variant
    alike. Returns one result dict per variant (the figures :func:`build_rows` reads)."""
    keys = list(workers)
    acc = {
        k: {"lat": [], "b1": [], "sec": dict.fromkeys(batch_sizes, 0.0), "ans": {b: [] for b in batch_sizes}}
        for k in keys
    }
    slices = [(lo, min(lo + chunk, n)) for lo in range(0, n, chunk)]
    for r, (lo, hi) in enumerate(slices):
        order = keys[r % len(keys) :] + keys[: r % len(keys)]
        log(f"questions {lo}-{hi}: {', '.join(order)}")
        for key in order:
            if 1 in batch_sizes:
                out = workers[key].call({"cmd": "b1", "lo": lo, "hi": hi})
                acc[key]["lat"] += out["latencies"]
                acc[key]["b1"] += out["answers"]
            for bs in (b for b in batch_sizes if b != 1):
                out = workers[key].call({"cmd": "batch", "bs": bs, "lo": lo, "hi": hi})
                acc[key]["sec"][bs] += out["seconds"]
                acc[key]["ans"][bs] += out["answers"]
    results = []
    for key in keys:
        a = acc[key]
        result: dict[str, Any] = {"variant": key, **workers[key].call({"cmd": "finish"})}
        answers = a["b1"]
        if 1 in batch_sizes:
            result["qps_b1"] = n / sum(a["lat"])
            result.update({f"{k}_b1": v for k, v in latency_summary(a["lat"]).items()})
        for bs in (b for b in batch_sizes if b != 1):
            result[f"qps_b{bs}"] = n / a["sec"][bs]
            answers = answers or a["ans"][bs]
            result[f"same_answers_b{bs}"] = sum(x == y for x, y in zip(a["ans"][bs], answers)) / n
        result["answers"] = answers
        results.append(result)
    return results


# --- the run ------------------------------------------------------------------------------------------


def _ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value and base else None


def build_rows(
    results: list[dict[str, Any]],
    batch_sizes: list[int],
    flops_per_question: float | None = None,
    peaks: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Table rows: each variant's figures plus ratios vs the stock pipeline, F1 vs custom-qa PyTorch and
    vs the stock fp32 pipeline, and FLOP utilisation of its precision's measured matmul peak (GFLOP/s)."""
    by_key = {r["variant"]: r for r in results}
    stock, torch_row = by_key.get("stock"), by_key.get("torch")
    rows = []
    for r in results:
        variant = BY_KEY[r["variant"]]
        row = {**r, "label": variant.label, "precision": variant.precision}
        for bs in batch_sizes:
            row[f"x_stock_b{bs}"] = _ratio(r.get(f"qps_b{bs}"), stock.get(f"qps_b{bs}") if stock else None)
            peak = (peaks or {}).get(variant.precision)
            if flops_per_question and peak and r.get(f"qps_b{bs}"):
                row[f"util_b{bs}"] = r[f"qps_b{bs}"] * flops_per_question / 1e9 / peak
        row["f1_drop"] = torch_row["f1"] - r["f1"] if torch_row else None
        row["f1_drop_stock"] = stock["f1"] - r["f1"] if stock else None
        row["same_spans"] = (
            sum(a == b for a, b in zip(r["answers"], torch_row["answers"])) / len(r["answers"])
            if torch_row
            else None
        )
        rows.append(row)
    return rows


def columns(batch_sizes: list[int]) -> list[Column]:
    cols = [Column("label", "variant", align="left"), Column("device", "device", align="left")]
    for bs in batch_sizes:
        cols.append(Column(f"qps_b{bs}", f"q/s b{bs}", ".1f"))
        if bs == 1:
            cols += [Column("p50_ms_b1", "p50 ms b1", ".0f"), Column("p95_ms_b1", "p95 ms b1", ".0f")]
        cols.append(Column(f"x_stock_b{bs}", f"x stock b{bs}", ".2f"))
        cols.append(
            Column(f"util_b{bs}", f"FLOP util b{bs}", lambda v: "—" if v is None else f"{100 * v:.0f}%")
        )
    cols.insert(1, Column("precision", "precision", align="left"))
    cols += [
        Column("rss_peak_mib", "peak RSS MiB", ".0f"),
        Column("rss_model_mib", "model+run MiB", ".0f"),
        Column("exact", "EM", ".1f"),
        Column("f1", "F1", ".1f"),
        Column("f1_drop", "F1 drop vs torch", "+.2f"),
        Column("f1_drop_stock", "F1 drop vs stock fp32", "+.2f"),
        Column("same_spans", "same answer as torch", lambda v: f"{100 * v:.1f}%"),
    ]
    return cols


def targets(rows: list[dict[str, Any]], batch_sizes: list[int], quality: bool) -> list[str]:
    """One line per target of the issue: met / not met, with the numbers behind it."""
    by_key = {r["variant"]: r for r in rows}
    lines = []

    def best(keys, bs):
        vals = [(by_key[k][f"x_stock_b{bs}"], BY_KEY[k].label) for k in keys if k in by_key]
        vals = [v for v in vals if v[0] is not None]
        return max(vals) if vals else None

    for bs in batch_sizes:
        onnx = best(("onnx-fp32", "onnx-o2"), bs)
        if onnx:
            verdict = "met" if onnx[0] >= TARGET_ONNX else "NOT met"
            lines.append(
                f"- custom-qa ONNX >= {TARGET_ONNX:g}x stock q/s at batch {bs}: **{verdict}** "
                f"(best {onnx[1]}: {onnx[0]:.2f}x)"
            )
        int8 = by_key.get("onnx-int8", {}).get(f"x_stock_b{bs}")
        if int8 is not None:
            verdict = "met" if int8 >= TARGET_INT8 else "NOT met"
            lines.append(
                f"- ONNX int8 >= {TARGET_INT8:g}x stock q/s at batch {bs}: **{verdict}** ({int8:.2f}x)"
            )
    for bs in batch_sizes:
        bf16 = {k: by_key.get(k, {}).get(f"x_stock_b{bs}") for k in ("torch-bf16", "stock-bf16")}
        if bf16["torch-bf16"] is not None:
            stock_bf16 = (
                ""
                if bf16["stock-bf16"] is None
                else f"; the stock pipeline in bf16: {bf16['stock-bf16']:.2f}x"
            )
            lines.append(
                f"- (no target) custom-qa PyTorch bf16 at batch {bs}: {bf16['torch-bf16']:.2f}x stock fp32 q/s"
                + stock_bf16
            )
    drop = by_key.get("onnx-int8", {}).get("f1_drop")
    if drop is not None:
        if quality:
            verdict = "met" if drop <= TARGET_F1_DROP else "NOT met"
            lines.append(f"- int8 F1 drop <= {TARGET_F1_DROP:g} point: **{verdict}** ({drop:+.2f})")
        else:
            lines.append(
                f"- int8 F1 drop <= {TARGET_F1_DROP:g} point: **not assessed** (random weights; "
                "run with --model DIR of a trained model)"
            )
    return lines


TARGET_X_STOCK, TARGET_X_OPTIMUM_INTEL, TARGET_UTIL_BF16, TARGET_F1_DROP_STOCK = 8.0, 1.5, 0.5, 0.5


def hardware_targets(rows: list[dict[str, Any]], batch_sizes: list[int], quality: bool) -> list[str]:
    """Issue 14's targets: the best custom-qa path (F1 drop <= 0.5 vs stock fp32 where the weights are
    trained) >= 8x the stock fp32 pipeline and >= 1.5x the Optimum-Intel pipeline; bf16 FLOP
    utilisation >= 50% (stated for a DistilBERT-sized model at batch 16); batch-1 p50 per path."""
    by_key = {r["variant"]: r for r in rows}
    lines = []
    ok_quality = [
        r
        for r in rows
        if BY_KEY[r["variant"]].pipeline == "custom-qa"
        and (
            not quality or (r.get("f1_drop_stock") is not None and r["f1_drop_stock"] <= TARGET_F1_DROP_STOCK)
        )
    ]
    gate = (
        f"F1 drop <= {TARGET_F1_DROP_STOCK:g} vs stock fp32"
        if quality
        else "random weights: F1 gate not assessed"
    )
    oi = by_key.get("optimum-intel")
    for bs in batch_sizes:
        scored = [r for r in ok_quality if r.get(f"x_stock_b{bs}")]
        if not scored:
            continue
        best = max(scored, key=lambda r: r[f"x_stock_b{bs}"])
        verdict = "met" if best[f"x_stock_b{bs}"] >= TARGET_X_STOCK else "NOT met"
        lines.append(
            f"- best custom-qa path >= {TARGET_X_STOCK:g}x stock fp32 at batch {bs} ({gate}): **{verdict}** "
            f"({best['label']}: {best[f'x_stock_b{bs}']:.2f}x)"
        )
        if oi and oi.get(f"qps_b{bs}"):
            x = best[f"qps_b{bs}"] / oi[f"qps_b{bs}"]
            verdict = "met" if x >= TARGET_X_OPTIMUM_INTEL else "NOT met"
            lines.append(
                f"- best custom-qa path >= {TARGET_X_OPTIMUM_INTEL:g}x the Optimum-Intel pipeline at batch {bs}: "
                f"**{verdict}** ({x:.2f}x)"
            )
    for bs in batch_sizes:
        bf16 = [
            r
            for r in rows
            if r.get("precision") == "bf16"
            and r.get(f"util_b{bs}") is not None
            and BY_KEY[r["variant"]].pipeline == "custom-qa"
        ]
        if bf16:
            best = max(bf16, key=lambda r: r[f"util_b{bs}"])
            verdict = "met" if best[f"util_b{bs}"] >= TARGET_UTIL_BF16 else "NOT met"
            lines.append(
                f"- bf16 FLOP utilisation >= {100 * TARGET_UTIL_BF16:.0f}% of the measured bf16 matmul peak at "
                f"batch {bs}: **{verdict}** ({best['label']}: {100 * best[f'util_b{bs}']:.0f}%)"
            )
    if 1 in batch_sizes:
        lines.append("- batch-1 latency p50: reported for every path (column 'p50 ms b1')")
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--model", help="trained model folder (default: random DistilBERT-base, speed only)")
    p.add_argument(
        "--size", default="base", choices=("base", "tiny"), help="size of the random default model"
    )
    p.add_argument("--eval-file", help="SQuAD-format file (default: eval articles of squad-v1.1-dev.part-a)")
    p.add_argument("--n", type=int, default=250, help="questions (the first N answerable ones)")
    p.add_argument("--long-share", type=float, default=0.25, help="share of questions given a long context")
    p.add_argument("--batch-sizes", default="1,16", help="comma-separated; 1 = one call per question")
    p.add_argument("--threads", type=int, default=available_cpus(), help="torch and ONNX Runtime threads")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (int8 always runs on CPU)")
    p.add_argument("--variants", default=",".join(v.key for v in VARIANTS), help="subset of the variants")
    p.add_argument("--warmup", type=int, default=3, help="single-question calls before timing")
    p.add_argument(
        "--chunk", type=int, default=25, help="questions per round (variants take turns on each chunk)"
    )
    p.add_argument("--in-process", action="store_true", help="no subprocess per variant (peak RSS is shared)")
    p.add_argument("--name", default="inference", help="report name: RESULTS_DIR/NAME.md and NAME-*.png")
    p.add_argument("--results-dir", default=str(RESULTS_DIR))
    p.add_argument("--cache-dir", default=str(CACHE_DIR), help="generated models and ONNX exports")
    p.add_argument("--quick", action="store_true", help="24 questions, smoke-sized")
    p.add_argument("--plot", help="also save the questions/s plot here (e.g. docs/hardware-throughput.png)")
    p.add_argument(
        "--combine", nargs="+", help="no run: plot the rows of earlier runs' NAME.json files into --plot"
    )
    p.add_argument("--torch-paths", action="store_true", help="also time the torch options on fixed shapes")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.chunk = min(args.n, 24), min(args.chunk, 12)
    return args


def openvino_variants(model_dir: Path, out_dir: Path, eval_file: str | None = None) -> dict[str, Path]:
    """OpenVINO IR fp32, int8-weights and int8 folders of ``model_dir`` (``export/openvino.py``), cached.

    Full int8 is calibrated on windows of the training articles' questions (never the evaluated ones)."""
    marker = out_dir / "bench_export.json"
    source = str(model_dir.resolve())
    expected = {"fp32": out_dir, "int8-weights": out_dir / "int8-weights", "int8": out_dir / "int8"}
    if marker.is_file() and json.loads(marker.read_text()).get("source") == source:
        return expected
    try:
        from qa_serving.export.openvino import export_openvino
    except ImportError:  # before the export package moved under qa_serving
        from export.openvino import export_openvino
    from qa_serving.data.loading import load_examples, split_by_article

    data = load_examples(str(eval_file or default_eval_file()))
    train, _ = split_by_article(data, eval_fraction=0.2, seed=0)
    n = min(128, len(train))
    calibration = (list(train["question"][:n]), list(train["context"][:n]))
    result = export_openvino(
        model_dir=model_dir,
        output_dir=out_dir,
        quantize=("int8-weights", "int8"),
        calibration=calibration,
        overwrite=True,
    )
    marker.write_text(json.dumps({"source": source}) + "\n")
    return result.variants()


def combine_plot(json_paths: list[str], out: str | Path) -> Path:
    """One questions/s bar plot of several runs (e.g. MiniLM and DistilBERT), batch 16 and batch 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [json.loads(Path(p).read_text()) for p in json_paths]
    fig, axes = plt.subplots(len(runs), 1, figsize=(11, 4.2 * len(runs)), squeeze=False)
    for ax, run in zip(axes[:, 0], runs):
        rows = run["rows"]
        labels = [
            r["label"].split(" (its defaults")[0].replace('pipeline("question-answering")', "stock pipeline")
            for r in rows
        ]
        keys = sorted({k for r in rows for k in r if k.startswith("qps_b")}, key=lambda k: int(k[5:]))
        width = 0.8 / max(1, len(keys))
        for j, key in enumerate(keys):
            ax.barh(
                [i + j * width for i in range(len(rows))],
                [r.get(key) or 0 for r in rows],
                width,
                label=f"batch {key[5:]}",
            )
        ax.set_yticks([i + width * (len(keys) - 1) / 2 for i in range(len(rows))], labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("questions / second")
        ax.set_title(run["model"], fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; prints and writes the report, returns ``{"markdown", "rows", "path"}``."""
    args = parse_args(argv)
    if args.combine:
        return {"path": combine_plot(args.combine, args.plot or "inference-combined.png")}
    started = time.perf_counter()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    keys = [k.strip() for k in args.variants.split(",") if k.strip()]
    unknown = set(keys) - set(BY_KEY)
    if unknown:
        raise SystemExit(f"unknown variant(s) {sorted(unknown)}; choose from {sorted(BY_KEY)}")
    info = machine_info()
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    cache = Path(args.cache_dir)
    model_dir = Path(args.model) if args.model else random_distilbert(args.size, cache)
    quality = not is_random_model(model_dir)
    onnx_dirs: dict[str, Path] = {}
    export_s = 0.0
    if any(BY_KEY[k].backend == "onnx" for k in keys):
        t0 = time.perf_counter()
        onnx_dirs = export_variants(model_dir, cache / "onnx" / cache_name(model_dir), device="cpu")
        export_s = time.perf_counter() - t0
    ov_dirs: dict[str, Path] = {}
    if any(BY_KEY[k].backend == "openvino" for k in keys):
        t0 = time.perf_counter()
        ov_dirs = openvino_variants(model_dir, cache / "openvino" / cache_name(model_dir), args.eval_file)
        export_s += time.perf_counter() - t0

    eval_set = load_eval_set(args.eval_file, args.n, long_share=args.long_share)
    from transformers import AutoTokenizer

    from qa_serving.core.config import QAConfig

    config = QAConfig(max_length=384, doc_stride=128, max_question_len=64, max_answer_len=30)
    stats = window_stats(AutoTokenizer.from_pretrained(model_dir, use_fast=True), eval_set, config)
    flops_per_question = useful_flops(model_dir, eval_set, config) / len(eval_set)
    peak_runs = [{d: matmul_peak(args.threads, d) for d in ("fp32", "bf16")}]

    def log(msg: str) -> None:
        print(f"[bench.inference] {msg}", file=sys.stderr, flush=True)
        if msg.startswith("questions "):  # each round also re-measures the peak (the workers are idle)
            peak_runs.append({d: matmul_peak(args.threads, d, repeats=2) for d in ("fp32", "bf16")})

    worker_cls = LocalWorker if args.in_process else SubprocessWorker
    workers: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="qa-bench-") as tmp:
        eval_json = eval_set.to_json(Path(tmp) / "eval.json")
        try:
            for key in keys:  # loaded one after the other; all stay loaded for the interleaved rounds
                log(f"loading {BY_KEY[key].label} ...")
                spec = {
                    "variant": key,
                    "model_dir": str(model_dir),
                    "onnx_dirs": {k: str(v) for k, v in onnx_dirs.items()},
                    "eval_json": str(eval_json),
                    "threads": args.threads,
                    "device": device,
                    "warmup": args.warmup,
                    "ov_dirs": {k: str(v) for k, v in ov_dirs.items()},
                }
                workers[key] = worker_cls(spec, Path(tmp))
            results = measure_interleaved(workers, len(eval_set), batch_sizes, args.chunk, log)
        finally:
            for worker in workers.values():
                worker.close()
    for result in results:
        result["exact"], result["f1"] = score(eval_set, result["answers"])
    peak_runs.append({d: matmul_peak(args.threads, d) for d in ("fp32", "bf16")})
    # The higher of the two measurements: other jobs on a shared machine only ever lower a peak.
    peaks = {d: max(run[d] for run in peak_runs) for d in ("fp32", "bf16")}

    rows = build_rows(results, batch_sizes, flops_per_question, peaks)
    table = markdown_table(rows, columns(batch_sizes))
    wall = time.perf_counter() - started
    what = (
        f"Model: {model_label(model_dir)}. Data: {eval_set.source}; {len(eval_set)} questions, "
        f"{stats['windows']} windows ({stats['windows_per_question']:.2f} per question, "
        f"{100 * stats['multi_window_share']:.0f}% of questions need more than one, at most "
        f"{stats['max_windows']}); {'; '.join(eval_set.notes)}.\n"
        f"Settings for every variant: {', '.join(f'{k}={v}' for k, v in SETTINGS.items())}, top_k=1; "
        f"{args.threads} torch / ONNX Runtime intra-op threads; device {device}. "
        f"Variants take turns on chunks of {args.chunk} questions (order rotating). "
        "b1 = one call per question (batch_size=1); bN (N > 1) = one call per chunk with batch_size=N "
        "(windows per forward pass, both pipelines). Latency = wall time of one call, tokenization and "
        "postprocessing included, after warm-up. Peak RSS = ru_maxrss of a fresh process per variant"
        + (" (all variants shared one process: --in-process)" if args.in_process else "")
        + "; model+run = peak minus the peak after imports. EM/F1: SQuAD v1.1, batch-1 answers"
        + ("" if quality else " (random weights: meaningless, shown to prove every variant ran)")
        + f". 'same answer as torch' = share of questions answered with the same text as custom-qa PyTorch.\n"
        f"ONNX export (fp32 + O2 + int8, cached): {export_s:.0f} s. Whole run: {wall:.0f} s."
    )
    goals = targets(rows, batch_sizes, quality) + hardware_targets(rows, batch_sizes, quality)
    peak_text = (
        f"Measured matmul peak ({args.threads} threads, torch.matmul on BERT-sized GEMMs, measured before, "
        f"between the rounds and after the measurements; the best of {len(peak_runs)} is kept, since other "
        f"jobs only ever lower it; fp32 ranged {min(r['fp32'] for r in peak_runs):.0f}-{peaks['fp32']:.0f}, "
        f"bf16 {min(r['bf16'] for r in peak_runs):.0f}-{peaks['bf16']:.0f} GFLOP/s): "
        f"fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s "
        f"({peaks['bf16'] / peaks['fp32']:.1f}x). Model work: {flops_per_question / 1e9:.1f} GFLOP per question "
        "(matmuls of every window at its real length). FLOP utilisation = q/s x GFLOP per question / the peak "
        "of the variant's precision (int8: no peak measured, '—')."
    )
    sections = [what, peak_text, table, "Targets (CPU):\n" + "\n".join(goals)]
    if args.torch_paths:
        sections.append(
            "Torch options on fixed shapes (median forward pass, rounds interleaved):\n\n"
            + markdown_table(torch_paths(model_dir, args.threads), torch_paths_columns())
        )
    sections.append(machine_markdown(info))
    results_dir = Path(args.results_dir)
    plot_labels = [r["label"].replace('pipeline("question-answering")', "stock pipeline") for r in rows]
    save_bar_plot(
        results_dir / f"{args.name}-throughput.png",
        plot_labels,
        {f"batch {bs}": [r.get(f"qps_b{bs}") for r in rows] for bs in batch_sizes},
        title=f"questions/s ({model_label(model_dir)}, {len(eval_set)} questions)",
        ylabel="questions / second",
    )
    if 1 in batch_sizes:
        save_bar_plot(
            results_dir / f"{args.name}-latency.png",
            plot_labels,
            {"p50": [r.get("p50_ms_b1") for r in rows], "p95": [r.get("p95_ms_b1") for r in rows]},
            title="latency per question at batch 1",
            ylabel="ms",
        )
    if args.plot:
        save_bar_plot(
            Path(args.plot),
            plot_labels,
            {f"batch {bs}": [r.get(f"qps_b{bs}") for r in rows] for bs in batch_sizes},
            title=f"questions/s ({model_label(model_dir)}, {len(eval_set)} questions)",
            ylabel="questions / second",
        )
    keep = ("variant", "label", "precision", "device", "f1", "exact", "f1_drop_stock", "p50_ms_b1")
    (results_dir / f"{args.name}.json").write_text(
        json.dumps(
            {
                "model": model_label(model_dir),
                "peaks": peaks,
                "rows": [
                    {k: v for k, v in r.items() if k in keep or k.startswith(("qps_", "x_stock_", "util_"))}
                    for r in rows
                ],
            },
            indent=1,
        )
        + "\n"
    )
    path = write_report(args.name, "In-process inference", sections, results_dir)
    markdown = "\n\n".join(sections)
    print(markdown)
    return {"markdown": markdown, "table": table, "rows": rows, "path": path, "seconds": wall}


if __name__ == "__main__":
    main()
