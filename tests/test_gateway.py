"""deploy/gateway.py's overload and shutdown behaviour against a fake TorchServe (seconds, no Java).

The key checks, key renewal and the plain 504 are in tests/test_scaleout.py; here: TorchServe's 503 (job
queue full) comes back as a JSON error with Retry-After; more requests than ``--max-in-flight`` get 503 +
Retry-After without reaching TorchServe; the deadline counts the whole request; SIGTERM to the real
gateway process during a burst: every request taken is answered 200, a newcomer gets 503 + Retry-After,
the process exits 0. With a real TorchServe (marker ``serve``): an archive with ``jobQueueSize`` 1 under a
burst answers some requests 503, and the gateway adds Retry-After.
"""

from __future__ import annotations

import importlib.util
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from conftest import REPO_ROOT, send_json

requests = pytest.importorskip("requests")


def load_gateway():
    spec = importlib.util.spec_from_file_location("qa_gateway_hygiene", REPO_ROOT / "deploy" / "gateway.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeTorchServe(BaseHTTPRequestHandler):
    """``/predictions/full``: TorchServe's 503 for a full job queue; ``/predictions/slow``: 200 after 0.8 s;
    anything else: 200 at once. No keys (TorchServe with --disable-token-auth). Counts slow requests."""

    protocol_version = "HTTP/1.1"
    slow_seen: ClassVar[list] = []  # one item per slow request (list.append is atomic across threads)

    def do_GET(self):
        self._send(200, {"status": "Healthy"})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/predictions/full":
            return self._send(503, {"code": 503, "type": "ServiceUnavailableException",
                                    "message": 'Model "qa" has no worker to serve inference request.'})  # fmt: skip
        if self.path == "/predictions/slow":
            FakeTorchServe.slow_seen.append(self.path)
            time.sleep(0.8)
        self._send(200, {"answer": "Ada"})

    def _send(self, status, obj):
        send_json(self, status, obj)

    def log_message(self, *args):
        pass


@pytest.fixture
def upstream():
    fake = ThreadingHTTPServer(("127.0.0.1", 0), FakeTorchServe)
    fake.daemon_threads = True
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{fake.server_address[1]}"
    finally:
        fake.shutdown()


def in_thread_gateway(upstream: str, tmp_path, deadline: float = 5.0, max_in_flight: int = 256):
    gateway = load_gateway()
    server = gateway.make_server(
        "127.0.0.1:0", gateway.TorchServe(tmp_path, upstream, upstream, deadline), None, max_in_flight
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_a_full_torchserve_queue_is_a_json_503_with_retry_after(upstream, tmp_path):
    server, url = in_thread_gateway(upstream, tmp_path)
    try:
        reply = requests.post(f"{url}/predictions/full", json={}, timeout=10)
        assert reply.status_code == 503 and reply.headers["Retry-After"] == "1"
        assert reply.json()["status"] == 503 and "no worker to serve" in reply.json()["error"]
    finally:
        server.shutdown()


def test_a_burst_of_connections_is_queued_not_left_to_syn_retries(upstream, tmp_path):
    """socketserver listens with a backlog of 5: the 6th client of a burst waited for its SYN retry
    (1 s) before the gateway could even refuse it. The gateway queues as many as it lets in flight."""
    gateway = load_gateway()
    server = gateway.make_server(
        "127.0.0.1:0", gateway.TorchServe(tmp_path, upstream, upstream, 5.0), None, 64
    )
    address = server.server_address  # bound and listening, nothing accepted yet: the kernel queues them

    def connect(_):
        sock = socket.create_connection(address, timeout=0.5)
        sock.close()
        return True

    try:
        with ThreadPoolExecutor(64) as pool:
            assert all(pool.map(connect, range(64)))
    finally:
        server.server_close()


def test_more_requests_than_max_in_flight_get_503_at_once(upstream, tmp_path):
    server, url = in_thread_gateway(upstream, tmp_path, max_in_flight=2)
    try:
        with ThreadPoolExecutor(5) as pool:
            replies = list(
                pool.map(lambda _: requests.post(f"{url}/predictions/slow", json={}, timeout=10), range(5))
            )
        statuses = sorted(r.status_code for r in replies)
        assert statuses.count(200) >= 2 and set(statuses) == {200, 503}, statuses
        refused = next(r for r in replies if r.status_code == 503)
        assert refused.headers["Retry-After"] == "1" and "at capacity" in refused.json()["error"]
        assert requests.post(f"{url}/predictions/qa", json={}, timeout=10).status_code == 200  # recovers
    finally:
        server.shutdown()


def test_the_deadline_counts_the_whole_request(upstream, tmp_path):
    server, url = in_thread_gateway(upstream, tmp_path, deadline=0.3)
    try:
        started = time.monotonic()
        reply = requests.post(f"{url}/predictions/slow", json={}, timeout=10)
        assert reply.status_code == 504 and reply.json() == {
            "error": "the model server did not answer within 0.3s", "status": 504}  # fmt: skip
        assert time.monotonic() - started < 0.75
    finally:
        server.shutdown()


def test_sigterm_answers_the_requests_taken_and_exits_0(upstream, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "deploy" / "gateway.py"), "--no-auth", "--listen", f"127.0.0.1:{port}",
         "--inference", upstream, "--management", upstream, "--run-dir", str(tmp_path), "--grace", "10",
         "--accept-window", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        for _ in range(100):
            try:
                if requests.get(f"{url}/ping", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.05)
        results: list = [None] * 12

        def send(i: int) -> None:
            try:
                results[i] = requests.post(f"{url}/predictions/slow", json={}, timeout=30).status_code
            except requests.RequestException as err:
                results[i] = err

        FakeTorchServe.slow_seen.clear()
        threads = [threading.Thread(target=send, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        end = time.monotonic() + 20
        while len(FakeTorchServe.slow_seen) < 12 and time.monotonic() < end:  # all 12 taken by the gateway
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        while requests.get(f"{url}/ping", timeout=10).status_code == 200:  # until the signal is handled
            time.sleep(0.01)
        late = requests.post(f"{url}/predictions/qa", json={}, timeout=10)
        assert late.status_code == 503 and late.headers["Retry-After"] == "1"
        assert "shutting down" in late.json()["error"]
        for t in threads:
            t.join(30)
        assert results == [200] * 12
        assert proc.wait(20) == 0, proc.stdout.read().decode()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/ping", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.serve
def test_a_real_torchserve_with_a_full_job_queue_answers_503_with_retry_after_through_the_gateway(tmp_path):
    """The archive's jobQueueSize reaches TorchServe 0.12 (model-config.yaml), and its 503 comes back
    through the gateway as a JSON error with Retry-After; the other requests are answered."""
    pytest.importorskip("ts", reason="TorchServe is not installed (pip install 'qa-serving[serve]')")
    pytest.importorskip("model_archiver", reason="torch-model-archiver is not installed")
    if shutil.which("java") is None:
        pytest.skip("TorchServe needs Java 17 (no `java` on PATH)")
    from conftest import save_tiny_span_model

    from qa_serving.serving import Ports, build_archive, start_server

    text = "Shakespeare wrote Hamlet in 1600 while living in London. " * 30  # several windows
    model_dir = save_tiny_span_model(tmp_path / "model", [text])
    archive = build_archive(model_dir=model_dir, name="tiny", store=tmp_path / "store", batch_size=1,
                            max_batch_delay_ms=0, workers=1, job_queue_size=1, threads=1)  # fmt: skip
    server = start_server(store=archive.parent, models=["tiny"], run_dir=tmp_path / "run", ports=Ports.free(),
                          timeout=180, token_auth=False)  # fmt: skip
    address = f"127.0.0.1:{server.ports.inference}"
    proxy, url = None, None
    try:
        proxy, url = in_thread_gateway(address, tmp_path, deadline=60.0)
        body = [{"question": "Who wrote Hamlet?", "context": text}] * 8
        with ThreadPoolExecutor(24) as pool:
            replies = list(pool.map(lambda _: requests.post(f"{url}/predictions/tiny", json=body, timeout=60),
                                    range(24)))  # fmt: skip
        statuses = [r.status_code for r in replies]
        assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses, statuses
        full = next(r for r in replies if r.status_code == 503)
        assert full.headers["Retry-After"] == "1" and full.json()["status"] == 503
        assert "at capacity" in full.json()["error"]
    finally:
        if proxy is not None:
            proxy.shutdown()
        server.stop()
