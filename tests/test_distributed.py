"""``qa-serving train`` under ``torchrun --nproc_per_node 2`` on CPU (gloo): a tiny one-epoch fine-tune.

What it checks, and why:
- both ranks trained on the same windows of the same tokenizer (a WordPiece tokenizer trained in two
  processes differs, so rank 0 trains it and sends it to the others), and the data was sharded: the
  optimizer took ceil(windows / (2 x batch)) steps, half what one process takes;
- the per-epoch evaluation (rank 0 only, while rank 1 waits at the next collective), the checkpoint
  and the final evaluation run without a deadlock, within a bounded time;
- only rank 0 writes the model: every rank records the files it opens for writing under the output
  folder (Python's audit hook, plus ``torch.save`` and safetensors' ``save_file``, which write from C++
  and Rust); the other rank writes nothing but its own RNG state in the checkpoint;
- the EM/F1 in ``eval_results.json`` equals a single-process ``qa-serving evaluate`` of the saved model.

~30-60 s on 2 busy CPU cores (two processes importing torch + transformers dominate).
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from qa_serving.data.synthetic import write_squad

if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

BATCH_SIZE = 8
SEED = 42
TIMEOUT_S = 300  # far above the ~30-60 s it takes; a deadlock fails the test instead of hanging CI

# Runs `qa-serving train` and records, for this rank, the files it writes under the output folder and a
# fingerprint of the training windows (tokenizer vocabulary + token ids).
RECORDER = r"""
import atexit, hashlib, json, os, sys

out, log_dir, argv = os.path.realpath(sys.argv[1]), sys.argv[2], sys.argv[3:]
rank = int(os.environ["RANK"])
record = {"rank": rank, "world_size": int(os.environ["WORLD_SIZE"]), "writes": set(), "features": None}


def note(path):
    path = os.path.realpath(os.fsdecode(path))
    if path.startswith(out + os.sep):
        record["writes"].add(os.path.relpath(path, out))


def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        path, mode, flags = args
        writing = any(c in mode for c in "wax+") if isinstance(mode, str) else flags & (os.O_WRONLY | os.O_RDWR)
        if writing:
            note(path)
    elif event in ("os.rename", "os.replace"):
        note(args[1])


sys.addaudithook(hook)

import numpy as np
import safetensors.torch  # patched before transformers binds save_file
import torch

_torch_save, _st_save = torch.save, safetensors.torch.save_file


def torch_save(obj, f, *args, **kwargs):
    if isinstance(f, (str, bytes, os.PathLike)):
        note(f)
    return _torch_save(obj, f, *args, **kwargs)


def st_save(tensors, filename, *args, **kwargs):
    note(filename)
    return _st_save(tensors, filename, *args, **kwargs)


torch.save, safetensors.torch.save_file = torch_save, st_save

import qa_serving.training.trainer as training

_prepare = training.prepare_features


def prepare(tokenizer, *args, **kwargs):
    features = _prepare(tokenizer, *args, **kwargs)
    if kwargs.get("answers") is not None:  # the training windows
        vocab = json.dumps(tokenizer.get_vocab(), sort_keys=True).encode()
        ids = b"|".join(np.asarray(row, dtype=np.int64).tobytes() for row in features.input_ids)
        record["features"] = {
            "vocab": hashlib.md5(vocab).hexdigest(),
            "ids": hashlib.md5(ids).hexdigest(),
            "windows": len(features),
        }
    return features


training.prepare_features = prepare


@atexit.register
def dump():
    record["writes"] = sorted(record["writes"])
    with open(os.path.join(log_dir, f"rank{rank}.json"), "w") as f:
        json.dump(record, f)


from qa_serving.cli.main import main

