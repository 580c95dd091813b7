"""Scaling out the server: serve-time overrides of model-config.yaml, threads per worker, KServe v2
(Open Inference Protocol) bodies, the container's gateway, and worker recovery on a real TorchServe.

Without a server (seconds): the override mapping and archive rewrite, the CPU count under a cgroup
quota, a batch mixing v2 and plain JSON requests through the handler, and
deploy/gateway.py against a fake TorchServe (client key from a secret file, TorchServe key renewal,
504 at the deadline).

With a server (marker ``serve``, ~60-80 s on 2 busy cores, most of it two workers loading twice): an
archive built with 1 worker and batch 8 is served with ``workers=2, threads=1, batch_size=4`` overrides;
v2 requests at ``/v2/models/<name>/infer``, directly and through the gateway; then, under a bounded
loopback load through the gateway, one worker is SIGKILLed: TorchServe restarts it, only requests of the
killed worker's batch fail, with HTTP 500/507 "Worker died.", and after the restart the other original
worker is killed too, so the answers that follow come from the new worker alone. The gateway's deadline
turns a request TorchServe dropped (it can, when a worker dies while it collects that worker's next
batch) into a 504: clients always get a status, never a hang.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("ts", reason="TorchServe is not installed (pip install 'qa-serving[serve]')")
yaml = pytest.importorskip("yaml")

import psutil
from conftest import assert_same_answers, save_tiny_span_model, send_json
from qa_serving.handlers.qa_handler import QAHandler
from transformers import pipeline

import qa_serving  # noqa: F401  (registers custom-qa)
from qa_serving.core.hardware import available_cpus
from qa_serving.errors import QAError
from qa_serving.serving import apply_overrides, override_archive
from qa_serving.serving.request import Limits
from qa_serving.serving.v2_api import parse_v2

TEXTS = [
    "Shakespeare wrote Hamlet in 1600 while living in London.",
    "Marie Curie won the Nobel Prize in Physics in 1903 and in Chemistry in 1911.",
    "The cat sat on the mat. The dog slept in the garden near the old oak tree.",
]
QUESTIONS = ["Who wrote Hamlet?", "When did Curie win the prize?", "Where did the dog sleep?"]


def v2_body(questions: list[str], contexts: list[str], **extra) -> dict:
    return {
        "inputs": [
            {"name": "question", "datatype": "BYTES", "shape": [len(questions)], "data": questions},
            {"name": "context", "datatype": "BYTES", "shape": [len(contexts)], "data": contexts},
        ],
        **extra,
    }


def v2_answers(response: dict) -> list[dict]:
    """The v2 response's output tensors back as the pipeline's answer dicts."""
    columns = {o["name"]: o["data"] for o in response["outputs"]}
    n = len(columns["answer"])
    assert all(o["shape"] == [n] for o in response["outputs"])
    return [{k: columns[k][i] for k in ("answer", "score", "start", "end")} for i in range(n)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_span_model(tmp_path_factory.mktemp("scaleout_model"), TEXTS)


@pytest.fixture(scope="module")
def reference(model_dir):
    return pipeline("custom-qa", model=str(model_dir), tokenizer=str(model_dir))


# --- without a server ------------------------------------------------------------------------------


def test_overrides_map_serve_flags_to_model_config_keys():
    base = {"minWorkers": 1, "maxWorkers": 1, "batchSize": 8, "handler": {"backend": "torch", "threads": 0}}
    got = apply_overrides(base, workers=2, batch_size=4, max_batch_delay_ms=0, threads=1, gpu_ids=[0, 1],
                          device="auto", response_timeout_s=30, )  # fmt: skip
    assert got == {
        "minWorkers": 2, "maxWorkers": 2, "batchSize": 4, "maxBatchDelay": 0, "deviceIds": [0, 1],
        "responseTimeout": 30, "handler": {"backend": "torch", "threads": 1, "device": "auto"},
    }  # fmt: skip
    assert base["handler"]["threads"] == 0  # the input is not modified
    assert apply_overrides(base, workers=None, threads=None) == base
    for bad in ({"workers": 0}, {"batch_size": "4"}, {"max_batch_delay_ms": -1}, {"gpu_ids": []},
                {"gpu_ids": [-1]}, {"device": "cuda"}, {"threads": True}, {"replicas": 2}):  # fmt: skip
        with pytest.raises(QAError):
            apply_overrides(base, **bad)


def test_override_archive_rewrites_only_model_config(tmp_path):
    src = tmp_path / "m.mar"
    manifest = {"model": {"modelName": "m", "handler": "qa_handler.py", "configFile": "model-config.yaml"}}
    weights = os.urandom(200_000)
    with zipfile.ZipFile(src, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))
        zf.writestr("model-config.yaml", yaml.safe_dump({"minWorkers": 1, "batchSize": 8, "handler": {}}))
        zf.writestr("model/model.safetensors", weights)
    before = src.read_bytes()
    dest = override_archive(src, tmp_path / "served" / "m.mar", workers=3, threads=2)
    assert src.read_bytes() == before
    with zipfile.ZipFile(dest) as zf:
        assert zf.read("model/model.safetensors") == weights
        assert json.loads(zf.read("MAR-INF/MANIFEST.json")) == manifest
        config = yaml.safe_load(zf.read("model-config.yaml"))
    assert config == {"minWorkers": 3, "batchSize": 8, "handler": {"threads": 2}, "maxWorkers": 3}
    no_config = tmp_path / "old.mar"
    with zipfile.ZipFile(no_config, "w") as zf:
        zf.writestr("MAR-INF/MANIFEST.json", json.dumps({"model": {"modelName": "old"}}))
    with pytest.raises(QAError, match="no model-config.yaml"):
        override_archive(no_config, tmp_path / "x.mar", workers=2)


def test_available_cpus_respects_a_cgroup_quota(tmp_path, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)), raising=False)
    v2 = tmp_path / "v2"
    v2.mkdir()
    assert available_cpus(v2) == 16  # no quota file
    (v2 / "cpu.max").write_text("max 100000\n")
    assert available_cpus(v2) == 16
    (v2 / "cpu.max").write_text("200000 100000\n")  # docker --cpus 2 / a 2-CPU Kubernetes limit
    assert available_cpus(v2) == 2
    (v2 / "cpu.max").write_text("50000 100000\n")
    assert available_cpus(v2) == 1
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("400000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(v1) == 4


# v2 parsing and response shapes without a handler: tests/test_protocol.py


def test_a_batch_mixing_v2_and_json_requests(model_dir, reference):
    import ts
    from ts.context import Context, RequestProcessor
    from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

    metrics = MetricsCacheYamlImpl(str(Path(ts.__file__).parent / "configs" / "metrics.yaml"))
    metrics.initialize_cache()
    context = Context("tiny", str(model_dir), {"model": {"modelName": "tiny", "modelVersion": "1.0"}}, 8, None,
                      "0.12.0", metrics=metrics, model_yaml_config={"maxWorkers": 1, "handler": {}})  # fmt: skip
    handler = QAHandler()
    handler.initialize(context)
    rows = [
        {"body": v2_body(QUESTIONS[:2], TEXTS[:2], id="a")},
        {"body": {"question": QUESTIONS[2], "context": TEXTS[2]}},
        {"body": json.dumps(v2_body(QUESTIONS[:1], [""])).encode()},
        {"body": v2_body(QUESTIONS[2:], TEXTS[2:])},
    ]
    context.request_processor = [RequestProcessor({}) for _ in rows]
    context.request_ids = {i: f"req-{i}" for i in range(len(rows))}
    context.metrics.request_ids = context.request_ids
    out = handler.handle(rows, context)
    statuses = [context.get_response_status(i)[0] for i in range(len(rows))]
    assert statuses == [200, 200, 400, 200]
    assert out[0]["id"] == "a" and out[0]["model_name"] == "tiny"
    for got, q, c in zip(v2_answers(out[0]) + [out[1]] + v2_answers(out[3]), QUESTIONS, TEXTS):
        assert_same_answers(got, reference(question=q, context=c))
    assert "example 0: 'context' is empty" in out[2]["error"]


# --- the container's gateway (deploy/gateway.py) against a fake TorchServe --------------------------

REPO_ROOT = Path(__file__).resolve().parent.parent
CLIENT_KEY = "client-key-from-a-secret-0123456789"


def load_gateway():
    spec = importlib.util.spec_from_file_location("qa_gateway", REPO_ROOT / "deploy" / "gateway.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def serve_in_thread(server) -> str:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return f"{host}:{port}"


class FakeTorchServe(BaseHTTPRequestHandler):
    """TorchServe 0.12's key behaviour: 400 InvalidKeyException for an expired inference key, POST /token
    renews it (rewriting key_file.json); /predictions/slow never answers (a request TorchServe dropped)."""

    protocol_version = "HTTP/1.1"
    run_dir: Path
    valid: dict  # the keys TorchServe holds in memory
    release: threading.Event

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        keys = json.loads((self.run_dir / "key_file.json").read_text())
        auth = self.headers.get("Authorization")
        if self.path.startswith("/token"):
            assert auth == f"Bearer {keys['API']['key']}"
            keys["inference"]["key"] = self.valid["inference"] = "renewed-inference-key"
            (self.run_dir / "key_file.json").write_text(json.dumps(keys))
            return self._send(200, {"message": "renewed"})
        if auth != f"Bearer {self.valid['inference']}":
            return self._send(400, {"code": 400, "type": "InvalidKeyException", "message": "expired"})
        if self.path == "/predictions/slow":
            self.release.wait(30)
        self._send(200, {"answer": "Ada", "path": self.path})

    def _send(self, status, obj):
        send_json(self, status, obj, {"x-qa-batch-size": "1"})

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_gateway(tmp_path):
    import requests

    gateway = load_gateway()
    (tmp_path / "key_file.json").write_text(
        json.dumps({k: {"key": f"{k}-key"} for k in ("inference", "management", "API")})
    )
    (tmp_path / "secret").write_text(CLIENT_KEY + "\n")
    state = {"run_dir": tmp_path, "valid": {"inference": "inference-key"}, "release": threading.Event()}
    fake = ThreadingHTTPServer(("127.0.0.1", 0), type("Fake", (FakeTorchServe,), state))
    upstream_address = serve_in_thread(fake)
    upstream = gateway.TorchServe(tmp_path, upstream_address, upstream_address, deadline=2.0)
    server = gateway.make_server("127.0.0.1:0", upstream, gateway.ClientKey(str(tmp_path / "secret")))
    url = "http://" + serve_in_thread(server)
    try:
        yield url, tmp_path, requests, state
    finally:
        state["release"].set()
        server.shutdown()
        fake.shutdown()


def test_gateway_checks_the_client_key_and_renews_torchserve_keys(fake_gateway):
    url, run_dir, requests, state = fake_gateway
    good = {"Authorization": f"Bearer {CLIENT_KEY}"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": CLIENT_KEY}):
        reply = requests.post(f"{url}/predictions/qa", json={}, headers=headers, timeout=10)
        assert reply.status_code == 401 and reply.json()["error"] == "missing or wrong API key"
    reply = requests.post(f"{url}/predictions/qa", json={}, headers=good, timeout=10)
    assert reply.status_code == 200 and reply.json()["answer"] == "Ada"
    assert reply.headers["x-qa-batch-size"] == "1"
    # TorchServe's inference key expired: the gateway renews it with the API key and retries.
    state["valid"]["inference"] = None
    reply = requests.post(f"{url}/v2/models/qa/infer", json={}, headers=good, timeout=10)
    assert reply.status_code == 200, reply.text
    assert json.loads((run_dir / "key_file.json").read_text())["inference"]["key"] == "renewed-inference-key"
    # The secret file is re-read when it changes (a rotated Kubernetes secret).
    time.sleep(0.01)
    (run_dir / "secret").write_text("a-new-client-key-0123456789")
    assert requests.post(f"{url}/predictions/qa", json={}, headers=good, timeout=10).status_code == 401
    new = {"Authorization": "Bearer a-new-client-key-0123456789"}
    assert requests.post(f"{url}/predictions/qa", json={}, headers=new, timeout=10).status_code == 200
    # Only the inference API goes through.
    for method, path in (
        ("GET", "/models"),
        ("POST", "/models?url=x.mar"),
        ("GET", "/metrics"),
        ("POST", "/token"),
        ("GET", "/v2/models/qa"),
    ):
        assert requests.request(method, url + path, headers=new, timeout=10).status_code == 404


def test_gateway_answers_504_when_torchserve_never_answers(fake_gateway):
    url, _, requests, _ = fake_gateway
    reply = requests.post(f"{url}/predictions/slow", json={}, headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                          timeout=30)  # fmt: skip
    assert reply.status_code == 504 and "did not answer within 2s" in reply.json()["error"]  # not a hang


def test_gateway_needs_a_key_to_start(tmp_path, monkeypatch):
    gateway = load_gateway()
    monkeypatch.delenv("QA_API_KEY", raising=False)
    with pytest.raises(SystemExit, match="no client key"):
        gateway.ClientKey(None, None)
    (tmp_path / "short").write_text("abc")
    with pytest.raises(SystemExit, match="shorter than 16"):
        gateway.ClientKey(str(tmp_path / "short"))
    with pytest.raises(SystemExit, match="does not exist"):
        gateway.ClientKey(str(tmp_path / "missing"))
    # The image's default secret path, no secret mounted, the key in the environment instead.
    key = gateway.ClientKey(str(tmp_path / "missing"), CLIENT_KEY)
    assert key.accepts(f"Bearer {CLIENT_KEY}") and not key.accepts("Bearer x")


def test_gateway_watch_sees_whether_torchserve_runs(tmp_path):
    gateway = load_gateway()
    assert not gateway.torchserve_alive(tmp_path)  # no server.json
    (tmp_path / "server.json").write_text(json.dumps({"pid": os.getpid()}))
    assert not gateway.torchserve_alive(tmp_path)  # a live pid, but not TorchServe's java


def test_kserve_files_agree_with_each_other():
    root = REPO_ROOT / "deploy" / "kserve"
    props = dict(
        line.split("=", 1) for line in (root / "config.properties").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )  # fmt: skip
    snapshot = json.loads(props["model_snapshot"])
    [(name, versions)] = snapshot["models"].items()
    assert versions["1.0"]["marName"] == f"{name}.mar" and props["model_store"] == "/mnt/models/model-store"
    assert "service_envelope" not in props  # the handler parses v2 bodies; the envelope would break batching
    service = yaml.safe_load((root / "inferenceservice.yaml").read_text())
    model = service["spec"]["predictor"]["model"]
    assert (model["modelFormat"]["name"], model["protocolVersion"]) == ("pytorch", "v2")
    assert service["metadata"]["name"] == name
    request = parse_v2(json.loads((root / "request-v2.json").read_text()), Limits())
    assert len(request.examples) == 2 and request.v2.id == "qa-example-1"


# --- with a real TorchServe ------------------------------------------------------------------------

BATCH_SIZE, WORKERS = 4, 2


def _needs_server():
    pytest.importorskip("model_archiver", reason="torch-model-archiver is not installed")
    if shutil.which("java") is None:
        pytest.skip("TorchServe needs Java 17 (no `java` on PATH)")


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir):
    _needs_server()
    from qa_serving.serving import Ports, build_archive, start_server

    root = tmp_path_factory.mktemp("scaleout")
    # Archived for 1 worker and batches of 8; served with 2 single-thread workers and batches of 4.
    archive = build_archive(model_dir=model_dir, name="tiny", store=root / "store", batch_size=8, max_batch_delay_ms=20, workers=1)
    overrides = {"workers": WORKERS, "threads": 1, "batch_size": BATCH_SIZE, "max_batch_delay_ms": 5}
    srv = start_server(store=archive.parent, models=["tiny"], run_dir=root / "run", ports=Ports.free(), timeout=180,
                       overrides=overrides)  # fmt: skip
    try:
        wait_workers(srv, WORKERS, timeout=120)
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def gateway_url(server):
    """deploy/gateway.py in front of the real server (a 10 s deadline), as in the container."""
    gateway = load_gateway()
    upstream = gateway.TorchServe(server.run_dir, f"127.0.0.1:{server.ports.inference}",
                                  f"127.0.0.1:{server.ports.management}", deadline=10.0)  # fmt: skip
    proxy = gateway.make_server("127.0.0.1:0", upstream, gateway.ClientKey(value=CLIENT_KEY))
    url = "http://" + serve_in_thread(proxy)
    yield url
    proxy.shutdown()


def model_status(server) -> dict:
    import requests

    reply = requests.get(
        f"{server.management_url}/models/tiny", headers=server.headers("management"), timeout=10
    )
    reply.raise_for_status()
    return reply.json()[0]


def wait_workers(server, n: int, timeout: float, gone: set[int] = frozenset()) -> list[dict]:
    """Wait until ``n`` workers are READY, none of them with a pid in ``gone``; returns them."""
    deadline = time.monotonic() + timeout
    while True:
        workers = model_status(server)["workers"]
        ready = [w for w in workers if w["status"] == "READY" and int(w["pid"]) not in gone]
        if len(ready) >= n:
            return ready
        if time.monotonic() > deadline:
            pytest.fail(f"{n} READY workers expected within {timeout:.0f}s, got {workers}")
        time.sleep(0.25)


def processes_of(run_dir: Path) -> list[int]:
    """TorchServe processes started for ``run_dir`` (java and workers name paths inside it)."""
    return [
        p.pid for p in psutil.process_iter(["cmdline"]) if str(run_dir) in " ".join(p.info["cmdline"] or [])
    ]


def post(server, path: str, body, session=None, timeout: float = 30, gateway: str | None = None):
    """POST straight to TorchServe (its inference key), or through ``gateway`` (the client key)."""
    import requests

    auth = {"Authorization": f"Bearer {CLIENT_KEY}"} if gateway else server.headers("inference")
    return (session or requests).post(
        f"{gateway or server.inference_url}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **auth},
        timeout=timeout,
    )


@pytest.mark.serve
def test_overrides_reach_torchserve_and_the_workers(server):
    status = model_status(server)
    assert (status["minWorkers"], status["maxWorkers"], status["batchSize"], status["maxBatchDelay"]) == (
        WORKERS, WORKERS, BATCH_SIZE, 5)  # fmt: skip
    assert [w["status"] for w in status["workers"]] == ["READY"] * WORKERS
    # Each worker limits torch to 1 thread: workers x threads <= the 2 cores of CI.
    log = (server.run_dir / "logs" / "model_log.log").read_text()
    assert log.count("threads=1,") == WORKERS
    # The archive in the store keeps its own settings; the server runs a rewritten copy.
    with zipfile.ZipFile(server.run_dir.parent / "store" / "tiny.mar") as zf:
        assert yaml.safe_load(zf.read("model-config.yaml"))["batchSize"] == 8


@pytest.mark.serve
def test_v2_protocol_requests_on_the_real_server(server, gateway_url, reference):
    body = v2_body(QUESTIONS, TEXTS, id="req-7")
    for path, gateway in (("/v2/models/tiny/infer", None), ("/predictions/tiny", None),
                          ("/v2/models/tiny/infer", gateway_url)):  # fmt: skip
        reply = post(server, path, body, gateway=gateway)
        assert reply.status_code == 200, reply.text
        data = reply.json()
        assert (data["id"], data["model_name"], data["model_version"]) == ("req-7", "tiny", "1.0")
        for got, q, c in zip(v2_answers(data), QUESTIONS, TEXTS):
            assert_same_answers(got, reference(question=q, context=c))
    reply = post(server, "/v2/models/tiny/infer", v2_body(QUESTIONS[:1], TEXTS[:2]))
    assert reply.status_code == 400 and "same number" in reply.json()["error"]
    # The KServe request example of deploy/kserve/ as it is.
    example = json.loads((REPO_ROOT / "deploy" / "kserve" / "request-v2.json").read_text())
    reply = post(server, "/v2/models/tiny/infer", example)
    assert reply.status_code == 200, reply.text
    assert reply.json()["id"] == "qa-example-1" and len(v2_answers(reply.json())) == 2
    # The gateway wants the client key, not TorchServe's.
    reply = post(server, "/predictions/tiny", body, gateway=gateway_url)
    assert reply.status_code == 200
    import requests

    reply = requests.post(f"{gateway_url}/predictions/tiny", json=body, headers=server.headers(), timeout=10)
    assert reply.status_code == 401


@pytest.mark.serve
def test_a_killed_worker_is_restarted_and_clients_get_a_clear_5xx(server, gateway_url):
    import requests

    body = {"question": QUESTIONS[0], "context": TEXTS[0]}
    results: list[tuple[float, float, object, str]] = []  # (sent at, seconds, status or exception, body)
    stop = threading.Event()

    def client() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    reply = post(
                        server, "/predictions/tiny", body, session=session, timeout=30, gateway=gateway_url
                    )
                    results.append((sent, time.monotonic() - sent, reply.status_code, reply.text))
                except requests.RequestException as err:  # a hang ends here, as a failure
                    results.append((sent, time.monotonic() - sent, type(err).__name__, str(err)))
                time.sleep(0.01)  # a steady load that leaves the new worker some CPU to start on 2 cores

    first, second = (int(w["pid"]) for w in wait_workers(server, WORKERS, timeout=60))
    clients = [threading.Thread(target=client) for _ in range(2)]
    for t in clients:
        t.start()
    try:
        time.sleep(1.5)
        killed_at = time.monotonic()
        os.kill(first, signal.SIGKILL)
        # TorchServe notices, answers the dead worker's batch and starts a new worker.
        restarted = wait_workers(server, WORKERS, timeout=60, gone={first})
        restart_s = time.monotonic() - killed_at
        new = [int(w["pid"]) for w in restarted if int(w["pid"]) != second]
        assert new and psutil.pid_exists(new[0])
        # Now the other original worker dies too: what follows can only be answered by the new worker.
        second_killed_at = time.monotonic()
        os.kill(second, signal.SIGKILL)
        time.sleep(2.0)
    finally:
        stop.set()
        for t in clients:
            t.join(timeout=60)
    assert not any(t.is_alive() for t in clients)
    failed = [r for r in results if r[2] != 200]
    after_second_kill = [r for r in results if r[0] > second_killed_at + 0.5]
    print(
        f"\nworker recovery: {len(results)} requests, {len(failed)} failed "
        f"({sorted({str(r[2]) for r in failed})}), restart took {restart_s:.1f}s, "
        f"max latency {max(r[1] for r in results):.2f}s, {len(after_second_kill)} answered by the new worker alone"
    )
    for sent, seconds, status, _ in failed:
        print(f"  failed: {status} sent {sent - killed_at:+.2f}s after the 1st kill, "
              f"{sent - second_killed_at:+.2f}s after the 2nd, answered after {seconds:.2f}s")  # fmt: skip
    # Every request got an HTTP answer (no client timeout or connection error) ...
    assert all(isinstance(r[2], int) for r in results), [r for r in failed if not isinstance(r[2], int)][:3]
    # ... the failures are the killed workers' in-flight batches, each a clear 5xx JSON error (507 when
    # TorchServe already saw the exit code 137 of a SIGKILL, which it reads as out of memory; else 500),
    # or the gateway's 504 for a request TorchServe took for the dead worker's next batch and dropped ...
    for _, _, status, text in failed:
        reason = json.loads(text).get("message") or json.loads(text).get("error")
        assert (status in (500, 507) and reason == "Worker died.") or (
            status == 504 and "within 10s" in reason
        )
    assert len(failed) <= 2 * BATCH_SIZE
    # ... and the restarted worker answers.
    assert after_second_kill and all(r[2] == 200 for r in after_second_kill)
    assert any(r[0] > killed_at + restart_s for r in results if r[2] == 200)


@pytest.mark.serve
def test_stop_leaves_no_torchserve_process(server):
    assert server.stop()
    assert not processes_of(server.run_dir)
    assert not (server.run_dir / "tmp").exists()  # the rewritten archives went with it
