"""The main job end to end on the tiny offline default: data -> train -> ONNX -> .mar -> TorchServe -> HTTP."""

from __future__ import annotations

import json
import subprocess

import pytest

pytest.importorskip("optimum.onnxruntime")
pytest.importorskip("ts")

from qa_serving.cli.quickstart_run import QuickstartConfig, format_summary, run_quickstart
from qa_serving.serving import Ports


def _server_alive(run_dir) -> bool:
    out = subprocess.run(["pgrep", "-f", str(run_dir)], capture_output=True, text=True, check=False)
    return bool(out.stdout.strip())


@pytest.mark.serve
def test_quickstart_tiny_end_to_end(tmp_path):
    cfg = QuickstartConfig(
        output_dir=tmp_path / "qs", tiny=True, stop_after=True, run_dir=tmp_path / "ts",
        store=tmp_path / "store", ports=Ports.free(), name="qs",
    )
    summary = run_quickstart(cfg)

    # Every step left its artifact.
    assert (tmp_path / "qs" / "model" / "eval_results.json").is_file()
    assert (tmp_path / "qs" / "onnx" / "parity.json").is_file()
    assert (tmp_path / "store" / "qs.mar").is_file()
    assert summary["data"].startswith("synthetic")
    assert "from a config" in summary["model"]
    assert {"pytorch", "fp32"} <= set(summary["em_f1"])
    assert summary["parity_passed"] is True
    # The served answer is the in-process pipeline's answer for the same input.
    sample = summary["sample"]
    assert sample["same_answer"], sample
    assert sample["served"]["answer"] == sample["in_process"]["answer"]
    assert summary["qps_served"] > 0
    # The server is stopped and no process of it remains.
    assert summary["server"]["stopped"] is True
    assert not _server_alive(tmp_path / "ts")
    assert json.loads((tmp_path / "qs" / "summary.json").read_text())["sample"]["same_answer"] is True
    table = format_summary(summary)
    assert "served answer" in table and "qa-serving serve --stop" in table


def test_quickstart_failure_leaves_no_server(tmp_path, monkeypatch):
    """A failure after the server started stops it (no stray java process)."""
    import qa_serving.cli.quickstart_run as qs

    def boom(*args, **kwargs):
        raise RuntimeError("simulated failure after start")

    monkeypatch.setattr(qs, "_served_answer", boom)
    cfg = QuickstartConfig(
        output_dir=tmp_path / "qs", tiny=True, run_dir=tmp_path / "ts",
        store=tmp_path / "store", ports=Ports.free(), name="qs",
    )
    with pytest.raises(RuntimeError, match="simulated failure"):
        run_quickstart(cfg)
    assert not _server_alive(tmp_path / "ts")


def test_summary_reads_the_probability_ece_against_its_floor():
    figures = {"ece": 0.031, "aurc": 0.25, "coverage@80": 0.5, "coverage@90": 0.2}
    cal = {"cross_fitted_folds": 5, **{f"score_{k}": v for k, v in figures.items()}}
    cal.update({f"probability_{k}": v for k, v in figures.items()}, probability_ece_floor=0.027)
    rows = {line.split("|")[1].strip(): line for line in format_summary({"calibration": cal}).splitlines()
            if line.startswith("| ")}
    assert "perfectly calibrated: ~0.027" in rows["probability (held-out articles, cross-fitted)"]
    assert "perfectly calibrated" not in rows["score (held-out articles)"]
