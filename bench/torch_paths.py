"""Forward-pass time of the torch options on fixed shapes (``python -m bench.inference --torch-paths``):
SDPA vs eager attention, inference_mode vs no_grad, torch.compile vs not, optionally 1 vs N threads, in
fp32 and bf16, rounds interleaved. See docs/hardware.md.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.common import Column

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
