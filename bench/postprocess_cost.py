"""Postprocessing cost alone: ours (:mod:`qa_serving.core.postprocess`, one numpy outer sum per window) vs the
reference double loop (Hugging Face ``utils_qa.postprocess_qa_predictions``: a Python loop over
``n_best`` starts x ``n_best`` ends per window), per feature (window), and as a share of the whole
``custom-qa`` path (windowing + forward passes + postprocess) on PyTorch and on ONNX int8.

Both implementations get the same real logits (from the model's forward passes over the eval windows)
and the same context offsets; the loop gets them as the lists it expects (``None`` outside the context),
converted before timing. Each postprocess timing is the median of ``--repeat`` runs; the stage timings of
the path (windowing, forward) come from one run after a warm-up, with feature batch 16.

    python -m bench.postprocess_cost                 # random DistilBERT-base, 250 questions
    python -m bench.postprocess_cost --quick
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # `python bench/postprocess_cost.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    CACHE_DIR,
    RESULTS_DIR,
    Column,
    available_cpus,
    cache_name,
    export_variants,
    load_eval_set,
    machine_info,
    machine_markdown,
    markdown_table,
    model_label,
    random_distilbert,
    save_bar_plot,
    write_report,
)
from bench.reference_postprocess import reference_postprocess

TARGET_SHARE = 0.05


def double_loop_postprocess(
    features: list[tuple[np.ndarray, np.ndarray, list]], context: str, n_best_size: int, max_answer_length: int
) -> str:
    """The reference loop's answer text for one example (SQuAD v1.1: no null answer)."""
    return reference_postprocess(features, context, n_best_size, max_answer_length, False, 0.0)[0]


def loop_inputs(features, starts, ends, offsets, n_examples: int) -> list[list[tuple]]:
    """Per example, its windows as the loop wants them (offset lists with ``None`` outside the context)."""
    from qa_serving.core.windowing import NO_OFFSET

    per_example: list[list[tuple]] = [[] for _ in range(n_examples)]
    for i, ex in enumerate(features.example_index):
        offs = [None if row[0] == NO_OFFSET else (int(row[0]), int(row[1])) for row in offsets[i]]
        per_example[int(ex)].append((np.asarray(starts[i]), np.asarray(ends[i]), offs))
    return per_example


def _median_time(fn, repeat: int) -> tuple[Any, float]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, float(np.median(times))


def load_backend_for(kind: str, model_dir: Path, onnx_dirs: dict[str, Path], threads: int, device: str):
    """A qa_serving backend: ``torch`` (the model folder) or an ONNX variant (``fp32``/``O2``/``int8``);
    int8 always on CPU (dynamic quantization has CPU kernels only)."""
    import onnxruntime

    from qa_serving.core.backends import TorchBackend, load_model, load_onnx_model, make_backend

    if kind == "torch":
        return TorchBackend(load_model(model_dir, backend="torch"), device=device), device
    cuda_ok = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    ort_device = device if device.startswith("cuda") and cuda_ok and kind != "int8" else "cpu"
    return make_backend(load_onnx_model(onnx_dirs[kind], device=ort_device, threads=threads)), ort_device


