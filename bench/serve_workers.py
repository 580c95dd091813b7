"""Served questions/s with 1 and 2 CPU workers: a bounded loopback load against a real TorchServe.

For each configuration (workers x torch threads per worker) the same archive is served with
``qa-serving serve`` overrides, every worker is waited for, a few warm-up requests are sent, then
``--requests`` single-question requests are sent by ``--concurrency`` client threads (each with a timeout;
the run stops at ``--max-seconds``). Prints a markdown table (questions/s, latency percentiles, errors)
and the machine's load, because on a shared machine the figures move with it.

    python bench/serve_workers.py                           # scratch "small" BERT, 1x2 and 2x1
    python bench/serve_workers.py --model runs/model --configs 1x2 2x1 2x2 --requests 400

Deliberate simplifications: one question per request (the handler batches requests, not the client);
questions and contexts from the synthetic SQuAD generator (contexts of 1-3 windows of 384 tokens); with
no ``--model``, an untrained scratch BERT (speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qa_serving.core.hardware import available_cpus, cpu_model
from qa_serving.serving import Ports, build_archive, start_server
from qa_serving.tables import Column, markdown_table


def scratch_model_dir(root: Path, size: str, examples: list[dict]) -> Path:
    """An untrained scratch BERT of ``size`` with a tokenizer trained on the examples' texts."""
    from qa_serving.core.config import QAConfig
    from qa_serving.training.scratch import scratch_model, train_wordpiece_tokenizer

    texts = list(dict.fromkeys(e["context"] for e in examples)) + [e["question"] for e in examples]
    tokenizer = train_wordpiece_tokenizer(texts, vocab_size=4000)
    path = root / f"scratch-{size}"
    scratch_model(tokenizer, size, seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    QAConfig(max_length=384, doc_stride=128, batch_size=16).save(path)
    return path


def synthetic_examples(root: Path, articles: int = 40) -> list[dict]:
    from qa_serving.data.synthetic import write_squad

    data = json.loads(write_squad(root / "bench.json", n_articles=articles, seed=7).read_text())
    return [
        {"question": qa["question"], "context": para["context"]}
        for article in data["data"]
        for para in article["paragraphs"]
        for qa in para["qas"]
    ]


def load(url: str, headers: dict, examples: list[dict], n: int, concurrency: int, max_seconds: float) -> dict:
    """Send ``n`` requests with ``concurrency`` threads; latency and status of each."""
    import requests

    lock, cursor, results = threading.Lock(), [0], []
    deadline = time.monotonic() + max_seconds

    def worker() -> None:
        with requests.Session() as session:
            while time.monotonic() < deadline:
                with lock:
                    i = cursor[0]
                    cursor[0] += 1
                if i >= n:
                    return
                sent = time.monotonic()
                try:
                    reply = session.post(url, json=examples[i % len(examples)], headers=headers, timeout=60)
                    status = reply.status_code
                except requests.RequestException as err:
                    status = type(err).__name__
                results.append((time.monotonic() - sent, status))

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    ok = sorted(s for s, status in results if status == 200)
    pct = lambda q: 1000 * ok[min(len(ok) - 1, int(q * len(ok)))] if ok else float("nan")
    return {
        "requests": len(results),
        "ok": len(ok),
        "errors": len(results) - len(ok),
        "seconds": round(wall, 2),
        "questions_per_s": round(len(ok) / wall, 2),
        "p50_ms": round(pct(0.50), 1),
        "p95_ms": round(pct(0.95), 1),
        "mean_ms": round(1000 * statistics.fmean(ok), 1) if ok else float("nan"),
    }


def wait_workers(server, model: str, n: int, timeout: float = 300) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = requests.get(
            f"{server.management_url}/models/{model}", headers=server.headers("management"), timeout=10
        )
        if sum(w["status"] == "READY" for w in reply.json()[0]["workers"]) >= n:
            return
        time.sleep(0.5)
    raise TimeoutError(f"{n} workers of {model} not ready after {timeout}s")


def run_config(store: Path, root: Path, workers: int, threads: int, args, examples: list[dict]) -> dict:
    overrides = {"workers": workers, "threads": threads, "batch_size": args.batch_size,
                 "max_batch_delay_ms": args.max_batch_delay_ms}  # fmt: skip
    server = start_server(store=store, models=["bench"], run_dir=root / f"run-{workers}x{threads}",
                          ports=Ports.free(), overrides=overrides)  # fmt: skip
    try:
        wait_workers(server, "bench", workers)
        url = f"{server.inference_url}/predictions/bench"
        headers = {"Content-Type": "application/json", **server.headers("inference")}
        load(url, headers, examples, 2 * args.concurrency, args.concurrency, 60)  # warm-up
        load_before = os.getloadavg()[0]
        result = load(url, headers, examples, args.requests, args.concurrency, args.max_seconds)
        return {"workers": workers, "threads": threads, **result, "load_avg_1m": round(load_before, 2)}
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model folder to serve (default: an untrained scratch BERT, --size)")
    p.add_argument("--size", default="small", choices=["tiny", "small", "medium"], help="scratch model size")
    p.add_argument("--configs", nargs="+", default=["1x2", "2x1"], help="WORKERSxTHREADS (default: 1x2 2x1)")
    p.add_argument("--requests", type=int, default=300, help="requests per configuration (default: 300)")
    p.add_argument("--concurrency", type=int, default=8, help="client threads (default: 8)")
    p.add_argument("--batch-size", type=int, default=8, help="TorchServe batchSize (default: 8)")
    p.add_argument("--max-batch-delay-ms", type=int, default=20, help="maxBatchDelay (default: 20)")
    p.add_argument("--max-seconds", type=float, default=120, help="stop a configuration's load after this")
    p.add_argument("--out", help="also write the results as JSON here")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="qa-bench-") as tmp:
        root = Path(tmp)
        examples = synthetic_examples(root)
        model = Path(args.model) if args.model else scratch_model_dir(root, args.size, examples)
        store = build_archive(model_dir=model, name="bench", store=root / "store").parent
        rows = []
        for config in args.configs:
            workers, threads = (int(x) for x in config.lower().split("x"))
            rows.append(run_config(store, root, workers, threads, args, examples))
            print(f"done {config}: {rows[-1]}", file=sys.stderr, flush=True)

    cores = available_cpus()
    print(f"\nModel: {args.model or f'scratch BERT {args.size} (untrained)'}, max_length 384; "
          f"{args.requests} requests, {args.concurrency} concurrent clients, batchSize {args.batch_size}, "
          f"maxBatchDelay {args.max_batch_delay_ms} ms; {cores} CPU cores ({cpu_model()}), "
          f"load average before each run in the table.\n")  # fmt: skip
    columns = [Column("config", "workers x threads", align="left"), Column("questions_per_s", "questions/s"),
               Column("p50_ms", "p50 ms"), Column("p95_ms", "p95 ms"), Column("errors", "errors"),
               Column("load_avg_1m", "load avg")]  # fmt: skip
    table = [{**r, "config": f"{r['workers']} x {r['threads']}", "errors": f"{r['errors']}/{r['requests']}"}
             for r in rows]  # fmt: skip
    print(markdown_table(table, columns))
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "cores": cores, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
