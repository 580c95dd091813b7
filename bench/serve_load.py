"""TorchServe under load: one model archived twice (``batchSize`` 1 = batching off, 8 = on), served by one
TorchServe on free loopback ports (token auth on), driven by a bounded closed-loop load generator at 1, 8,
32 and 64 concurrent clients.

Each client is a thread with its own keep-alive HTTP connection that sends one question per request and
waits for the answer before sending the next. A level stops after ``--requests`` requests or ``--duration``
seconds, whichever comes first (requests in flight then finish; each has a ``--timeout``). Reported per
level: requests/s (successful answers over the level's wall time), p50/p95/p99 latency, errors (non-200
or no answer: must be 0), mean TorchServe batch size (the handler's ``x-qa-batch-size`` header), and served
throughput as a share of in-process throughput on the same backend with the same batching: ``answer()``
over the same questions in chunks of ``batchSize`` questions, in this process, before the server starts.

The server is always stopped (``finally``), also on errors and Ctrl-C.

    python -m bench.serve_load                      # random DistilBERT-base as ONNX int8, 1/8/32/64 clients
    python -m bench.serve_load --backend torch
    python -m bench.serve_load --quick
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # `python bench/serve_load.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    CACHE_DIR,
    RESULTS_DIR,
    Column,
    EvalSet,
    available_cpus,
    cache_name,
    export_variants,
    latency_summary,
    load_eval_set,
    machine_info,
    machine_markdown,
    markdown_table,
    model_label,
    random_distilbert,
    save_line_plot,
    write_report,
)

BACKENDS = ("torch", "onnx-fp32", "onnx-o2", "onnx-int8")
TARGET_SHARE = 0.80


# --- load generator -----------------------------------------------------------------------------------


@dataclass
class LevelResult:
    """What one load level measured (latencies in seconds, of every finished request)."""

    clients: int
    sent: int = 0
    ok: int = 0
    errors: int = 0
    wall_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        lat = latency_summary(self.latencies)
        return {
            "clients": self.clients,
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.errors,
            "rps": self.ok / self.wall_s if self.wall_s else 0.0,
            "p50_ms": lat["p50_ms"],
            "p95_ms": lat["p95_ms"],
            "p99_ms": lat["p99_ms"],
            "mean_batch": float(np.mean(self.batch_sizes)) if self.batch_sizes else None,
            "wall_s": self.wall_s,
        }


def run_level(
    host: str,
    port: int,
    path: str,
    headers: dict[str, str],
    bodies: list[bytes],
    clients: int,
    max_requests: int,
    duration_s: float,
    timeout_s: float = 120.0,
) -> LevelResult:
    """Closed-loop load: ``clients`` threads send ``bodies`` in turn (POST ``path``) until ``max_requests``
    have been sent or ``duration_s`` has passed. Loopback only: ``host`` must be 127.0.0.1/localhost.
    """
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"the load generator only targets loopback, got host {host!r}")
    result = LevelResult(clients)
    lock = threading.Lock()
    counter = iter(range(max_requests))
    deadline = time.perf_counter() + duration_s

    def next_index() -> int | None:
        with lock:
            if time.perf_counter() > deadline:
                return None
            return next(counter, None)

    def client() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
        try:
            while (i := next_index()) is not None:
                t0 = time.perf_counter()
                status, batch, problem = 0, None, None
                try:
                    conn.request("POST", path, body=bodies[i % len(bodies)], headers=headers)
                    resp = conn.getresponse()
                    payload = resp.read()
                    status = resp.status
                    batch = resp.getheader("x-qa-batch-size")
                    if status != 200:
                        problem = f"HTTP {status}: {payload[:200]!r}"
                    elif "answer" not in json.loads(payload):
                        problem = f"no answer in {payload[:200]!r}"
                except (OSError, http.client.HTTPException, ValueError) as err:
                    problem = f"{type(err).__name__}: {err}"
                    conn.close()
                    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
                elapsed = time.perf_counter() - t0
                with lock:
                    result.sent += 1
                    result.latencies.append(elapsed)
                    if problem is None:
                        result.ok += 1
                        if batch and batch.isdigit():
                            result.batch_sizes.append(int(batch))
                    else:
                        result.errors += 1
                        if len(result.error_samples) < 5:
                            result.error_samples.append(problem)
        finally:
            conn.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients, thread_name_prefix="load") as pool:
        for f in [pool.submit(client) for _ in range(clients)]:
            f.result()
    result.wall_s = time.perf_counter() - started
    return result


def request_bodies(eval_set: EvalSet) -> list[bytes]:
    return [
        json.dumps({"question": q, "context": c}).encode()
        for q, c in zip(eval_set.questions, eval_set.contexts)
    ]


# --- in-process reference -----------------------------------------------------------------------------


def in_process_qps(model_folder: Path, backend: str, eval_set: EvalSet, chunk: int, n: int) -> float:
    """Questions/s of ``answer()`` over the first ``n`` questions in chunks of ``chunk`` questions, with the
    backend loaded as the handler loads it (``load_backend``; torch threads = usable CPUs)."""
    import torch
    from transformers import AutoTokenizer

    from qa_serving.core.answering import answer
    from qa_serving.core.backends import load_backend
    from qa_serving.core.config import QAConfig

    torch.set_num_threads(available_cpus())
    config = QAConfig.from_model_dir(model_folder)
    tokenizer = AutoTokenizer.from_pretrained(model_folder, use_fast=True)
    be = load_backend(model_folder, backend="onnx" if backend.startswith("onnx") else "torch", device="cpu")
    qs = [eval_set.questions[i % len(eval_set)] for i in range(n)]
    cs = [eval_set.contexts[i % len(eval_set)] for i in range(n)]
    answer(be, tokenizer, list(zip(qs[:4], cs[:4])), config)  # warm-up
    t0 = time.perf_counter()
    for lo in range(0, n, chunk):
        answer(be, tokenizer, list(zip(qs[lo : lo + chunk], cs[lo : lo + chunk])), config)
    return n / (time.perf_counter() - t0)


# --- the run ------------------------------------------------------------------------------------------


def model_folder_for(backend: str, model_dir: Path, cache: Path) -> Path:
    if backend == "torch":
        return model_dir
    variants = export_variants(model_dir, cache / "onnx" / cache_name(model_dir))
    return variants[{"onnx-fp32": "fp32", "onnx-o2": "O2", "onnx-int8": "int8"}[backend]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model folder (default: random DistilBERT-base)")
    p.add_argument(
        "--size", default="base", choices=("base", "tiny"), help="size of the random default model"
    )
    p.add_argument("--backend", default="onnx-int8", choices=BACKENDS, help="what the workers run")
    p.add_argument("--eval-file", help="SQuAD-format file (default: eval articles of squad-v1.1-dev.part-a)")
    p.add_argument("--n", type=int, default=250, help="distinct questions the requests cycle through")
    p.add_argument("--long-share", type=float, default=0.25, help="share of questions given a long context")
    p.add_argument("--clients", default="1,8,32,64", help="concurrency levels")
    p.add_argument("--batch-sizes", default="1,8", help="TorchServe batchSize of each archive (1 = off)")
    p.add_argument("--max-batch-delay-ms", type=int, default=20, help="TorchServe maxBatchDelay")
    p.add_argument("--requests", type=int, default=128, help="requests per level (at least 2 per client)")
    p.add_argument("--duration", type=float, default=120.0, help="seconds per level at most")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request at most")
    p.add_argument(
        "--inproc-n", type=int, default=0, help="questions of the in-process reference (0: --requests)"
    )
    p.add_argument("--name", default="serve_load")
    p.add_argument("--results-dir", default=str(RESULTS_DIR))
    p.add_argument("--cache-dir", default=str(CACHE_DIR))
    p.add_argument("--quick", action="store_true", help="2 levels (1, 8 clients), 16 requests each")
    args = p.parse_args(argv)
    if args.quick:
        args.clients, args.requests, args.n = "1,8", min(args.requests, 16), min(args.n, 24)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; prints and writes the report, returns ``{"markdown", "rows", "path"}``."""
    from qa_serving.serving import HOST, Ports, build_archive, start_server

    args = parse_args(argv)
    started = time.perf_counter()
    info = machine_info()
    clients = [int(c) for c in args.clients.split(",")]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    cache = Path(args.cache_dir)
    model_dir = Path(args.model) if args.model else random_distilbert(args.size, cache)
    folder = model_folder_for(args.backend, model_dir, cache)
    eval_set = load_eval_set(args.eval_file, args.n, long_share=args.long_share)
    bodies = request_bodies(eval_set)
    inproc_n = args.inproc_n or args.requests

    def log(msg: str) -> None:
        print(f"[bench.serve_load] {msg}", file=sys.stderr, flush=True)

    # In-process reference, measured before the server starts and again after it stops; the higher of
    # the two counts, so load from other jobs on a shared machine cannot flatter the served share.
    inproc_runs: dict[int, list[float]] = {bs: [] for bs in batch_sizes}

    def measure_in_process(when: str) -> None:
        for bs in batch_sizes:
            log(f"in-process reference ({when}), {inproc_n} questions in chunks of {bs} ...")
            inproc_runs[bs].append(in_process_qps(folder, args.backend, eval_set, bs, inproc_n))

    measure_in_process("before the server")
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="serve-load-", dir=cache))
    store = work / "store"
    names = {bs: f"qa-b{bs}" for bs in batch_sizes}
    rows: list[dict[str, Any]] = []
    errors_seen: list[str] = []
    server = None
    startup_s = 0.0
    try:
        for bs, name in names.items():
            log(f"archiving {name} (batchSize {bs}) ...")
            build_archive(
                model_dir=folder,
                name=name,
                store=store,
                backend="onnx" if args.backend.startswith("onnx") else "torch",
                batch_size=bs,
                max_batch_delay_ms=args.max_batch_delay_ms,
                workers=1,
                response_timeout_s=int(args.timeout),
            )
        log("starting TorchServe ...")
        t0 = time.perf_counter()
        server = start_server(
            store=store, models=list(names.values()), run_dir=work / "run", ports=Ports.free(), timeout=600
        )
        startup_s = time.perf_counter() - t0
        headers = {"Content-Type": "application/json", **server.headers("inference")}
        for bs, name in names.items():
            path = f"/predictions/{name}"
            # Warm-up: the worker's first requests (allocators, ORT arenas) are not measured.
            run_level(HOST, server.ports.inference, path, headers, bodies, 2, 4, 60.0, args.timeout)
            for c in clients:
                n_requests = max(args.requests, 2 * c)
                log(f"{name}: {c} clients, {n_requests} requests ...")
                level = run_level(
                    HOST,
                    server.ports.inference,
                    path,
                    headers,
                    bodies,
                    c,
                    n_requests,
                    args.duration,
                    args.timeout,
                )
                row = level.row()
                row.update(batching="on" if bs > 1 else "off", batch_size=bs)
                rows.append(row)
                errors_seen += level.error_samples
    finally:
        if server is not None:
            log("stopping TorchServe ...")
            server.stop()
    shutil.rmtree(work, ignore_errors=True)
    measure_in_process("after the server")
    inproc = {bs: max(runs) for bs, runs in inproc_runs.items()}
    for row in rows:
        ref = inproc[row["batch_size"]]
        row.update(inproc_qps=ref, share=row["rps"] / ref if ref else None)

    table = markdown_table(
        rows,
        [
            Column("batching", "batching", align="left"),
            Column("batch_size", "batchSize"),
            Column("clients", "clients"),
            Column("sent", "requests"),
            Column("rps", "req/s", ".2f"),
            Column("p50_ms", "p50 ms", ".0f"),
            Column("p95_ms", "p95 ms", ".0f"),
            Column("p99_ms", "p99 ms", ".0f"),
            Column("errors", "errors"),
            Column("mean_batch", "mean batch", ".1f"),
            Column("inproc_qps", "in-process q/s", ".2f"),
            Column("share", "served / in-process", lambda v: f"{100 * v:.0f}%"),
        ],
    )
    wall = time.perf_counter() - started
    total_errors = sum(r["errors"] for r in rows)
    goals = [
        f"- error count 0: **{'met' if total_errors == 0 else 'NOT met'}** ({total_errors} errors"
        + (f"; e.g. {errors_seen[0]}" if errors_seen else "")
        + ")"
    ]
    for bs in batch_sizes:
        mine = [r for r in rows if r["batch_size"] == bs]
        if not mine:
            continue
        best = max(mine, key=lambda r: r["rps"])
        verdict = "met" if best["share"] and best["share"] >= TARGET_SHARE else "NOT met"
        goals.append(
            f"- served >= {100 * TARGET_SHARE:.0f}% of in-process throughput, batching "
            f"{'on' if bs > 1 else 'off'} (batchSize {bs}): **{verdict}** (best level {best['clients']} clients: "
            f"{best['rps']:.2f} req/s = {100 * best['share']:.0f}% of {best['inproc_qps']:.2f} q/s)"
        )
    what = (
        f"Model: {model_label(model_dir)}, served as {args.backend} ({folder.name}). One TorchServe on "
        f"127.0.0.1 (token auth), 1 worker per archive, maxBatchDelay {args.max_batch_delay_ms} ms, handler "
        f"threads = its default (usable CPUs // workers; ONNX Runtime: its default). Requests: one question each, "
        f"cycling through {len(eval_set)} questions of {eval_set.source} ({'; '.join(eval_set.notes)}). Each "
        f"level: max({args.requests}, 2 x clients) requests or {args.duration:g} s, closed-loop clients with "
        f"keep-alive connections; the load generator runs on the same machine as the server. In-process "
        f"reference: answer() over {inproc_n} of the same questions in chunks of batchSize questions, the "
        f"backend loaded as the handler loads it, on the same machine, once before the server started and "
        f"once after it stopped; the higher counts ("
        + ", ".join(
            f"batchSize {bs}: " + " / ".join(f"{q:.2f}" for q in runs) + " q/s"
            for bs, runs in inproc_runs.items()
        )
        + f"). Server start-up: {startup_s:.0f} s. Whole run: {wall:.0f} s."
    )
    sections = [what, table, "Targets:\n" + "\n".join(goals), machine_markdown(info)]
    results_dir = Path(args.results_dir)
    for metric, ylabel in (("rps", "requests / second"), ("p95_ms", "p95 latency, ms")):
        save_line_plot(
            results_dir / f"{args.name}-{metric.replace('_ms', '')}.png",
            clients,
            {
                f"batching {'on' if bs > 1 else 'off'} (batchSize {bs})": [
                    next((r[metric] for r in rows if r["batch_size"] == bs and r["clients"] == c), None)
                    for c in clients
                ]
                for bs in batch_sizes
            },
            title=f"TorchServe, {args.backend}: {ylabel} vs concurrent clients",
            xlabel="concurrent clients",
            ylabel=ylabel,
            logx=True,
        )
    path = write_report(args.name, "TorchServe under load", sections, results_dir)
    markdown = "\n\n".join(sections)
    print(markdown)
    return {"markdown": markdown, "table": table, "rows": rows, "path": path, "seconds": wall}


if __name__ == "__main__":
    main()
