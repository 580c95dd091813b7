"""``qa-serving calibrate``: fit the ``probability`` calibrator of a model folder on held-out questions.

Writes ``qa_calibrator.json`` into the model folder and changes nothing else: the same span-scoring mode
and answers as before, ``probability`` added to them. Works for any model folder, hub-style ones (no
``qa_config.json``: the stock pipeline's mode) included.
"""

from __future__ import annotations

import json
from pathlib import Path

from qa_serving.errors import QAError


def add_parser(sub) -> None:
    from qa_serving.cli.main import _add_model_args, _positive_int, int_at_least
    from qa_serving.data.calibrate import PASSAGE_QUESTIONS, PASSAGES

    p = sub.add_parser(
        "calibrate",
        help="fit the model's probability calibrator on held-out questions (writes qa_calibrator.json)",
        description="Answers every question of --eval-file as the model is served (its span-scoring "
        "mode), labels each top answer exactly right or not, prints the score's and the probability's "
        "ECE/AURC/coverage cross-fitted by article, and saves the calibrator fitted on all questions "
        "into the model folder. Use questions of articles the model was not trained on.",
    )
    # It labels the top 5 answers as served, without abstaining: no --top-k, no --min-probability.
    _add_model_args(p, exclude=("top_k", "min_probability"))
    p.add_argument(
        "--eval-file",
        required=True,
        nargs="+",
        help="held-out SQuAD/KorQuAD JSON, flat JSON(L) or CSV; several files are fitted on together (the "
        "more held-out articles, the closer the calibrator's level of accuracy to the population's)",
    )
    p.add_argument(
        "--metric",
        default="auto",
        choices=["auto", "squad", "squad_v2", "korquad"],
        help="whose exact match labels the answers (default: auto)",
    )
    p.add_argument("--folds", type=int_at_least(2), default=5, help="cross-fitting folds by article, 2 or more (default: 5)")
    p.add_argument(
        "--passages",
        type=int,
        default=PASSAGES,
        help=f"also fit on questions read over this many paragraphs of their article, as passages= reads "
        f"them, so probability is calibrated there too (default: {PASSAGES}; 0: single paragraphs only)",
    )
    p.add_argument(
        "--passage-questions",
        type=int,
        default=PASSAGE_QUESTIONS,
        help=f"how many questions (seeded sample) are also read over --passages paragraphs; each costs "
        f"--passages paragraphs of model time (default: {PASSAGE_QUESTIONS})",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the passage sample (default: 0)")
    p.add_argument("--max-eval-samples", type=_positive_int, default=None, help="use the first N questions only")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from qa_serving.cli.main import _load
    from qa_serving.data.calibrate import fit_calibrator
    from qa_serving.data.evaluation import pick_metric

    backend, tokenizer, config, _ = _load(args)
    model_dir = Path(args.model)
    if not model_dir.is_dir():
        raise QAError(f"--model must be a local model folder to write the calibrator into, got {args.model}")
    data = load_eval_files(args.eval_file)
    if args.max_eval_samples:
        data = data.select(range(min(args.max_eval_samples, len(data))))
    metrics = {pick_metric(args.metric, config, f) for f in args.eval_file}
    if len(metrics) > 1:
        raise QAError(f"--eval-file files would be scored by different metrics {sorted(metrics)}; give --metric")
    metric = metrics.pop()
    # Answered as the model gives them without a calibrator (an abstention would hide the answer judged).
    calibrator, labelled = fit_calibrator(
        backend,
        tokenizer,
        config,
        data,
        metric,
        passages=args.passages,
        passage_questions=args.passage_questions,
        seed=args.seed,
        n_folds=args.folds,
        progress=True,
        source=", ".join(args.eval_file),
    )
    path = calibrator.save(model_dir)
    print(json.dumps({"calibrator": str(path), **labelled.report}, indent=2))
    return 0


def load_eval_files(files: list[str]):
    """The questions of several held-out files as one dataset (articles keep their titles: the same title in
    two files is one article to cross-fitting). A question id in two files is an error: the same questions
    twice would weigh double and leak across the cross-fitting folds."""
    import datasets

    from qa_serving.data.loading import load_examples

    parts = [load_examples(f) for f in files]
    seen: dict[str, str] = {}
    for name, part in zip(files, parts):
        for qid in set(part["id"]):
            if qid in seen:
                raise QAError(f"question id {qid!r} is in both {seen[qid]} and {name}: the same questions twice?")
            seen[qid] = name
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
