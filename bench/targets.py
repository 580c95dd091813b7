"""The targets ``bench/inference.py`` checks its rows against: one line per target, met / not met, with the
numbers behind it.

:func:`targets`: custom-qa ONNX >= 3x and ONNX int8 >= 5x the stock pipeline's questions/s, int8 F1 drop
<= 1 point (trained weights only). :func:`hardware_targets` (issue 14): the best custom-qa path >= 8x the
stock fp32 pipeline and >= 1.5x the Optimum-Intel pipeline, bf16 FLOP utilisation >= 50%.
"""

from __future__ import annotations

from typing import Any

from bench.harness import BY_KEY

TARGET_ONNX, TARGET_INT8, TARGET_F1_DROP = 3.0, 5.0, 1.0


def targets(rows: list[dict[str, Any]], batch_sizes: list[int], quality: bool) -> list[str]:
    """One line per target of the issue: met / not met, with the numbers behind it."""
    by_key = {r["variant"]: r for r in rows}
    lines = []

    def best(keys, bs):
        vals = [(by_key[k][f"x_stock_b{bs}"], BY_KEY[k].label) for k in keys if k in by_key]
        vals = [v for v in vals if v[0] is not None]
        return max(vals) if vals else None

    for bs in batch_sizes:
        onnx = best(("onnx-fp32", "onnx-o2"), bs)
        if onnx:
            verdict = "met" if onnx[0] >= TARGET_ONNX else "NOT met"
            lines.append(
                f"- custom-qa ONNX >= {TARGET_ONNX:g}x stock q/s at batch {bs}: **{verdict}** "
                f"(best {onnx[1]}: {onnx[0]:.2f}x)"
            )
        int8 = by_key.get("onnx-int8", {}).get(f"x_stock_b{bs}")
        if int8 is not None:
            verdict = "met" if int8 >= TARGET_INT8 else "NOT met"
            lines.append(
                f"- ONNX int8 >= {TARGET_INT8:g}x stock q/s at batch {bs}: **{verdict}** ({int8:.2f}x)"
            )
    for bs in batch_sizes:
        bf16 = {k: by_key.get(k, {}).get(f"x_stock_b{bs}") for k in ("torch-bf16", "stock-bf16")}
        if bf16["torch-bf16"] is not None:
            stock_bf16 = (
                ""
                if bf16["stock-bf16"] is None
                else f"; the stock pipeline in bf16: {bf16['stock-bf16']:.2f}x"
            )
            lines.append(
                f"- (no target) custom-qa PyTorch bf16 at batch {bs}: {bf16['torch-bf16']:.2f}x stock fp32 q/s"
                + stock_bf16
            )
    drop = by_key.get("onnx-int8", {}).get("f1_drop")
    if drop is not None:
        if quality:
            verdict = "met" if drop <= TARGET_F1_DROP else "NOT met"
            lines.append(f"- int8 F1 drop <= {TARGET_F1_DROP:g} point: **{verdict}** ({drop:+.2f})")
        else:
            lines.append(
                f"- int8 F1 drop <= {TARGET_F1_DROP:g} point: **not assessed** (random weights; "
                "run with --model DIR of a trained model)"
            )
    return lines


TARGET_X_STOCK, TARGET_X_OPTIMUM_INTEL, TARGET_UTIL_BF16, TARGET_F1_DROP_STOCK = 8.0, 1.5, 0.5, 0.5


def hardware_targets(rows: list[dict[str, Any]], batch_sizes: list[int], quality: bool) -> list[str]:
    """Issue 14's targets: the best custom-qa path (F1 drop <= 0.5 vs stock fp32 where the weights are
    trained) >= 8x the stock fp32 pipeline and >= 1.5x the Optimum-Intel pipeline; bf16 FLOP
    utilisation >= 50% (stated for a DistilBERT-sized model at batch 16); batch-1 p50 per path."""
    by_key = {r["variant"]: r for r in rows}
    lines = []
    ok_quality = [
        r
        for r in rows
        if BY_KEY[r["variant"]].pipeline == "custom-qa"
        and (
            not quality or (r.get("f1_drop_stock") is not None and r["f1_drop_stock"] <= TARGET_F1_DROP_STOCK)
        )
    ]
    gate = (
        f"F1 drop <= {TARGET_F1_DROP_STOCK:g} vs stock fp32"
        if quality
        else "random weights: F1 gate not assessed"
    )
    oi = by_key.get("optimum-intel")
    for bs in batch_sizes:
        scored = [r for r in ok_quality if r.get(f"x_stock_b{bs}")]
        if not scored:
            continue
        best = max(scored, key=lambda r: r[f"x_stock_b{bs}"])
        verdict = "met" if best[f"x_stock_b{bs}"] >= TARGET_X_STOCK else "NOT met"
        lines.append(
            f"- best custom-qa path >= {TARGET_X_STOCK:g}x stock fp32 at batch {bs} ({gate}): **{verdict}** "
            f"({best['label']}: {best[f'x_stock_b{bs}']:.2f}x)"
        )
        if oi and oi.get(f"qps_b{bs}"):
            x = best[f"qps_b{bs}"] / oi[f"qps_b{bs}"]
            verdict = "met" if x >= TARGET_X_OPTIMUM_INTEL else "NOT met"
            lines.append(
                f"- best custom-qa path >= {TARGET_X_OPTIMUM_INTEL:g}x the Optimum-Intel pipeline at batch {bs}: "
                f"**{verdict}** ({x:.2f}x)"
            )
    for bs in batch_sizes:
        bf16 = [
            r
            for r in rows
            if r.get("precision") == "bf16"
            and r.get(f"util_b{bs}") is not None
            and BY_KEY[r["variant"]].pipeline == "custom-qa"
        ]
        if bf16:
            best = max(bf16, key=lambda r: r[f"util_b{bs}"])
            verdict = "met" if best[f"util_b{bs}"] >= TARGET_UTIL_BF16 else "NOT met"
            lines.append(
                f"- bf16 FLOP utilisation >= {100 * TARGET_UTIL_BF16:.0f}% of the measured bf16 matmul peak at "
                f"batch {bs}: **{verdict}** ({best['label']}: {100 * best[f'util_b{bs}']:.0f}%)"
            )
    if 1 in batch_sizes:
        lines.append("- batch-1 latency p50: reported for every path (column 'p50 ms b1')")
    return lines