def measure_backend(kind, backend, tokenizer, eval_set, config, repeat: int) -> dict[str, Any]:
    """Stage times of the custom-qa path on one backend, and both postprocess implementations."""
    from qa_serving.core.answering import answers_from_logits, window_logits
    from qa_serving.core.windowing import prepare_features

    qs, cs = eval_set.questions, eval_set.contexts
    # Warm-up on a few questions (allocators, thread pools, ORT arenas).
    warm = prepare_features(tokenizer, qs[:8], cs[:8], config)
    window_logits(backend, warm, config)

    t0 = time.perf_counter()
    features = prepare_features(tokenizer, qs, cs, config)
    t1 = time.perf_counter()
    starts, ends = window_logits(backend, features, config)
    t2 = time.perf_counter()
    ours, post_s = _median_time(lambda: answers_from_logits(features, starts, ends, cs, config), repeat)
    offsets = features.word_offsets if config.align_to_words else features.offsets
    per_example = loop_inputs(features, starts, ends, offsets, len(qs))
    loop_answers, loop_s = _median_time(
        lambda: [
            double_loop_postprocess(f, c, config.n_best_size, config.max_answer_len)
            for f, c in zip(per_example, cs)
        ],
        repeat,
    )
    same = sum(p.text == a for p, a in zip(ours, loop_answers)) / len(qs)
    window_s, forward_s = t1 - t0, t2 - t1
    return {
        "backend": kind,
        "features": len(features),
        "questions": len(qs),
        "windowing_ms": 1000 * window_s,
        "forward_ms": 1000 * forward_s,
        "ours_ms": 1000 * post_s,
        "loop_ms": 1000 * loop_s,
        "same_answers": same,
        "ours_share": post_s / (window_s + forward_s + post_s),
        "loop_share": loop_s / (window_s + forward_s + loop_s),
        "total_ours_ms_per_q": 1000 * (window_s + forward_s + post_s) / len(qs),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model folder (default: random DistilBERT-base)")
    p.add_argument(
        "--size", default="base", choices=("base", "tiny"), help="size of the random default model"
    )
    p.add_argument("--eval-file", help="SQuAD-format file (default: eval articles of squad-v1.1-dev.part-a)")
    p.add_argument("--n", type=int, default=250, help="questions")
    p.add_argument("--long-share", type=float, default=0.25, help="share of questions given a long context")
    p.add_argument("--backends", default="torch,int8", help="torch and/or ONNX variants fp32, O2, int8")
    p.add_argument("--threads", type=int, default=available_cpus(), help="torch and ONNX Runtime threads")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (int8 always runs on CPU)")
    p.add_argument("--batch-size", type=int, default=16, help="windows per forward pass")
    p.add_argument("--repeat", type=int, default=5, help="postprocess timings: median of this many runs")
    p.add_argument("--name", default="postprocess_cost")
    p.add_argument("--results-dir", default=str(RESULTS_DIR))
    p.add_argument("--cache-dir", default=str(CACHE_DIR))
    p.add_argument("--quick", action="store_true", help="24 questions, 2 repeats")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.repeat = min(args.n, 24), min(args.repeat, 2)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; prints and writes the report, returns ``{"markdown", "rows", "path"}``."""
    args = parse_args(argv)
    started = time.perf_counter()
    import torch
    from transformers import AutoTokenizer

    from qa_serving.core.config import QAConfig

    info = machine_info()
    torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    cache = Path(args.cache_dir)
    model_dir = Path(args.model) if args.model else random_distilbert(args.size, cache)
    kinds = [k.strip() for k in args.backends.split(",") if k.strip()]
    onnx_dirs = {}
    if any(k != "torch" for k in kinds):
        onnx_dirs = export_variants(model_dir, cache / "onnx" / cache_name(model_dir))
    eval_set = load_eval_set(args.eval_file, args.n, long_share=args.long_share)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, use_fast=True)
    config = QAConfig.from_model_dir(model_dir).replace(
        max_length=384, doc_stride=128, max_question_len=64, max_answer_len=30, batch_size=args.batch_size
    )
    rows = []
    for kind in kinds:
        print(f"[bench.postprocess_cost] {kind} ...", file=sys.stderr, flush=True)
        backend, where = load_backend_for(kind, model_dir, onnx_dirs, args.threads, device)
        rows.append(
            {**measure_backend(kind, backend, tokenizer, eval_set, config, args.repeat), "device": where}
        )
        del backend

    # Per-feature cost does not depend on the backend (same windows); the first run's figures stand for it.
    first = rows[0]
    n_feat, n_q = first["features"], first["questions"]
    per_feature = [
        {
            "impl": "ours: numpy outer sum per window (qa_serving.core.postprocess)",
            "total_ms": first["ours_ms"],
            "us_per_feature": 1000 * first["ours_ms"] / n_feat,
            "us_per_question": 1000 * first["ours_ms"] / n_q,
            "speedup": first["loop_ms"] / first["ours_ms"],
            "same": first["same_answers"],
        },
        {
            "impl": "reference double loop (utils_qa.postprocess_qa_predictions)",
            "total_ms": first["loop_ms"],
            "us_per_feature": 1000 * first["loop_ms"] / n_feat,
            "us_per_question": 1000 * first["loop_ms"] / n_q,
            "speedup": 1.0,
            "same": 1.0,
        },
    ]
    table_feature = markdown_table(
        per_feature,
        [
            Column("impl", "implementation", align="left"),
            Column("total_ms", f"ms for {n_feat} features", ".1f"),
            Column("us_per_feature", "µs per feature", ".0f"),
            Column("us_per_question", "µs per question", ".0f"),
            Column("speedup", "x faster than the loop", ".1f"),
            Column("same", "same answer as the loop", lambda v: f"{100 * v:.1f}%"),
        ],
    )
    table_share = markdown_table(
        rows,
        [
            Column("backend", "backend", align="left"),
            Column("device", "device", align="left"),
            Column("windowing_ms", "windowing ms", ".0f"),
            Column("forward_ms", "forward ms", ".0f"),
            Column("ours_ms", "postprocess ms (ours)", ".1f"),
            Column("ours_share", "ours: share of total", lambda v: f"{100 * v:.2f}%"),
            Column("loop_ms", "postprocess ms (loop)", ".1f"),
            Column("loop_share", "loop: share of total", lambda v: f"{100 * v:.2f}%"),
            Column("total_ours_ms_per_q", "total ms per question (ours)", ".1f"),
        ],
    )
    wall = time.perf_counter() - started
    worst = max(r["ours_share"] for r in rows)
    verdict = "met" if worst < TARGET_SHARE else "NOT met"
    what = (
        f"Model: {model_label(model_dir)}. Data: {eval_set.source}; {n_q} questions, {n_feat} features "
        f"(windows); {'; '.join(eval_set.notes)}. Settings: max_length=384, doc_stride=128, n_best_size="
        f"{config.n_best_size}, max_answer_len=30, align_to_words={config.align_to_words}, feature batch "
        f"{args.batch_size}; {args.threads} torch / ONNX Runtime threads. Postprocess times: median of "
        f"{args.repeat} runs over the same logits; the loop's input conversion (offset lists) is not timed. "
        f"Whole run: {wall:.0f} s."
    )
    goal = (
        f"Target: postprocess < {100 * TARGET_SHARE:g}% of the total time: **{verdict}** "
        f"(ours at most {100 * worst:.2f}%, on {max(rows, key=lambda r: r['ours_share'])['backend']})."
    )
    sections = [
        what,
        "Per feature:\n\n" + table_feature,
        "Share of the custom-qa path:\n\n" + table_share,
        goal,
        machine_markdown(info),
    ]
    results_dir = Path(args.results_dir)
    save_bar_plot(
        results_dir / f"{args.name}.png",
        [r["backend"] for r in rows],
        {
            "postprocess (ours)": [r["ours_share"] * 100 for r in rows],
            "postprocess (double loop)": [r["loop_share"] * 100 for r in rows],
        },
        title=f"postprocess share of the custom-qa path ({n_q} questions, {n_feat} windows)",
        ylabel="% of total time",
        hline=100 * TARGET_SHARE,
    )
    path = write_report(args.name, "Postprocessing cost", sections, results_dir)
    markdown = "\n\n".join(sections)
    print(markdown)
    return {
        "markdown": markdown,
        "table_feature": table_feature,
        "table_share": table_share,
        "rows": rows,
        "path": path,
        "seconds": wall,
    }


if __name__ == "__main__":
    main()
