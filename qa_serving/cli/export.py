"""``qa-serving export``: ONNX (or OpenVINO IR) export, optional optimization / int8 quantization, then the
parity report.

Exit codes: 0 export done and parity passed (or skipped), 1 parity failed (the table says why),
2 bad input (:class:`qa_serving.errors.QAError`, printed by ``qa_serving.cli.main.main``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from qa_serving.cli.main import _positive_int
from qa_serving.errors import QAError
from qa_serving.export.onnx import OPTIMIZE_LEVELS, QUANTIZE_TARGETS

OV_QUANTIZE_MODES = ("int8-weights", "int8")  # = qa_serving.export.openvino.QUANTIZE_MODES (no import:
# that module needs nothing optional at import time, but --help should not import NNCF's neighbours)

EPILOG = """\
layout: OUTPUT/ is the fp32 model; OUTPUT/o1..o4/ and OUTPUT/int8/ are complete model folders too
(config, tokenizer, qa_config.json), so any of them can be passed to `qa-serving evaluate --model`.

examples:
  qa-serving export --model runs/model --output runs/onnx
  qa-serving export --model runs/model --output runs/onnx --optimize O2 --quantize auto --eval-file dev.json
  qa-serving export --model runs/model --output runs/onnx-gpu --optimize O4 --device cuda
  qa-serving export --model runs/model --output runs/ov --format openvino --ov-quantize int8-weights int8

