"""Plots of ``bench/inference.py``: questions/s and batch-1 latency bars of one run
(:func:`save_inference_plots`), and one questions/s plot of several runs' ``NAME.json`` files
(:func:`combine_plot`, ``--combine``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.common import save_bar_plot


def combine_plot(json_paths: list[str], out: str | Path) -> Path:
    """One questions/s bar plot of several runs (e.g. MiniLM and DistilBERT), batch 16 and batch 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [json.loads(Path(p).read_text()) for p in json_paths]
    fig, axes = plt.subplots(len(runs), 1, figsize=(11, 4.2 * len(runs)), squeeze=False)
    for ax, run in zip(axes[:, 0], runs):
        rows = run["rows"]
        labels = [
            r["label"].split(" (its defaults")[0].replace('pipeline("question-answering")', "stock pipeline")
            for r in rows
        ]
        keys = sorted({k for r in rows for k in r if k.startswith("qps_b")}, key=lambda k: int(k[5:]))
        width = 0.8 / max(1, len(keys))
        for j, key in enumerate(keys):
            ax.barh(
                [i + j * width for i in range(len(rows))],
                [r.get(key) or 0 for r in rows],
                width,
                label=f"batch {key[5:]}",
            )
        ax.set_yticks([i + width * (len(keys) - 1) / 2 for i in range(len(rows))], labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("questions / second")
        ax.set_title(run["model"], fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def save_inference_plots(
    rows: list[dict[str, Any]],
    batch_sizes: list[int],
    results_dir: Path,
    name: str,
    title: str,
    plot: str | Path | None = None,
) -> None:
    """``NAME-throughput.png`` (questions/s per batch size) and, with batch 1, ``NAME-latency.png``
    (p50/p95 per question) in ``results_dir``; the questions/s plot also at ``plot`` when given."""
    plot_labels = [r["label"].replace('pipeline("question-answering")', "stock pipeline") for r in rows]
    save_bar_plot(
        results_dir / f"{name}-throughput.png",
        plot_labels,
        {f"batch {bs}": [r.get(f"qps_b{bs}") for r in rows] for bs in batch_sizes},
        title=title,
        ylabel="questions / second",
    )
    if 1 in batch_sizes:
        save_bar_plot(
            results_dir / f"{name}-latency.png",
            plot_labels,
            {"p50": [r.get("p50_ms_b1") for r in rows], "p95": [r.get("p95_ms_b1") for r in rows]},
            title="latency per question at batch 1",
            ylabel="ms",
        )
    if plot:
        save_bar_plot(
            Path(plot),
            plot_labels,
            {f"batch {bs}": [r.get(f"qps_b{bs}") for r in rows] for bs in batch_sizes},
            title=title,
            ylabel="questions / second",
        )
