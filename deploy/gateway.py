"""The container's public port: a key check and a deadline in front of a loopback TorchServe.

Why it exists (TorchServe 0.12 facts, see docs/scaling.md):
- TorchServe generates its keys at start (``key_file.json``) and cannot take one from a secret or an env
  var. The gateway checks ``Authorization: Bearer <key>`` against a key read from a mounted secret file
  (``--key-file``, re-read when it changes) or ``$QA_API_KEY``, and calls TorchServe with TorchServe's
  own inference key, renewed with its API key when it expires. TorchServe's token auth stays on.
- When a worker process dies, TorchServe answers the batch that worker was running ("Worker died.",
  500/507) but can drop requests it had already taken for that worker's next batch: they never get an
  answer. The gateway gives every request a deadline and answers 504 when it passes, so a client always
  gets an HTTP status.

Only the inference API goes through: ``POST /predictions/<model>[/<version>]``, ``POST
/v2/models/<model>[/versions/<v>]/infer`` and, without a key (for probes), ``GET /ping``. (TorchServe
0.12 answers the v2 REST health and metadata paths with 404 outside KServe.) The management and metrics
APIs stay on loopback.

Overload and shutdown (the serving hygiene the KServe runtime has in-process):
- TorchServe answers a full job queue (``jobQueueSize`` in the archive's model-config.yaml) with 503; the
  gateway passes it on as a JSON error with ``Retry-After``. More than ``--max-in-flight`` requests at the
  gateway itself also get 503 + ``Retry-After`` at once.
- ``--deadline`` counts the whole request (TorchServe's queue + compute, a key renewal included): 504.
- SIGTERM: new requests get 503 + ``Retry-After`` for a second (connections already in the listen backlog
  get an answer, not a reset), then the gateway stops accepting, finishes every request it has taken
  (up to ``--grace`` s) and exits 0; the entrypoint stops TorchServe after it.

Deliberate simplifications: Python's threading HTTP server (one thread per connection; fine for a
model server whose requests take milliseconds to seconds, not for 10k connections); bodies are read
whole (TorchServe refuses bodies over ``max_request_size`` anyway; the gateway refuses the same size).

    python deploy/gateway.py --run-dir runs/torchserve --listen 0.0.0.0:8080 --key-file /secrets/qa/key
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import http.client
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

logger = logging.getLogger("qa-gateway")

PUBLIC = re.compile(r"^/ping$")
ROUTES = [
    ("POST", re.compile(r"^/predictions/[A-Za-z][\w\-.]*(/[\w\-.]+)?$")),
    ("POST", re.compile(r"^/v2/models/[A-Za-z][\w\-.]*(/versions/[\w\-.]+)?/infer$")),
]
PASS_HEADERS = ("content-type", "x-qa-batch-size")
MAX_BODY = 6_553_500  # TorchServe's max_request_size in qa_serving/serving/config.properties
ACCEPT_WINDOW_S = 1.0  # after SIGTERM: keep answering 503 this long before closing the listener


class ClientKey:
    """The key clients must send: a secret file (re-read when its mtime changes) or a fixed string."""

    def __init__(self, path: str | None = None, value: str | None = None) -> None:
        if path and not Path(path).is_file() and value:
            path = None  # no secret mounted there: the env var's key
        if not path and not value:
            raise SystemExit("no client key: give --key-file PATH (a mounted secret) or set QA_API_KEY")
        if path and not Path(path).is_file():
            raise SystemExit(
                f"no client key: {path} does not exist (mount the secret there or set QA_API_KEY)"
            )
        self.path, self.value, self.mtime = (Path(path) if path else None), value, None
        self._check(self.current())  # fail at start, not at the first request

    def current(self) -> str:
        if self.path is None:
            return self.value
        mtime = self.path.stat().st_mtime_ns
        if mtime != self.mtime:
            self.value, self.mtime = self.path.read_text().strip(), mtime
        return self.value

    def _check(self, key: str) -> None:
        if len(key) < 16:
            raise SystemExit(f"the client key ({self.path or 'QA_API_KEY'}) is shorter than 16 characters")

    def accepts(self, header: str | None) -> bool:
        scheme, _, token = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self.current().encode()
        )


class TorchServe:
    """The loopback TorchServe: where it listens, its keys (key_file.json in its run folder), a deadline."""

    def __init__(self, run_dir: str | Path, inference: str, management: str, deadline: float) -> None:
        self.key_file = Path(run_dir) / "key_file.json"
        self.inference = _host_port(inference)
        self.management = _host_port(management)
        self.deadline = deadline
        self.lock = threading.Lock()

    def key(self, kind: str = "inference") -> str | None:
        if not self.key_file.is_file():
            return None  # TorchServe runs with --disable-token-auth
        return json.loads(self.key_file.read_text())[kind]["key"]

    def renew_inference_key(self, stale: str | None) -> None:
        """Ask TorchServe for a new inference key (once, however many threads saw the old one expire)."""
        with self.lock:
            if self.key() != stale:
                return  # another thread renewed it already
            status, _, body = self._call(
                self.management,
                "POST",
                "/token?type=inference",
                b"",
                {"Authorization": f"Bearer {self.key('API')}"},
            )
            if status != 200:
                logger.error("could not renew TorchServe's inference key: %s %s", status, body[:200])

    def forward(
        self, method: str, path: str, body: bytes, headers: dict[str, str], started: float | None = None
    ) -> tuple[int, dict, bytes]:
        """TorchServe's answer; TimeoutError once ``deadline`` s have passed since ``started`` (monotonic)."""
        end = (started if started is not None else time.monotonic()) + self.deadline
        for attempt in (1, 2):
            key = self.key()
            auth = {"Authorization": f"Bearer {key}"} if key else {}
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError("deadline passed")
            status, reply_headers, reply = self._call(
                self.inference, method, path, body, {**headers, **auth}, timeout=left
            )
            # TorchServe 0.12 answers an expired (or wrong) key with 400 InvalidKeyException.
            if attempt == 1 and key and status in (400, 401) and b"InvalidKeyException" in reply:
                self.renew_inference_key(key)
                continue
            return status, reply_headers, reply
        return status, reply_headers, reply

    def _call(self, where, method, path, body, headers, timeout=None) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection(*where, timeout=timeout or self.deadline)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.removeprefix("http://").rstrip("/").rpartition(":")
    return host, int(port)