sys.exit(main(argv))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_bounded(cmd: list[str], *, env: dict, timeout: float, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group; on timeout kill the whole group (torchrun and its ranks)."""
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"timed out after {timeout:.0f}s (deadlock?); output:\n{out[-6000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out)


def processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if text in cmdline and proc.pid != os.getpid():
            found.append(f"{proc.pid}: {cmdline[:200]}")
    return found


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    train_file = write_squad(root / "train.json", n_articles=12, seed=0)
    eval_file = write_squad(root / "eval.json", n_articles=3, seed=1)
    out, logs = root / "out", root / "logs"
    logs.mkdir()
    (root / "recorder.py").write_text(RECORDER)
    train_args = [
        "train", "--from-scratch", "tiny", "--train-file", str(train_file), "--eval-file", str(eval_file),
        "--output-dir", str(out), "--epochs", "1", "--batch-size", str(BATCH_SIZE), "--seed", str(SEED),
        "--max-length", "128", "--doc-stride", "32", "--vocab-size", "1000", "--logging-steps", "5",
        "--no-progress",
    ]  # fmt: skip
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        str(root / "recorder.py"), str(out), str(logs), *train_args,
    ]  # fmt: skip
    env = {
        **os.environ,
        "GLOO_SOCKET_IFNAME": "lo",  # loopback only
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]
        ),
    }
    result = run_bounded(cmd, env=env, timeout=TIMEOUT_S, cwd=root)
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-6000:]
    ranks = {r: json.loads((logs / f"rank{r}.json").read_text()) for r in (0, 1)}
    return {"root": root, "out": out, "eval_file": eval_file, "stdout": result.stdout, "ranks": ranks}


def test_both_ranks_train_on_the_same_windows_sharded_between_them(ddp_run):
    r0, r1 = ddp_run["ranks"][0]["features"], ddp_run["ranks"][1]["features"]
    assert ddp_run["ranks"][0]["world_size"] == 2
    # Same tokenizer (vocabulary) and the same token ids for every window on both ranks.
    assert r0 == r1
    results = json.loads((ddp_run["out"] / "eval_results.json").read_text())
    assert results["train_windows"] == r0["windows"]
    [state_file] = ddp_run["out"].glob("checkpoint-*/trainer_state.json")
    state = json.loads(state_file.read_text())
    # Each step takes BATCH_SIZE windows on each of the 2 ranks: half the steps of one process.
    assert state["global_step"] == math.ceil(r0["windows"] / (2 * BATCH_SIZE))
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert losses and all(math.isfinite(x) for x in losses)
    assert results["epochs_done"] == pytest.approx(1.0)


def test_training_changed_the_weights(ddp_run):
    from transformers import AutoTokenizer

    from qa_serving.training.scratch import scratch_model

    out = ddp_run["out"]
    initial = scratch_model(AutoTokenizer.from_pretrained(out), "tiny", seed=SEED).state_dict()
    trained = load_file(out / "model.safetensors")
    assert trained.keys() <= initial.keys()
    assert trained["qa_outputs.weight"].shape == initial["qa_outputs.weight"].shape
    changed = [k for k in trained if not torch.equal(trained[k], initial[k])]
    assert "qa_outputs.weight" in changed and len(changed) > len(trained) // 2


def test_only_rank_0_writes_the_model_and_results(ddp_run):
    w0, w1 = set(ddp_run["ranks"][0]["writes"]), set(ddp_run["ranks"][1]["writes"])
    # (tokenizer.json is written from Rust, unseen; tokenizer_config.json comes from the same call.)
    assert {
        "model.safetensors",
        "config.json",
        "tokenizer_config.json",
        "qa_config.json",
        "eval_results.json",
    } <= w0
    assert any(re.fullmatch(r"checkpoint-\d+/model\.safetensors", w) for w in w0)
    # Rank 1 writes only its own RNG state into the checkpoint (needed to resume), nothing else.
    assert all(re.fullmatch(r"checkpoint-\d+/rng_state_1\.pth", w) for w in w1), sorted(w1)
    stdout = ddp_run["stdout"]
    assert stdout.count("[eval] final:") == 1
    assert stdout.count("[eval] epoch 1.0:") == 1  # the per-epoch evaluation ran once, on rank 0


def test_eval_results_equal_a_single_process_evaluation(ddp_run):
    out = ddp_run["out"]
    results = json.loads((out / "eval_results.json").read_text())
    assert len(results["history"]) == 1 and results["history"][0]["epoch"] == pytest.approx(1.0)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "qa_serving.cli.main", "evaluate", "--model", str(out),
           "--eval-file", str(ddp_run["eval_file"]), "--device", "cpu"]  # fmt: skip
    result = subprocess.run(
        cmd, check=False, env=env, cwd=ddp_run["root"], capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-3000:]
    single = json.loads(result.stdout)
    final = results["final"]
    assert single["total"] == final["total"] == results["eval_questions"]
    assert single["exact_match"] == pytest.approx(final["exact_match"], abs=1e-9)
    assert single["f1"] == pytest.approx(final["f1"], abs=1e-9)


def test_no_launcher_or_rank_process_is_left(ddp_run):
    assert not processes_mentioning(str(ddp_run["root"]))
