"""TorchServe's lifecycle: start a loopback TorchServe with a store of archives, wait for it, stop it.

:func:`start_server` runs TorchServe with the Python running this code (its workers use it too), the
``config.properties`` shipped in this package (or the user's; ports replaced when asked) and a run folder
holding the logs, the pid file and ``key_file.json``; it loads the archives at start and waits until
every model has a ready worker. :func:`stop_server` stops it and its workers.

Deliberate simplifications: everything binds to 127.0.0.1; models are loaded at start (``--models``)
because the model-registration API stays disabled (TorchServe's secure default); one server per run
folder (TorchServe's pid file lives in the run folder's ``tmp/``, so servers in different run folders
don't see each other).
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from qa_serving.errors import QAError
from qa_serving.serving.archive import DEFAULT_STORE, override_archive

DEFAULT_RUN_DIR = Path("runs/torchserve")
HOST = "127.0.0.1"
_TS_MAIN = "org.pytorch.serve.ModelServer"


def default_config_text() -> str:
    """The ``config.properties`` shipped as package data (loopback, token auth on, model API off)."""
    return (importlib.resources.files(__package__) / "config.properties").read_text()


@dataclass
class Ports:
    """Loopback ports of one TorchServe (HTTP inference/management/metrics and gRPC)."""

    inference: int = 8080
    management: int = 8081
    metrics: int = 8082
    grpc_inference: int = 7070
    grpc_management: int = 7071

    @classmethod
    def free(cls) -> Ports:
        """Ports the OS reports free right now (for tests and parallel runs)."""
        socks = []
        try:
            for _ in range(5):
                s = socket.socket()
                s.bind((HOST, 0))
                socks.append(s)
            return cls(*(s.getsockname()[1] for s in socks))
        finally:
            for s in socks:
                s.close()


@dataclass
class Server:
    """A running TorchServe started by :func:`start_server` (also saved as ``server.json`` in ``run_dir``)."""

    run_dir: Path
    ports: Ports
    pid: int
    models: list[str]
    token_auth: bool = True
    # Size of logs/ts_log.log when this server started: the run folder's logs accumulate across starts,
    # and a load failure logged by an earlier server must not fail this one.
    log_offset: int = 0

    @property
    def inference_url(self) -> str:
        return f"http://{HOST}:{self.ports.inference}"

    @property
    def management_url(self) -> str:
        return f"http://{HOST}:{self.ports.management}"

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.ports.metrics}/metrics"

    def token(self, kind: str = "inference") -> str | None:
        return read_token(self.run_dir, kind) if self.token_auth else None

    def headers(self, kind: str = "inference") -> dict[str, str]:
        """``Authorization`` header for ``kind`` (inference | management | API) calls; empty without auth."""
        token = self.token(kind)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def stop(self, timeout: float = 60) -> bool:
        return stop_server(self.run_dir, timeout)

    def save(self) -> None:
        data = {**asdict(self), "run_dir": str(self.run_dir)}
        (self.run_dir / "server.json").write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, run_dir: str | Path) -> Server | None:
        path = Path(run_dir) / "server.json"
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return cls(
            Path(data["run_dir"]),
            Ports(**data["ports"]),
            data["pid"],
            data["models"],
            data["token_auth"],
            data.get("log_offset", 0),
        )


def read_token(run_dir: str | Path = DEFAULT_RUN_DIR, kind: str = "inference") -> str:
    """A key from the ``key_file.json`` TorchServe wrote in ``run_dir``: inference, management or API."""
    path = Path(run_dir) / "key_file.json"
    if not path.is_file():
        raise QAError(
            f"no key file at {path}: is TorchServe running with token auth from run folder {run_dir}?"
        )
    keys = json.loads(path.read_text())
    if kind not in keys:
        raise QAError(f"key kind must be one of {sorted(keys)}, got {kind!r}")
    return keys[kind]["key"]


def render_config(config_path: str | Path | None, ports: Ports | None) -> str:
    """config.properties text with the listening addresses set to loopback ``ports`` (when given)."""
    if config_path is None:
        text = default_config_text()
    else:
        path = Path(config_path)
        if not path.is_file():
            raise QAError(f"TorchServe config {path} not found")
        text = path.read_text()
    if ports is None:
        return text
    values = {
        "inference_address": f"http://{HOST}:{ports.inference}",
        "management_address": f"http://{HOST}:{ports.management}",
        "metrics_address": f"http://{HOST}:{ports.metrics}",
        "grpc_inference_address": HOST,
        "grpc_management_address": HOST,
        "grpc_inference_port": str(ports.grpc_inference),
        "grpc_management_port": str(ports.grpc_management),
    }
    lines, seen = [], set()
    for line in text.splitlines():
        key = line.split("=", 1)[0].strip()
        if not line.lstrip().startswith("#") and "=" in line and key in values:
            line = f"{key}={values[key]}"
            seen.add(key)
        lines.append(line)
    lines += [f"{k}={v}" for k, v in values.items() if k not in seen]
    return "\n".join(lines) + "\n"


def config_ports(text: str) -> Ports:
    """The ports a config.properties text listens on (TorchServe's defaults where it says nothing)."""
    props = dict(
        line.split("=", 1)
        for line in (raw.strip() for raw in text.splitlines())
        if line and "=" in line and not line.startswith("#")
    )
    port = lambda key, default: int(props.get(key, f":{default}").rsplit(":", 1)[1].strip("/"))
    return Ports(
        inference=port("inference_address", 8080),
        management=port("management_address", 8081),
        metrics=port("metrics_address", 8082),
        grpc_inference=int(props.get("grpc_inference_port", 7070)),
        grpc_management=int(props.get("grpc_management_port", 7071)),
    )


def _check_free(ports: Ports) -> None:
    for field_name, port in asdict(ports).items():
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                flag = f"--{field_name.replace('_', '-')}-port"
                raise QAError(
                    f"{HOST}:{port} ({field_name}) is in use: another TorchServe (`qa-serving serve --stop`)? "
                    f"Or pick another port with {flag}"
                ) from None


def start_server(
    *,
    store: str | Path = DEFAULT_STORE,
    config_path: str | Path | None = None,
    models: list[str] | None = None,
    wait: bool = True,
    run_dir: str | Path = DEFAULT_RUN_DIR,
    ports: Ports | None = None,
    token_auth: bool = True,
    timeout: float = 300,
    overrides: dict[str, object] | None = None,
) -> Server:
    """Start TorchServe in the background with the archives ``models`` (names; default: every .mar in
    ``store``) and, with ``wait``, return once each has a ready worker.

    Logs go to ``run_dir/logs``, the keys to ``run_dir/key_file.json``. ``overrides`` (see
    :data:`~.settings.SERVE_OVERRIDES`: workers, batch_size, max_batch_delay_ms, response_timeout_s, gpu_ids, threads,
    device) replace the archives' model-config.yaml values for this server: the archives are copied into
    ``run_dir/tmp/store`` with them applied (removed at stop). Example:
    ``server = start_server(store="model_store", models=["qa"], overrides={"workers": 2}); ...; server.stop()``.
    """
    store, run_dir = Path(store).resolve(), Path(run_dir).resolve()
    if not store.is_dir():
        raise QAError(f"model store {store} not found; build an archive first (qa-serving archive)")
    available = sorted(p.stem for p in store.glob("*.mar"))
    models = list(models) if models else available
    missing = [m for m in models if m not in available]
    if not models or missing:
        raise QAError(
            f"no archive for {missing or 'any model'} in {store} (found {available}); "
            "build one with `qa-serving archive`"
        )
    running = Server.load(run_dir)
    if running is not None and _ts_process(running.pid) is not None:
        raise QAError(
            f"TorchServe is already running from {run_dir} (pid {running.pid}); "
            f"stop it with `qa-serving serve --stop --run-dir {run_dir}`"
        )
    for sub in ("logs", "tmp"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    (run_dir / "key_file.json").unlink(missing_ok=True)
    text = render_config(config_path, ports)
    ports = ports or config_ports(text)
    _check_free(ports)
    config_file = run_dir / "config.properties"
    config_file.write_text(text)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if overrides:
        served = run_dir / "tmp" / "store"
        shutil.rmtree(served, ignore_errors=True)
        for m in models:
            override_archive(store / f"{m}.mar", served / f"{m}.mar", **overrides)
        store = served
    cmd = [
        sys.executable,
        "-m",
        "ts.model_server",
        "--start",
        "--ncs",
        "--ts-config",
        str(config_file),
        "--model-store",
        str(store),
        "--models",
        *(f"{m}={m}.mar" for m in models),
    ]
    if not token_auth:
        cmd.append("--disable-token-auth")
    # TorchServe keeps its pid file in $TMPDIR and key_file.json in its working directory; java.io.tmpdir
    # ($TEMP) holds the unpacked archives and worker sockets. All of them live in the run folder.
    env = {
        **os.environ,
        "TMPDIR": str(run_dir / "tmp"),
        "TEMP": str(run_dir / "tmp"),
        "LOG_LOCATION": str(run_dir / "logs"),
        "METRICS_LOCATION": str(run_dir / "logs"),
    }
    env.pop("TS_CONFIG_FILE", None)
    ts_log = run_dir / "logs" / "ts_log.log"
    log_offset = ts_log.stat().st_size if ts_log.is_file() else 0
    with open(run_dir / "logs" / "console.log", "ab") as console:
        launcher = subprocess.run(
            cmd,
            check=False,
            cwd=run_dir,
            env=env,
            stdout=console,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            timeout=120,
        )
    pid_file = run_dir / "tmp" / ".model_server.pid"
    if launcher.returncode != 0 or not pid_file.is_file():
        raise QAError(f"TorchServe did not start (exit {launcher.returncode}):\n{_log_tail(run_dir)}")
    server = Server(run_dir, ports, int(pid_file.read_text().strip()), models, token_auth, log_offset)
    server.save()
    if wait:
        try:
            wait_ready(server, timeout=timeout)
        except BaseException:
            stop_server(run_dir)
            raise
    return server


def _get(url: str, headers: dict[str, str] | None = None, timeout: float = 5) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def wait_ready(server: Server, timeout: float = 300) -> None:
    """Block until every model of ``server`` has a READY worker; fail early if TorchServe died."""
    deadline = time.monotonic() + timeout
    pending = list(server.models)
    while pending:
        if _ts_process(server.pid) is None:
            raise QAError(f"TorchServe exited during startup:\n{_log_tail(server.run_dir)}")
        if _load_failure(server.run_dir, pending[0], server.log_offset):
            raise QAError(
                f"model {pending[0]!r} failed to load: {_worker_error(server.run_dir)}\n{_log_tail(server.run_dir)}"
            )
        if time.monotonic() > deadline:
            raise QAError(f"models {pending} not ready after {timeout:.0f}s:\n{_log_tail(server.run_dir)}")
        with contextlib.suppress(OSError, QAError, ValueError, KeyError):
            status, body = _get(f"{server.management_url}/models/{pending[0]}", server.headers("management"))
            if status == 200:
                workers = json.loads(body)[0].get("workers", [])
                if any(w.get("status") == "READY" for w in workers):
                    pending.pop(0)
                    continue
        time.sleep(0.5)


def _load_failure(run_dir: Path, model: str, offset: int = 0) -> bool:
    log = run_dir / "logs" / "ts_log.log"
    if not log.is_file():
        return False
    with open(log, "rb") as f:
        f.seek(offset)
        return f"Load model failed: {model},".encode() in f.read()


def _ts_process(pid: int):
    """The TorchServe java process with this pid, or None (a reused pid is not ours)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return proc if _TS_MAIN in " ".join(proc.cmdline()) else None
    except (psutil.Error, OSError):
        return None


def stop_server(run_dir: str | Path = DEFAULT_RUN_DIR, timeout: float = 60) -> bool:
    """Stop the TorchServe of ``run_dir`` and its workers; False when none was running."""
    import psutil

    run_dir = Path(run_dir).resolve()
    server = Server.load(run_dir)
    pid_file = run_dir / "tmp" / ".model_server.pid"
    pid = server.pid if server else (int(pid_file.read_text().strip()) if pid_file.is_file() else None)
    proc = _ts_process(pid) if pid else None
    stopped = False
    if proc is not None:
        workers = proc.children(recursive=True)
        proc.terminate()  # TorchServe's own --stop does the same (SIGTERM); its shutdown hook ends workers
        _, alive = psutil.wait_procs([proc], timeout=timeout)
        for p in alive:
            p.kill()
        _, alive = psutil.wait_procs(workers, timeout=10)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(alive, timeout=10)
        stopped = True
    for leftover in ("key_file.json", "server.json"):
        (run_dir / leftover).unlink(missing_ok=True)
    # The pid file, the unpacked archives and the worker sockets.
    shutil.rmtree(run_dir / "tmp", ignore_errors=True)
    return stopped


def _log_tail(run_dir: Path, lines: int = 25) -> str:
    out = []
    names = (
        ("model_log.log", "ts_log.log") if (run_dir / "logs" / "ts_log.log").is_file() else ("console.log",)
    )
    for name in names:
        path = run_dir / "logs" / name
        if path.is_file():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path} ---\n" + "\n".join(tail))
    return "\n".join(out) or f"(no logs in {run_dir / 'logs'})"


def _worker_error(run_dir: Path) -> str:
    """The last exception line a worker logged (e.g. ``qa_serving.errors.QAError: ...``)."""
    path = run_dir / "logs" / "model_log.log"
    lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
    pattern = re.compile(r"MODEL_LOG - [\w.]+(Error|Exception): ")
    errors = [ln.split("MODEL_LOG - ", 1)[1] for ln in lines if pattern.search(ln)]
    return errors[-1] if errors else "its worker died (see the logs below)"