def error_body(status: int, message: str) -> bytes:
    return json.dumps({"error": message, "status": status}).encode()


class Gateway(BaseHTTPRequestHandler):
    server_version = "qa-gateway"
    protocol_version = "HTTP/1.1"
    client_key: ClientKey | None = None  # None: no key check (--no-auth, local debugging only)
    upstream: TorchServe

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        if not self.server.enter():
            self.close_connection = self.server.draining
            return self._refuse()
        try:
            self._answer(method)
        finally:
            self.server.leave()

    def _refuse(self) -> None:
        """503 + Retry-After without touching TorchServe: shutting down, or too many requests in flight."""
        length = int(self.headers.get("Content-Length") or 0)
        if length <= MAX_BODY:
            self.rfile.read(length)  # so the connection can carry the next request
        else:
            self.close_connection = True
        server = self.server
        why = (
            "the server is shutting down; retry on another replica"
            if server.draining
            else f"the server is at capacity ({server.max_in_flight} requests in flight); retry later"
        )
        headers = {"Retry-After": str(server.retry_after)}
        if server.draining:
            headers["Connection"] = "close"
        self._reply(503, headers, error_body(503, why))

    def _answer(self, method: str) -> None:
        started = time.monotonic()
        path = self.path.split("?", 1)[0]
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self._reply(
                413, {}, error_body(413, f"the body has {length} bytes; the limit is {MAX_BODY}")
            )
        body = self.rfile.read(length) if length else b""
        if not PUBLIC.match(path):
            if not any(m == method and r.match(path) for m, r in ROUTES):
                return self._reply(404, {}, error_body(404, f"{method} {path} is not served here"))
            if self.client_key is not None and not self.client_key.accepts(self.headers.get("Authorization")):
                return self._reply(
                    401, {"WWW-Authenticate": "Bearer"}, error_body(401, "missing or wrong API key")
                )
        headers = {"Content-Type": self.headers.get("Content-Type", "application/json")} if body else {}
        try:
            status, reply_headers, reply = self.upstream.forward(method, self.path, body, headers, started)
        except TimeoutError:
            status, reply_headers = 504, {}
            reply = error_body(504, f"the model server did not answer within {self.upstream.deadline:g}s")
        except OSError as err:  # refused, reset: TorchServe is down or restarting
            status, reply_headers, reply = (
                502,
                {},
                error_body(502, f"the model server is not reachable: {err}"),
            )
        passed = {k: v for k, v in reply_headers.items() if k in PASS_HEADERS}
        if status == 503:  # TorchServe's job queue is full (jobQueueSize) or no worker is up yet
            passed = {"Retry-After": reply_headers.get("retry-after") or str(self.server.retry_after)}
            reply = error_body(503, f"the model server is at capacity: {_message(reply)}; retry later")
        self._reply(status, passed, reply)
        logger.info("%s %s -> %d in %.0f ms", method, path, status, 1000 * (time.monotonic() - started))

    def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        if "content-type" not in {k.lower() for k in headers}:
            headers = {**headers, "Content-Type": "application/json"}
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        logger.debug(format, *args)


def _message(reply: bytes) -> str:
    """TorchServe's error message (``{"code", "type", "message"}``), else the reply's start."""
    try:
        return str(json.loads(reply).get("message"))
    except (ValueError, AttributeError):
        return reply[:200].decode(errors="replace")


