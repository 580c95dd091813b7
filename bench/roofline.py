"""The machine's peak and the model's work: the roofline that ``bench/inference.py`` measures FLOP
utilisation against.

:func:`matmul_peak` measures the best ``torch.matmul`` GFLOP/s over BERT-sized GEMMs (fp32 or bf16);
:func:`model_dims` and :func:`window_flops` give the matmul FLOPs of one encoder pass; :func:`useful_flops`
sums them over every window of a set of questions at its real (unpadded) length. Utilisation of a variant =
questions/s x FLOPs per question / the peak of its precision (``bench.inference.build_rows``).
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.common import EvalSet

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
