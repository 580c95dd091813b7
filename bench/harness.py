"""The variants of ``bench/inference.py`` and the harness that measures them.

:data:`VARIANTS` (stock ``pipeline("question-answering")`` and ``pipeline("custom-qa")`` on PyTorch, ONNX,
OpenVINO, fp32/bf16/int8, torch.compile) and the settings every variant shares (:data:`SETTINGS`);
:func:`load_variant` builds a variant's pipeline (:func:`openvino_variants` exports the OpenVINO folders it
needs); :class:`VariantRunner` holds one variant loaded and warmed up and answers measurement commands,
either in this process (:class:`LocalWorker`) or in a fresh one (:class:`SubprocessWorker`, so peak memory
is the variant's own); :func:`measure_interleaved` runs every variant over the questions in rotating
chunks, so that load from other jobs on a shared machine hits every variant alike.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import EvalSet, default_eval_file, latency_summary, peak_rss_mib

# --- the variants -------------------------------------------------------------------------------------


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
        code = "import sys; from bench.harness import _worker_main; _worker_main(sys.argv[1])"
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


# --- every variant, interleaved -----------------------------------------------------------------------


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


# --- the OpenVINO folders the variants load -----------------------------------------------------------


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