class GatewayServer(ThreadingHTTPServer):
    """The listening server plus what overload and drain need: requests in flight, a bound, a flag."""

    daemon_threads = True

    def __init__(self, address, handler, max_in_flight: int = 256, retry_after: int = 1) -> None:
        # socketserver's listen backlog is 5: in a burst, connections past it wait for the client's SYN
        # retry (1 s, then 3 s, ...) before any 503 can be sent. Queue as many as may be in flight.
        self.request_queue_size = max(128, max_in_flight)
        super().__init__(address, handler)
        self.max_in_flight, self.retry_after = max_in_flight, retry_after
        self.in_flight, self.draining, self.exit_code = 0, False, 0
        self._lock = threading.Lock()

    def enter(self) -> bool:
        """Take a request (False: refuse it with 503, draining or at the bound)."""
        with self._lock:
            if self.draining or self.in_flight >= self.max_in_flight:
                return False
            self.in_flight += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def drain(self, grace: float, accept_window: float = ACCEPT_WINDOW_S) -> bool:
        """SIGTERM: refuse new requests (503), stop accepting after ``accept_window`` s, then wait up to
        ``grace`` s for the requests taken; True when all were answered. Call it off the serving thread."""
        self.draining = True
        logger.info("SIGTERM: draining %d requests in flight", self.in_flight)
        time.sleep(accept_window)
        self.shutdown()  # serve_forever returns
        self.socket.close()  # connections arriving now are refused, not left in a backlog
        end = time.monotonic() + grace
        while self.in_flight and time.monotonic() < end:
            time.sleep(0.02)
        if self.in_flight:
            logger.error("%d requests still in flight after the %g s grace period", self.in_flight, grace)
        return self.in_flight == 0


def make_server(
    listen: str,
    upstream: TorchServe,
    client_key: ClientKey | None,
    max_in_flight: int = 256,
    retry_after: int = 1,
) -> GatewayServer:
    """A gateway bound to ``listen`` (``host:port``); call ``serve_forever()`` (or run it in a thread)."""
    handler = type("BoundGateway", (Gateway,), {"upstream": upstream, "client_key": client_key})
    return GatewayServer(_host_port(listen), handler, max_in_flight, retry_after)


def torchserve_alive(run_dir: Path) -> bool:
    """Whether the TorchServe that ``qa-serving serve`` started from ``run_dir`` still runs (Linux /proc)."""
    try:
        pid = json.loads((run_dir / "server.json").read_text())["pid"]
        return b"org.pytorch.serve.ModelServer" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, KeyError):
        return False


def _watch(run_dir: Path, server: ThreadingHTTPServer, every: float = 5.0) -> None:
    """Stop the gateway when the TorchServe of ``run_dir`` is gone, so the container restarts."""
    while torchserve_alive(run_dir):
        time.sleep(every)
    logger.error("TorchServe of %s is gone; stopping the gateway", run_dir)
    server.exit_code = 1
    server.shutdown()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", default="0.0.0.0:8080", help="host:port for clients (default: 0.0.0.0:8080)")
    p.add_argument("--run-dir", default="runs/torchserve", help="TorchServe's run folder (key_file.json)")
    p.add_argument("--inference", default="127.0.0.1:8085", help="TorchServe's inference address")
    p.add_argument("--management", default="127.0.0.1:8086", help="TorchServe's management address")
    p.add_argument(
        "--deadline",
        type=float,
        default=150.0,
        help="s a request may take, TorchServe's queue + compute, before a 504 (default: 150, the deadline_s "
        "row of qa_serving/serving/settings.py)",
    )
    p.add_argument(
        "--grace", type=float, default=25.0, help="s after SIGTERM to finish requests in flight (default: 25)"
    )
    p.add_argument(
        "--max-in-flight", type=int, default=256, help="more concurrent requests get 503 (default: 256)"
    )
    p.add_argument("--retry-after", type=int, default=1, help="Retry-After of a 503, in s (default: 1)")
    p.add_argument(
        "--accept-window",
        type=float,
        default=ACCEPT_WINDOW_S,
        help=f"s after SIGTERM of 503 answers before the listener closes (default: {ACCEPT_WINDOW_S:g})",
    )
    p.add_argument(
        "--key-file", default=os.environ.get("QA_API_KEY_FILE"), help="file holding the client key"
    )
    p.add_argument("--no-auth", action="store_true", help="accept requests without a key (debugging only)")
    p.add_argument("--watch", action="store_true", help="exit when TorchServe exits")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    key = None if args.no_auth else ClientKey(args.key_file, os.environ.get("QA_API_KEY"))
    upstream = TorchServe(args.run_dir, args.inference, args.management, args.deadline)
    server = make_server(args.listen, upstream, key, args.max_in_flight, args.retry_after)
    drained = threading.Event()

    def drain() -> None:
        server.drain(args.grace, args.accept_window)
        drained.set()

    def on_sigterm(*_) -> None:
        if not server.draining:
            threading.Thread(target=drain, daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)
    if args.watch:
        threading.Thread(target=_watch, args=(Path(args.run_dir), server), daemon=True).start()
    logger.info(
        "gateway on %s -> TorchServe %s (auth %s)", args.listen, args.inference, "on" if key else "OFF"
    )
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    if server.draining:
        drained.wait(args.grace + args.accept_window + 5)
    server.server_close()
    return server.exit_code


if __name__ == "__main__":
    sys.exit(main())
