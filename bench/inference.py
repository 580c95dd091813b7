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

The pieces live beside this entry point: the variants and the harness that loads and measures them
(``bench/harness.py``), the matmul peak and the model's FLOPs (``bench/roofline.py``), the target checks
(``bench/targets.py``), the plots (``bench/plots.py``) and the ``--torch-paths`` table
(``bench/torch_paths.py``). This file parses the command line, builds the rows and writes the report.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/inference.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    CACHE_DIR,
    RESULTS_DIR,
    Column,
    available_cpus,
    cache_name,
    export_variants,
    is_random_model,
    load_eval_set,
    machine_info,
    machine_markdown,
    markdown_table,
    model_label,
    random_distilbert,
    score,
    window_stats,
    write_report,
)
from bench.harness import (  # noqa: F401  (re-exported: `from bench.inference import VARIANTS` keeps working)
    BY_KEY,
    SETTINGS,
    VARIANTS,
    LocalWorker,
    SubprocessWorker,
    Variant,
    VariantRunner,
    _worker_main,
    load_variant,
    measure_interleaved,
    openvino_variants,
)
from bench.plots import combine_plot, save_inference_plots
from bench.roofline import PEAK_SHAPES, matmul_peak, model_dims, useful_flops, window_flops  # noqa: F401
from bench.targets import (  # noqa: F401
    TARGET_F1_DROP,
    TARGET_F1_DROP_STOCK,
    TARGET_INT8,
    TARGET_ONNX,
    TARGET_UTIL_BF16,
    TARGET_X_OPTIMUM_INTEL,
    TARGET_X_STOCK,
    hardware_targets,
    targets,
)
from bench.torch_paths import TORCH_PATH_SHAPES, torch_paths, torch_paths_columns  # noqa: F401

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
    save_inference_plots(
        rows,
        batch_sizes,
        results_dir,
        args.name,
        title=f"questions/s ({model_label(model_dir)}, {len(eval_set)} questions)",
        plot=args.plot,
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
