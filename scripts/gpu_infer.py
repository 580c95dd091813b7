"""Questions/second and EM/F1 of the shared inference path on CUDA at fp32/bf16/fp16 (GPU checks)."""

from __future__ import annotations

import sys

from transformers import AutoTokenizer

from qa_serving.core.backends import load_backend
from qa_serving.core.config import QAConfig
from qa_serving.data.evaluation import evaluate
from qa_serving.data.loading import load_examples, split_by_article

model_dir, data_file = sys.argv[1], sys.argv[2]
_, eval_ds = split_by_article(load_examples(data_file), eval_fraction=0.2, seed=0)
tokenizer = AutoTokenizer.from_pretrained(model_dir)
config = QAConfig.from_model_dir(model_dir).replace(batch_size=128)
print("| dtype | questions/s | EM | F1 |\n|---|---|---|---|")
for dtype in ("fp32", "bf16", "fp16"):
    backend = load_backend(model_dir, backend="torch", device="cuda", dtype=dtype)
    evaluate(backend, tokenizer, eval_ds.select(range(256)), config)  # warm-up
    r = evaluate(backend, tokenizer, eval_ds, config)
    print(f"| {dtype} | {r.questions_per_second:.0f} | {r.metrics['exact_match']:.2f} | {r.metrics['f1']:.2f} |")