OpenVINO layout: OUTPUT/ is the fp32 IR (run with a bf16 hint where the CPU has avx512_bf16/AMX),
OUTPUT/int8-weights/ NNCF weight-only int8, OUTPUT/int8/ NNCF full int8; same parity gate as ONNX.
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a span model to ONNX (optionally optimized / int8) and check parity",
        description=(
            "Export a fine-tuned question-answering model folder to ONNX with Optimum (dynamic batch and\n"
            "sequence axes), optionally optimize it with ONNX Runtime and quantize it to dynamic int8, then\n"
            "compare every variant with the PyTorch model: max |logit diff| on real windows, and EM/F1 and\n"
            "identical spans on an eval file. Prints the table and writes OUTPUT/parity.json."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model", required=True, help="fine-tuned PyTorch model folder (config.json, weights, tokenizer)"
    )
    p.add_argument("--output", required=True, help="folder to write the ONNX model(s) into")
    p.add_argument(
        "--format",
        choices=["onnx", "openvino"],
        default="onnx",
        help="onnx: Optimum ONNX + ONNX Runtime (default); openvino: Optimum-Intel IR + NNCF int8 "
        "(needs the 'openvino' extra)",
    )
    p.add_argument(
        "--ov-quantize",
        nargs="*",
        choices=OV_QUANTIZE_MODES,
        default=["int8-weights"],
        metavar="MODE",
        help="with --format openvino: NNCF variants to build, any of int8-weights (weight-only) and int8 "
        "(weights + activations, calibrated on windows of --eval-file, else synthetic text); the flag with "
        "no MODE: only the fp32 IR (default: int8-weights)",
    )
    p.add_argument(
        "--optimize",
        type=str.upper,
        choices=OPTIMIZE_LEVELS,
        default=None,
        help="ORTOptimizer level: O1 basic, O2 + transformer fusions, O3 + fast GELU, "
        "O4 + fp16 (GPU only) (default: none)",
    )
    p.add_argument(
        "--quantize",
        choices=QUANTIZE_TARGETS,
        nargs="?",
        const="auto",
        default=None,
        help="dynamic int8 quantization for this CPU ('auto', the default when the flag is "
        "given without a value) or for a named instruction set (default: none)",
    )
    p.add_argument(
        "--per-channel",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="int8 weight scales per output channel (default; --no-per-channel: one per tensor, which "
        "cost a fine-tuned MiniLM 2.5 F1 points where per channel cost 0.4)",
    )
    p.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="trace, optimize and check on this device; cuda needs onnxruntime-gpu (default: cpu)",
    )
    p.add_argument(
        "--eval-file",
        default=None,
        help="SQuAD/KorQuAD JSON, flat JSON(L) or CSV for the parity check "
        "(default: a generated synthetic set)",
    )
    p.add_argument("--max-eval-samples", type=_positive_int, default=None, help="check on the first N questions only")
    p.add_argument(
        "--metric",
        default="auto",
        choices=["auto", "squad", "squad_v2", "korquad"],
        help="auto: squad_v2 for v2 models, korquad for KorQuAD files, else squad (default: auto)",
    )
    p.add_argument(
        "--max-f1-drop",
        type=float,
        default=1.0,
        help="fail (exit 1) when a variant's F1 is more than this many points below PyTorch's (default: 1.0)",
    )
    p.add_argument("--skip-parity", action="store_true", help="export only, no parity check")
    p.add_argument("--overwrite", action="store_true", help="replace a previous export in --output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    eval_file = Path(args.eval_file) if args.eval_file else None
    if eval_file is not None and eval_file.suffix.lower() in (".json", ".jsonl", ".csv") and not eval_file.is_file():
        # Checked before the export is written (a rerun would need --overwrite).
        raise QAError(f"--eval-file {eval_file} not found")
    if args.format == "openvino":
        return _run_openvino(args)
    try:
        from qa_serving.export.onnx import export_onnx
        from qa_serving.export.parity import check_export

        result = export_onnx(
            model_dir=args.model,
            output_dir=args.output,
            optimize=args.optimize,
            quantize=args.quantize,
            device=args.device,
            overwrite=args.overwrite,
            per_channel=args.per_channel,
        )
    except ImportError as err:  # optimum / onnxruntime missing: say what to install
        raise QAError(str(err)) from err
    for name, folder in result.variants().items():
        print(f"{name:>5}: {folder}")
    if args.skip_parity:
        return 0
    return _print_report(
        check_export(model_dir=args.model, result=result, **_parity_options(args)), result.output_dir
    )


def _parity_options(args: argparse.Namespace) -> dict:
    return {
        "eval_file": args.eval_file,
        "max_eval_samples": args.max_eval_samples,
        "max_f1_drop": args.max_f1_drop,
        "metric": args.metric,
    }


def _print_report(report, output_dir) -> int:
    """The parity table and verdict; exit code 0 pass, 1 fail."""
    from qa_serving.export.parity import format_table

    print(
        f"\nparity on {report.n_questions} questions of {report.data} ({report.metric}), "
        f"logits on {report.n_logit_windows} windows, device {report.device}:\n"
    )
    print(format_table(report.rows))
    print(f"\n{'PASS' if report.passed else 'FAIL'}; written to {output_dir / 'parity.json'}")
    return 0 if report.passed else 1


def _run_openvino(args: argparse.Namespace) -> int:
    if args.optimize or args.quantize or args.device != "cpu":
        raise QAError(
            "--optimize, --quantize and --device cuda are ONNX Runtime options; with --format openvino use "
            "--ov-quantize (NNCF) and let the runtime pick bf16/fp32 from the CPU"
        )
    from qa_serving.export.openvino import check_openvino_export, export_openvino

    calibration = None
    if args.eval_file and "int8" in args.ov_quantize:  # calibrate on the user's own kind of text
        from qa_serving.data.loading import load_examples

        data = load_examples(args.eval_file)
        data = data.select(range(min(len(data), 256)))
        calibration = (list(data["question"]), list(data["context"]))
    result = export_openvino(
        model_dir=args.model,
        output_dir=args.output,
        quantize=args.ov_quantize,
        calibration=calibration,
        overwrite=args.overwrite,
    )
    for name, folder in result.variants().items():
        print(f"{name:>12}: {folder}")
    if args.skip_parity:
        return 0
    return _print_report(
        check_openvino_export(model_dir=args.model, result=result, **_parity_options(args)), result.output_dir
    )
