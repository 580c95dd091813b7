"""The KServe runtime (``qa-serving serve --engine kserve``) on loopback, and its request batcher.

Without a server (about a second): the batcher shares batches between concurrent callers, answers a full
queue with 503 + Retry-After, a passed deadline with 504, and after close() refuses new requests while it
still answers the ones it took.

With real servers (two starts of the CLI in a subprocess, a tiny model from a config): answers over the
v1 JSON path, v2 REST and v2 gRPC equal the in-process ``pipeline("custom-qa")``; hostile bodies get a 4xx
JSON error and the server keeps answering; health, metrics and the OpenAPI document; a queue of 1 under a
burst gets 503 + Retry-After; SIGTERM during a burst of 40 requests: each ends with 200 or 503 (none
hangs or is reset) and the process exits 0. Skips when kserve is not installed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import REPO_ROOT, assert_same_answers, save_tiny_span_model

from qa_serving.serving.batcher import DeadlineExceeded, Draining, Overloaded, RequestBatcher

TEXTS = [
    "Shakespeare wrote Hamlet in 1600 while living in London.",
    "Marie Curie won the Nobel Prize in Physics in 1903 and in Chemistry in 1911.",
    "The cat sat on the mat. The dog slept in the garden near the old oak tree.",
]
QUESTIONS = ["Who wrote Hamlet?", "When did Curie win the prize?", "Where did the dog sleep?"]
LONG = " ".join(TEXTS * 6)  # several windows of the tiny model's 64 tokens


# --- the batcher, in-process --------------------------------------------------------------------------


def _run(coro):
    return asyncio.run(coro)


def test_concurrent_callers_share_a_batch():
    sizes = []

    def run(items):
        sizes.append(len(items))
        return [x * 2 for x in items]

    async def main():
        batcher = RequestBatcher(run, max_batch_size=8, max_wait_ms=50)
        return await asyncio.gather(*(batcher.submit(i) for i in range(20)))

    assert _run(main()) == [i * 2 for i in range(20)]
    assert max(sizes) == 8 and sum(sizes) == 20


def test_full_queue_deadline_and_drain():
    release = threading.Event()

    def slow(items):
        release.wait(5)
        return items

    async def main():
        batcher = RequestBatcher(slow, max_batch_size=1, max_wait_ms=0, max_queue=2, deadline_s=0.3)
        first = asyncio.ensure_future(batcher.submit("computing"))
        await asyncio.sleep(0.05)  # taken into a batch: the queue is empty again
        queued = [asyncio.ensure_future(batcher.submit(i)) for i in range(2)]
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded) as full:
            await batcher.submit("one too many")
        assert full.value.status == 503 and full.value.headers == {"Retry-After": "1"}
        for task in (first, *queued):  # all three pass their deadline: 504, not a hang
            with pytest.raises(DeadlineExceeded) as late:
                await task
            assert late.value.status == 504 and "deadline" in late.value.body()["error"]
        release.set()
        # After close(): new requests are refused, the ones already taken are answered.
        batcher2 = RequestBatcher(lambda xs: xs, max_batch_size=4, max_wait_ms=100)
        taken = asyncio.ensure_future(batcher2.submit("taken"))
        await asyncio.sleep(0.01)
        batcher2.close()
        with pytest.raises(Draining):
            await batcher2.submit("late")
        assert await taken == "taken" and await batcher2.drained(1)

    _run(main())


def test_the_kserve_manifests_run_this_runtime_with_valid_flags():
    yaml = pytest.importorskip("yaml")
    from qa_serving.cli.main import build_parser
    from qa_serving.serving.settings import SETTINGS

    for name in ("qa-runtime.yaml", "qa-runtime-canary.yaml"):
        service = yaml.safe_load((REPO_ROOT / "deploy" / "kserve" / name).read_text())
        predictor = service["spec"]["predictor"]
        [container] = predictor["containers"]
        assert container["command"][:3] == ["tini", "--", "qa-serving"]
        args = build_parser().parse_args([*container["command"][3:], *container["args"]])
        assert (args.engine, args.model, args.host) == ("kserve", "/mnt/models", "0.0.0.0")
        assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": args.http_port}
        assert container["ports"][0]["containerPort"] == args.http_port
        assert predictor["batcher"]["maxBatchSize"] <= SETTINGS["max_examples"].default
        assert args.grace_s < 30 and predictor["timeout"] > args.deadline_s  # pod grace, Knative timeout
    old = (REPO_ROOT / "deploy" / "kserve" / "inferenceservice.yaml").read_text()
    assert "kserve/kserve#5638" in old.split("apiVersion")[0]  # the TorchServe runtime's upstream status


def test_v2_body_reads_grpc_contents_raw_contents_and_parameters():
    pytest.importorskip("kserve", reason="kserve is not installed (pip install 'qa-serving[kserve]')")
    import numpy as np
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.infer_type import InferRequest, serialize_byte_tensor

    from qa_serving.serving.kserve_runtime import ServingError, v2_body

    def tensor(name, values, raw=False):
        contents = None if raw else pb.InferTensorContents(bytes_contents=[v.encode() for v in values])
        return pb.ModelInferRequest.InferInputTensor(name=name, datatype="BYTES", shape=[len(values)],
                                                     contents=contents)  # fmt: skip

    params = {"max_answer_len": pb.InferParameter(int64_param=5)}
    request = pb.ModelInferRequest(model_name="m", id="x", inputs=[tensor("question", ["Who?"]),
                                   tensor("context", ["Ada did."])], parameters=params)  # fmt: skip
    body = v2_body(InferRequest.from_grpc(request))
    assert body["id"] == "x" and body["parameters"] == {"max_answer_len": 5}
    assert [(t["name"], [bytes(d).decode() for d in t["data"]]) for t in body["inputs"]] == [
        ("question", ["Who?"]), ("context", ["Ada did."])]  # fmt: skip
    raw = [
        serialize_byte_tensor(np.array([v.encode()], dtype=np.object_)).item() for v in ("Who?", "Ada did.")
    ]
    request = pb.ModelInferRequest(model_name="m", inputs=[tensor("question", ["Who?"], raw=True),
                                   tensor("context", ["Ada did."], raw=True)], raw_input_contents=raw)  # fmt: skip
    body = v2_body(InferRequest.from_grpc(request))
    assert [[bytes(d).decode() for d in t["data"]] for t in body["inputs"]] == [["Who?"], ["Ada did."]]
    # Raw contents that do not decode as BYTES of that shape: a 400 (INVALID_ARGUMENT), not INTERNAL.
    for broken in (b"\xff\xff\xff\x7fabc", b"\x01"):
        request = pb.ModelInferRequest(model_name="m", inputs=[tensor("question", ["Who?"], raw=True),
                                       tensor("context", ["Ada did."], raw=True)], raw_input_contents=[broken, raw[1]])  # fmt: skip
        with pytest.raises(ServingError, match="raw_input_contents do not match") as caught:
            v2_body(InferRequest.from_grpc(request))
        assert caught.value.status == 400


# --- real servers --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Runtime:
    """A ``qa-serving serve --engine kserve`` subprocess on free loopback ports."""

    def __init__(self, model_dir: Path, log: Path, *flags: str) -> None:
        self.http, self.grpc, self.log = free_port(), free_port(), log
        cmd = [sys.executable, "-m", "qa_serving.cli.main", "serve", "--engine", "kserve", "--model",
               str(model_dir), "--name", "tiny", "--http-port", str(self.http), "--grpc-port", str(self.grpc),
               "--threads", "1", *flags]  # fmt: skip
        env = {**os.environ, "QA_MAX_CONTEXT_CHARS": "5000", "QA_ACCEPT_WINDOW_S": "3"}
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.http}"
        self.wait_ready()

    def wait_ready(self, timeout: float = 180) -> None:
        import requests

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                pytest.fail(f"the KServe runtime exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if requests.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        pytest.fail(f"the KServe runtime was not ready after {timeout:.0f} s:\n{self.tail()}")

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_span_model(tmp_path_factory.mktemp("kserve_model"), TEXTS)


@pytest.fixture(scope="module")
def reference(model_dir):
    from transformers import pipeline

    import qa_serving  # noqa: F401  (registers custom-qa)

    return pipeline("custom-qa", model=str(model_dir), tokenizer=str(model_dir))


@pytest.fixture(scope="module")
def runtime(model_dir, tmp_path_factory):
    pytest.importorskip("kserve", reason="kserve is not installed (pip install 'qa-serving[kserve]')")
    server = Runtime(model_dir, tmp_path_factory.mktemp("kserve_log") / "server.log",
                     "--batch-size", "8", "--max-batch-delay-ms", "20", "--grace", "20")  # fmt: skip
    try:
        yield server
    finally:
        server.stop()


def post(url: str, body=None, raw: bytes | None = None, timeout: float = 60):
    import requests

    data = raw if raw is not None else json.dumps(body).encode()
    return requests.post(url, data=data, headers={"Content-Type": "application/json"}, timeout=timeout)


def v2_body(questions: list[str], contexts: list[str], **extra) -> dict:
    return {"inputs": [
        {"name": "question", "datatype": "BYTES", "shape": [len(questions)], "data": questions},
        {"name": "context", "datatype": "BYTES", "shape": [len(contexts)], "data": contexts},
    ], **extra}  # fmt: skip


def columns_to_answers(columns: dict) -> list[dict]:
    n = len(columns["answer"])
    return [{k: columns[k][i] for k in ("answer", "score", "start", "end")} for i in range(n)]


def test_json_on_the_v1_path_matches_the_pipeline(runtime, reference):
    url = f"{runtime.url}/v1/models/tiny:predict"
    reply = post(url, {"question": QUESTIONS[0], "context": TEXTS[0]})
    assert reply.status_code == 200, reply.text
    assert_same_answers(reply.json(), reference(question=QUESTIONS[0], context=TEXTS[0]))
    items = [{"question": q, "context": c} for q, c in zip(QUESTIONS, TEXTS)] + [
        {"question": QUESTIONS[1], "context": LONG, "top_k": 2}
    ]
    reply = post(url, items)
    want = [reference(question=q, context=c) for q, c in zip(QUESTIONS, TEXTS)]
    want.append(reference(question=QUESTIONS[1], context=LONG, top_k=2))
    assert reply.status_code == 200 and len(reply.json()) == 4
    assert_same_answers(reply.json(), want)
    # KServe's v1 envelope (what KServe's batcher sidecar sends): instances in, predictions out.
    reply = post(url, {"instances": items})
    assert reply.status_code == 200 and list(reply.json()) == ["predictions"]
    assert_same_answers(reply.json()["predictions"], want)


def test_v2_rest_matches_the_pipeline(runtime, reference):
    body = v2_body(QUESTIONS + [QUESTIONS[1]], TEXTS + [LONG], id="req-7", parameters={"max_answer_len": 5})
    reply = post(f"{runtime.url}/v2/models/tiny/infer", body)
    assert reply.status_code == 200, reply.text
    out = reply.json()
    assert out["id"] == "req-7" and out["model_name"] == "tiny"
    assert {o["name"]: o["datatype"] for o in out["outputs"]} == {
        "answer": "BYTES", "score": "FP32", "start": "INT64", "end": "INT64"}  # fmt: skip
    got = columns_to_answers({o["name"]: o["data"] for o in out["outputs"]})
    want = [
        reference(question=q, context=c, max_answer_len=5)
        for q, c in zip(QUESTIONS + [QUESTIONS[1]], TEXTS + [LONG])
    ]
    assert_same_answers(got, want)


def test_v2_grpc_matches_the_pipeline(runtime, reference):
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as stubs

    def tensor(name, values):
        return pb.ModelInferRequest.InferInputTensor(
            name=name, datatype="BYTES", shape=[len(values)],
            contents=pb.InferTensorContents(bytes_contents=[v.encode() for v in values]),
        )  # fmt: skip

    with grpc.insecure_channel(f"127.0.0.1:{runtime.grpc}") as channel:
        stub = stubs.GRPCInferenceServiceStub(channel)
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
        request = pb.ModelInferRequest(model_name="tiny", id="g-1",
                                       inputs=[tensor("question", QUESTIONS), tensor("context", TEXTS)])  # fmt: skip
        reply = stub.ModelInfer(request, timeout=60)
        columns = {}
        for out in reply.outputs:
            c = out.contents
            columns[out.name] = (
                [b.decode() for b in c.bytes_contents] if out.datatype == "BYTES"
                else list(c.fp32_contents) if out.datatype == "FP32" else list(c.int64_contents)
            )  # fmt: skip
        assert reply.id == "g-1"
        assert_same_answers(
            columns_to_answers(columns), [reference(question=q, context=c) for q, c in zip(QUESTIONS, TEXTS)]
        )
        bad = pb.ModelInferRequest(model_name="tiny", inputs=[tensor("question", ["Who?"])])
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(bad, timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "context" in err.value.details()
        assert stub.ModelInfer(request, timeout=60).outputs  # still serving


def test_hostile_bodies_get_a_4xx_json_error_and_the_server_keeps_answering(runtime):
    v1, v2 = f"{runtime.url}/v1/models/tiny:predict", f"{runtime.url}/v2/models/tiny/infer"
    good = v2_body(QUESTIONS[:1], TEXTS[:1])
    wrong_type = json.loads(json.dumps(good))
    wrong_type["inputs"][0].update(datatype="FP32", data=[1.5])
    mismatch = json.loads(json.dumps(good))
    mismatch["inputs"][0]["shape"] = [3]
    deep = b"[" * 5000 + b"]" * 5000
    huge = json.dumps({"question": "Who?", "context": "x" * 20_000_000}).encode()
    cases = [
        (v1, b'{"question": "Who?", "context": '), (v2, b'{"inputs": [{"name": "question"'),
        (v1, deep), (v2, deep), (v1, b'{"a":' * 5000 + b"1" + b"}" * 5000),
        (v2, json.dumps(wrong_type).encode()), (v2, json.dumps(mismatch).encode()),
        (v1, json.dumps({"question": "Who?", "context": ""}).encode()), (v1, b"[]"),
        (v1, huge), (v2, json.dumps(v2_body(["Who?"], ["x" * 20_000_000])).encode()),
    ]  # fmt: skip
    for url, raw in cases:
        reply = post(url, raw=raw)
        assert 400 <= reply.status_code < 500, (url, raw[:60], reply.status_code, reply.text[:300])
        body = reply.json()
        assert "error" in body or "detail" in body, body
    assert post(v1, raw=huge).status_code == 413
    assert post(v2, good).status_code == 200


def test_health_metrics_and_openapi(runtime):
    import requests

    from qa_serving.serving.openapi import openapi_spec, openapi_text

    assert requests.get(f"{runtime.url}/v2/health/live", timeout=10).status_code == 200
    assert requests.get(f"{runtime.url}/v2/health/ready", timeout=10).json() == {"ready": True}
    assert requests.get(f"{runtime.url}/v2/models/tiny/ready", timeout=10).status_code == 200
    spec = requests.get(f"{runtime.url}/v1/models/tiny/openapi.json", timeout=10).json()
    assert spec == openapi_spec()  # served = generated from the options table
    assert (REPO_ROOT / "docs" / "openapi.json").read_text() == openapi_text(), (
        "docs/openapi.json is stale: python -m qa_serving.serving.openapi > docs/openapi.json"
    )
    # Concurrent requests share forward passes: some batch holds more than one request.
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda i: post(f"{runtime.url}/v1/models/tiny:predict",
                                               {"question": QUESTIONS[i % 3], "context": LONG}), range(32)))  # fmt: skip
    assert all(r.status_code == 200 for r in replies)
    metrics = requests.get(f"{runtime.url}/metrics", timeout=10).text
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in metrics.splitlines()
        if line.startswith("qa_")
    }
    assert values['qa_questions_total{model_name="tiny"}'] >= 32
    assert values['qa_windows_total{model_name="tiny"}'] > values['qa_questions_total{model_name="tiny"}']
    batches = values['qa_batch_size_count{model_name="tiny"}']
    assert values['qa_batch_size_sum{model_name="tiny"}'] / batches > 1.0  # batched
    assert "request_predict_seconds" in metrics  # KServe's own


def test_sigterm_during_a_burst_answers_every_request_and_exits_0(runtime):
    """Runs last in the module: it stops the module's server."""
    import requests

    results: list = [None] * 40

    def send(i: int) -> None:
        try:
            reply = post(f"{runtime.url}/v1/models/tiny:predict", {"question": QUESTIONS[i % 3], "context": LONG},
                         timeout=60)  # fmt: skip
            results[i] = (reply.status_code, reply.headers.get("Retry-After"), reply.json())
        except requests.RequestException as err:  # a reset or a hang: the failure this test is about
            results[i] = err

    threads = [threading.Thread(target=send, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    end = time.monotonic() + 60
    while all(r is None for r in results) and time.monotonic() < end:  # the server is busy with the burst
        time.sleep(0.005)
    runtime.proc.send_signal(signal.SIGTERM)
    while requests.get(f"{runtime.url}/v2/health/ready", timeout=30).status_code == 200:  # signal handled
        time.sleep(0.01)
    late = post(f"{runtime.url}/v1/models/tiny:predict", {"question": "Who?", "context": TEXTS[0]})
    assert late.status_code == 503 and late.headers["Retry-After"] and "shutting down" in late.json()["error"]
    for t in threads:
        t.join(90)
    assert runtime.proc.wait(60) == 0, runtime.tail()
    assert all(isinstance(r, tuple) for r in results), [r for r in results if not isinstance(r, tuple)]
    assert {status for status, _, _ in results} <= {200, 503}
    assert sum(status == 200 for status, _, _ in results) > 0
    assert all(retry for status, retry, _ in results if status == 503)


def test_a_full_queue_gets_503_with_retry_after(model_dir, tmp_path):
    pytest.importorskip("kserve", reason="kserve is not installed (pip install 'qa-serving[kserve]')")
    server = Runtime(model_dir, tmp_path / "server.log", "--batch-size", "1", "--max-batch-delay-ms", "0",
                     "--job-queue-size", "1")  # fmt: skip
    try:
        body = [{"question": QUESTIONS[i % 3], "context": LONG} for i in range(8)]
        with ThreadPoolExecutor(24) as pool:
            replies = list(pool.map(lambda _: post(f"{server.url}/v1/models/tiny:predict", body), range(24)))
        statuses = [r.status_code for r in replies]
        assert set(statuses) <= {200, 503} and 503 in statuses and 200 in statuses, statuses
        full = next(r for r in replies if r.status_code == 503)
        assert int(full.headers["Retry-After"]) >= 1 and "job_queue_size" in full.json()["error"]
        assert post(f"{server.url}/v1/models/tiny:predict", body[:1]).status_code == 200  # recovers
    finally:
        server.stop()
    assert server.proc.returncode == 0
