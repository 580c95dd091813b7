"""``qa-serving quickstart``: flags -> :class:`qa_serving.cli.quickstart_run.QuickstartConfig` -> the run."""

from __future__ import annotations

import argparse
from pathlib import Path

from qa_serving.cli.quickstart_run import QuickstartConfig, run_quickstart


def add_parser(sub) -> None:
    p = sub.add_parser(
        "quickstart",
        help="the whole job: data -> fine-tune -> evaluate -> ONNX -> TorchServe -> HTTP answer",
        description="Chains synth/train/export/archive/serve with sensible offline defaults and prints one "
        "summary table. Data: --train-file, else the hub's squad when reachable, else the SQuAD v1.1 dev "
        "subset shipped with the package (synthetic for --lang ko and --tiny). "
        "Model: --model, else distilbert-base-uncased when the hub is reachable, else "
        "all-MiniLM-L6-v2 when its package is installed, else a small BERT from a config.",
    )
    p.add_argument("--train-file", help="SQuAD-format data (e.g. ../shared/data/squad-v1.1-dev.part-a.json)")
    p.add_argument(
        "--model", default="auto", help="auto | scratch | a model folder or hub id (default: auto)"
    )
    p.add_argument("--lang", default="en", choices=["en", "ko"],
                   help="synthetic data language; ko: multilingual-e5-small when installed (default: en)")
    p.add_argument("--budget-minutes", type=float, default=8.0, help="training time budget (default: 8)")
    p.add_argument("--output-dir", default="runs/quickstart", help="where data, model and exports go")
    p.add_argument(
        "--tiny", action="store_true", help="a tiny model and data: the whole chain in a few minutes"
    )
    p.add_argument("--no-serve", action="store_true", help="stop after the ONNX export")
    p.add_argument("--stop-after", action="store_true", help="stop the server once the summary is printed")
    p.add_argument("--name", default="quickstart", help="model name on the server (default: quickstart)")
    p.add_argument(
        "--run-dir", default="runs/torchserve", help="TorchServe logs, keys, pid (default: runs/torchserve)"
    )
    p.add_argument("--store", default="model_store", help="where the .mar goes (default: model_store)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    cfg = QuickstartConfig(
        output_dir=Path(args.output_dir),
        train_file=args.train_file,
        model=args.model,
        lang=args.lang,
        budget_minutes=args.budget_minutes,
        tiny=args.tiny,
        serve=not args.no_serve,
        stop_after=args.stop_after,
        name=args.name,
        run_dir=Path(args.run_dir),
        store=Path(args.store),
    )
    summary = run_quickstart(cfg)
    return 0 if summary.get("parity_passed", True) else 1
