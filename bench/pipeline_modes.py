"""Stock ``pipeline("question-answering")`` vs ``pipeline("custom-qa")`` in each span-scoring mode, on real
dev questions: EM/F1, identical spans (answer, start, end) with the stock pipeline, questions/s.

Every variant gets the same model, questions and arguments (the stock defaults: ``max_seq_len=384``,
``doc_stride=128``, ``max_answer_len=15``, ``top_k=1``, plus ``--batch-size``), so the rows differ only
in how spans are scored. SQuAD v1.1: the held-out articles of the training split (``split_by_article``,
20%, seed 0: what ``qa-serving train --train-file`` evaluates on); KorQuAD 1.0: the first questions.
Variants take turns on chunks of questions (order rotating) so load from other jobs hits all alike.
Prints a markdown table.

    python -m bench.pipeline_modes --model /tmp/minilm-squad            # a folder from qa-serving train
    PYTHONPATH=/tmp/old-checkout python -m bench.pipeline_modes ...     # custom-qa of another checkout
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import warnings
from pathlib import Path

if __package__ in (None, ""):  # `python bench/pipeline_modes.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SETTINGS = {"max_seq_len": 384, "doc_stride": 128, "max_answer_len": 15, "top_k": 1}
DATASETS = {"squad": "squad-v1.1-dev.part-a.json", "korquad": "korquad-v1.0-dev.part-a.json"}


def load_questions(shared: Path, name: str, limit: int) -> tuple[list[str], list[str], list[str], dict]:
    """``(ids, questions, contexts, references)`` of one real dev subset."""
    from qa_serving.data.loading import load_examples, split_by_article
    from qa_serving.data.metrics import references_from_dataset

    rows = load_examples(str(shared / "data" / DATASETS[name]))
    if name == "squad":
        _, rows = split_by_article(rows, eval_fraction=0.2, seed=0)
    rows = rows.select(range(min(limit, len(rows))))
    return list(rows["id"]), list(rows["question"]), list(rows["context"]), references_from_dataset(rows)


def make_variants(model_dir: str) -> dict:
    """name -> callable(questions, contexts, batch_size) -> list of answer dicts."""
    import transformers

    from qa_serving.core.config import QAConfig

    stock = transformers.pipeline("question-answering", model=model_dir, tokenizer=model_dir)
    custom = transformers.pipeline("custom-qa", model=model_dir)
    has_modes = any(f.name == "span_scoring" for f in dataclasses.fields(QAConfig))

    def run(pipe, extra):
        def call(qs, cs, batch_size):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = pipe(question=qs, context=cs, batch_size=batch_size, **SETTINGS, **extra)
            return out if isinstance(out, list) else [out]

        return call

    variants = {"stock question-answering": run(stock, {})}
    if has_modes:
        variants['custom-qa "pipeline"'] = run(custom, {"span_scoring": "pipeline"})
        variants['custom-qa "squad"'] = run(custom, {"span_scoring": "squad"})
    else:  # a checkout from before the modes: its one scoring
        variants["custom-qa (other checkout)"] = run(custom, {})
    return variants


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="A model folder (e.g. from qa-serving train).")
    parser.add_argument("--shared", default=os.environ.get("QA_SHARED_DIR", "../shared"))
    parser.add_argument("--questions", type=int, default=200, help="Questions per dataset.")
    parser.add_argument("--datasets", default="squad,korquad")
    parser.add_argument("--batch-size", type=int, default=16, help="batch_size for every pipeline.")
    parser.add_argument("--chunk", type=int, default=50, help="Questions per turn of a variant.")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from qa_serving.data.metrics import compute_metrics

    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    variants = make_variants(args.model)
    rows = []
    for name in args.datasets.split(","):
        ids, qs, cs, refs = load_questions(Path(args.shared), name, args.questions)
        for call in variants.values():  # warm-up
            call(qs[:4], cs[:4], args.batch_size)
        answers = {v: [] for v in variants}
        seconds = dict.fromkeys(variants, 0.0)
        order = list(variants)
        for turn, lo in enumerate(range(0, len(qs), args.chunk)):
            for v in order[turn % len(order) :] + order[: turn % len(order)]:
                t0 = time.perf_counter()
                answers[v].extend(
                    variants[v](qs[lo : lo + args.chunk], cs[lo : lo + args.chunk], args.batch_size)
                )
                seconds[v] += time.perf_counter() - t0
        stock = answers[order[0]]
        for v in order:
            preds = {i: a["answer"] for i, a in zip(ids, answers[v])}
            metrics = compute_metrics(name, preds, refs)
            same = sum(
                (a["answer"], a["start"], a["end"]) == (b["answer"], b["start"], b["end"])
                for a, b in zip(answers[v], stock)
            )
            rows.append(
                (
                    name,
                    v,
                    metrics["exact_match"],
                    metrics["f1"],
                    100.0 * same / len(qs),
                    len(qs) / seconds[v],
                    len(qs),
                )
            )
    print(
        f"model: {args.model}; settings: {SETTINGS}, batch_size={args.batch_size}, torch threads {args.threads}\n"
    )
    print("| data | pipeline | EM | F1 | identical spans vs stock | q/s | questions |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, v, em, f1, same, qps, n in rows:
        print(f"| {name} | {v} | {em:.1f} | {f1:.1f} | {same:.1f}% | {qps:.1f} | {n} |")


if __name__ == "__main__":
    main()
