"""TorchServe deployment: build a model archive, start/stop a loopback TorchServe, read its keys.

- :func:`build_archive` packs ``handlers/qa_handler.py``, a zip of this package (so the server needs no
  repo checkout), the model folder and a model-config.yaml (batching, workers, handler settings) into
  ``<store>/<name>.mar`` with ``torch-model-archiver``.
- :func:`start_server` runs TorchServe with the Python running this code (its workers use it too), the
  repo's ``model_store/config.properties`` (ports replaced when asked) and a run folder holding the
  logs, the pid file and ``key_file.json``; it loads the archives at start and waits until every
  model has a ready worker. :func:`stop_server` stops it and its workers.

Deliberate simplifications: everything binds to 127.0.0.1; models are loaded at start (``--models``)
because the model-registration API stays disabled (TorchServe's secure default); one server per run
folder (TorchServe's pid file lives in the run folder's ``tmp/``, so servers in different run folders
don't see each other).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import QAError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STORE = Path("model_store")
DEFAULT_RUN_DIR = Path("runs/torchserve")
DEFAULT_CONFIG = REPO_ROOT / "model_store" / "config.properties"
DEFAULT_MODEL_CONFIG = REPO_ROOT / "model_store" / "model-config.yaml"
HOST = "127.0.0.1"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-.]*$")
_TS_MAIN = "org.pytorch.serve.ModelServer"
# Used when the repo's model_store/model-config.yaml is not around (e.g. an installed wheel).
_MODEL_CONFIG_DEFAULTS = {
    "minWorkers": 1,
    "maxWorkers": 1,
    "batchSize": 8,
    "maxBatchDelay": 20,
    "responseTimeout": 120,
    "startupTimeout": 120,
    "handler": {"backend": "torch", "dtype": "fp32", "device": "auto"},
}


# --- archive ---------------------------------------------------------------------------------------


def handler_file() -> Path:
    """Path of ``handlers/qa_handler.py`` (installed package or repo checkout)."""
    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec("handlers.qa_handler")
        if spec is not None and spec.origin:
            return Path(spec.origin)
    return REPO_ROOT / "handlers" / "qa_handler.py"


def zip_package(dest: Path) -> Path:
    """Zip this package's sources into ``dest`` (importable from sys.path: ``dest/qa_serving/...``)."""
    package = Path(__file__).resolve().parent
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(package.rglob("*.py")):
            if "__pycache__" not in path.parts:
                zf.write(path, Path("qa_serving") / path.relative_to(package))
    return dest


def model_config(
    template: str | Path | None = None,
    *,
    batch_size: int = 8,
    max_batch_delay_ms: int = 20,
    workers: int = 1,
    response_timeout_s: int = 120,
    **handler: object,
) -> dict:
    """The model-config.yaml content: the template with TorchServe batching/worker keys and ``handler:``
    settings replaced (``None`` handler values keep the template's)."""
    import yaml

    path = Path(template) if template is not None else DEFAULT_MODEL_CONFIG
    if template is not None and not path.is_file():
        raise QAError(f"model-config template {path} not found")
    config = (
        yaml.safe_load(path.read_text()) if path.is_file() else json.loads(json.dumps(_MODEL_CONFIG_DEFAULTS))
    )
    for name, value in (
        ("batch_size", batch_size),
        ("workers", workers),
        ("max_batch_delay_ms", max_batch_delay_ms),
    ):
        if not isinstance(value, int) or value < (0 if name == "max_batch_delay_ms" else 1):
            raise QAError(
                f"{name} must be a {'non-negative' if name == 'max_batch_delay_ms' else 'positive'} "
                f"integer, got {value!r}"
            )
    config.update(
        minWorkers=workers,
        maxWorkers=workers,
        batchSize=batch_size,
        maxBatchDelay=max_batch_delay_ms,
        responseTimeout=response_timeout_s,
    )
    section = dict(config.get("handler") or {})
    section.update({k: v for k, v in handler.items() if v is not None})
    config["handler"] = section
    return config


def build_archive(
    model_dir: str | Path,
    name: str = "qa",
    store: str | Path = DEFAULT_STORE,
    backend: str = "torch",
    batch_size: int = 8,
    max_batch_delay_ms: int = 20,
    workers: int = 1,
    *,
    response_timeout_s: int = 120,
    dtype: str | None = None,
    device: str | None = None,
    max_context_chars: int | None = None,
    max_examples: int | None = None,
    feature_batch_size: int | None = None,
    threads: int | None = None,
    onnx_dir: str | Path | None = None,
    template: str | Path | None = None,
    version: str = "1.0",
) -> Path:
    """Build ``<store>/<name>.mar`` for TorchServe and return its path (an existing one is replaced).

    ``model_dir`` is a saved span model with its tokenizer and qa_config.json (an exported ONNX folder
    when ``backend="onnx"``); ``onnx_dir`` adds an ONNX export beside a PyTorch model so that
    ``QA_BACKEND=onnx`` can switch at serve time. Example:
    ``build_archive("outputs/squad-small", "squad", batch_size=16)`` -> ``model_store/squad.mar``.
    """
    from .backends import is_onnx_dir

    model_dir, store = Path(model_dir), Path(store)
    if not _NAME.match(name):
        raise QAError(f"archive name {name!r} must start with a letter and use only letters, digits, _ - .")
    if not model_dir.is_dir():
        raise QAError(f"model folder {model_dir} not found")
    if not any((model_dir / f).is_file() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        raise QAError(f"{model_dir} holds no tokenizer; save it beside the model (tokenizer.save_pretrained)")
    if backend not in ("torch", "onnx"):
        raise QAError(f"backend must be 'torch' or 'onnx', got {backend!r}")
    if backend == "onnx" and not (is_onnx_dir(model_dir) or (onnx_dir and is_onnx_dir(onnx_dir))):
        raise QAError(
            f"backend 'onnx' needs an exported model: {model_dir} holds no .onnx file "
            "(run `qa-serving export` or pass --onnx DIR)"
        )
    if onnx_dir is not None and not is_onnx_dir(onnx_dir):
        raise QAError(f"{onnx_dir} holds no .onnx model")
    config = model_config(
        template,
        batch_size=batch_size,
        max_batch_delay_ms=max_batch_delay_ms,
        workers=workers,
        response_timeout_s=response_timeout_s,
        backend=backend,
        dtype=dtype,
        device=device,
        max_context_chars=max_context_chars,
        max_examples=max_examples,
        feature_batch_size=feature_batch_size,
        threads=threads,
    )
    store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="qa-archive-") as tmp:
        stage = Path(tmp)
        extra = stage / "extra"
        _copy_model(model_dir, extra / "model")
        if onnx_dir is not None:
            _copy_model(Path(onnx_dir), extra / "onnx")
        zip_package(extra / "qa_serving.zip")
        yaml_path = stage / "model-config.yaml"
        import yaml

        yaml_path.write_text(yaml.safe_dump(config, sort_keys=False))
        cmd = [
            sys.executable,
            "-m",
            "model_archiver.model_packaging",
            "--model-name",
            name,
            "--version",
            version,
            "--handler",
            str(handler_file()),
            "--extra-files",
            str(extra),
            "--config-file",
            str(yaml_path),
            "--export-path",
            str(store),
            "--force",
        ]
        # torch-model-archiver stages files in $TMPDIR/<name>: a private TMPDIR keeps parallel builds apart.
        (stage / "tmp").mkdir()
        env = {**os.environ, "TMPDIR": str(stage / "tmp")}
        result = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise QAError(
                f"torch-model-archiver failed ({result.returncode}): {result.stderr.strip()[-2000:]}"
            )
    return store / f"{name}.mar"


def _copy_model(src: Path, dest: Path) -> None:
    """The files of a model folder (not its subfolders: training checkpoints stay out of the archive)."""
    dest.mkdir(parents=True)
    for path in src.iterdir():
        if path.is_file() and not path.name.startswith("."):
            shutil.copy2(path, dest / path.name)


# --- serve-time overrides -------------------------------------------------------------------------

# qa-serving serve flag -> where it goes in model-config.yaml (TorchServe reads the top-level keys at load,
# and they win over config.properties, so an override has to rewrite the archive's model-config.yaml).
SERVE_OVERRIDES = {
    "workers": ("minWorkers", "maxWorkers"),
    "batch_size": ("batchSize",),
    "max_batch_delay_ms": ("maxBatchDelay",),
    "response_timeout_s": ("responseTimeout",),
    "gpu_ids": ("deviceIds",),
    "threads": ("handler", "threads"),
    "device": ("handler", "device"),
}


# Override name -> the `qa-serving serve` argparse dest, where they differ.
_OVERRIDE_FLAGS = {"response_timeout_s": "response_timeout"}


def apply_overrides(config: dict, **overrides: object) -> dict:
    """A copy of a model-config.yaml dict with the serve-time ``overrides`` that are not None applied.

    Example: ``apply_overrides({"minWorkers": 1, "handler": {}}, workers=2, threads=1)``
    -> ``{"minWorkers": 2, "maxWorkers": 2, "handler": {"threads": 1}}``.
    """
    unknown = set(overrides) - set(SERVE_OVERRIDES)
    if unknown:
        raise QAError(f"unknown serve override(s) {sorted(unknown)}; known: {sorted(SERVE_OVERRIDES)}")
    config = json.loads(json.dumps(config))
    for name, value in overrides.items():
        if value is None:
            continue
        if name == "gpu_ids":
            if not value or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value):
                raise QAError(f"gpu_ids must be a non-empty list of GPU indices (e.g. 0,1), got {value!r}")
            value = list(value)
        elif name == "device":
            if value not in ("auto", "cpu"):
                raise QAError(f"device must be 'auto' or 'cpu', got {value!r}")
        else:
            low = 0 if name == "max_batch_delay_ms" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise QAError(f"{name} must be an integer >= {low}, got {value!r}")
        keys = SERVE_OVERRIDES[name]
        if keys[0] == "handler":
            config["handler"] = {**(config.get("handler") or {}), keys[1]: value}
        else:
            config.update({key: value for key in keys})
    return config


def override_archive(src: str | Path, dest: str | Path, **overrides: object) -> Path:
    """Copy the archive ``src`` to ``dest`` with :func:`apply_overrides` applied to its model-config.yaml.

    The copy is stored uncompressed (no recompression of the weights); the source stays untouched.
    """
    import yaml

    src, dest = Path(src), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(src) as zin:
        manifest = json.loads(zin.read("MAR-INF/MANIFEST.json"))
        name = manifest.get("model", {}).get("configFile")
        if not name or name not in zin.namelist():
            raise QAError(f"{src} has no model-config.yaml to override; rebuild it with `qa-serving archive`")
        config = apply_overrides(yaml.safe_load(zin.read(name)) or {}, **overrides)
        with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED, allowZip64=True) as zout:
            for info in zin.infolist():
                if info.filename == name:
                    zout.writestr(name, yaml.safe_dump(config, sort_keys=False))
                elif info.is_dir():
                    zout.writestr(info, b"")
                else:
                    with zin.open(info) as fin, zout.open(info.filename, "w", force_zip64=True) as fout:
                        shutil.copyfileobj(fin, fout, 1 << 20)
    return dest


# --- server ----------------------------------------------------------------------------------------


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
    path = Path(config_path) if config_path is not None else DEFAULT_CONFIG
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


def _config_ports(text: str) -> Ports:
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
    store: str | Path = DEFAULT_STORE,
    config_path: str | Path | None = None,
    models: list[str] | None = None,
    wait: bool = True,
    *,
    run_dir: str | Path = DEFAULT_RUN_DIR,
    ports: Ports | None = None,
    token_auth: bool = True,
    timeout: float = 300,
    overrides: dict[str, object] | None = None,
) -> Server:
    """Start TorchServe in the background with the archives ``models`` (names; default: every .mar in
    ``store``) and, with ``wait``, return once each has a ready worker.

    Logs go to ``run_dir/logs``, the keys to ``run_dir/key_file.json``. ``overrides`` (see
    :data:`SERVE_OVERRIDES`: workers, batch_size, max_batch_delay_ms, response_timeout_s, gpu_ids, threads,
    device) replace the archives' model-config.yaml values for this server: the archives are copied into
    ``run_dir/tmp/store`` with them applied (removed at stop). Example:
    ``server = start_server("model_store", models=["qa"], overrides={"workers": 2}); ...; server.stop()``.
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
    ports = ports or _config_ports(text)
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


# --- CLI -------------------------------------------------------------------------------------------


def add_parser(sub) -> None:
    """``qa-serving archive`` and ``qa-serving serve`` (picked up by :mod:`qa_serving.cli`)."""
    p = sub.add_parser(
        "archive",
        help="build a TorchServe model archive (.mar) of a model folder",
        description="Pack handlers/qa_handler.py, the qa_serving code, the model folder (weights, tokenizer, "
        "qa_config.json) and a model-config.yaml into STORE/NAME.mar with torch-model-archiver.",
    )
    p.add_argument(
        "--model", required=True, help="saved model folder (an exported ONNX folder with --backend onnx)"
    )
    p.add_argument("--name", default="qa", help="model name: NAME.mar and /predictions/NAME (default: qa)")
    p.add_argument("--store", default=str(DEFAULT_STORE), help="model store folder (default: model_store)")
    p.add_argument(
        "--backend",
        default="torch",
        choices=["torch", "onnx"],
        help="backend the workers use; env QA_BACKEND overrides it at serve time (default: torch)",
    )
    p.add_argument(
        "--onnx", dest="onnx_dir", help="also pack this ONNX export, so QA_BACKEND=onnx can switch"
    )
    p.add_argument(
        "--dtype", choices=["fp32", "fp16", "bf16"], help="torch precision (default: fp32; fp16 needs a GPU)"
    )
    p.add_argument(
        "--device", choices=["auto", "cpu"], help="auto: the worker's GPU when there is one (default)"
    )
    p.add_argument("--batch-size", type=int, default=8, help="requests per TorchServe batch (default: 8)")
    p.add_argument(
        "--max-batch-delay-ms", type=int, default=20, help="ms to wait for a batch to fill (default: 20)"
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    p.add_argument(
        "--response-timeout", type=int, default=120, help="s per batch before the worker is killed"
    )
    p.add_argument("--max-context-chars", type=int, help="longer contexts get a 413 error (default: 100000)")
    p.add_argument("--max-examples", type=int, help="examples in one list request (default: 64)")
    p.add_argument(
        "--feature-batch-size", type=int, help="windows per forward pass (default: qa_config batch_size)"
    )
    p.add_argument("--threads", type=int, help="torch threads per worker (default: cores // workers)")
    p.add_argument("--template", help="model-config.yaml template (default: model_store/model-config.yaml)")
    p.set_defaults(func=_run_archive)

    p = sub.add_parser(
        "serve",
        help="start (or --stop) TorchServe on loopback with the archives of a model store",
        description="Start TorchServe in the background on 127.0.0.1 with model_store/config.properties, "
        "load the archives, wait until they are ready, and print the URL, how to read the "
        "inference key and a curl example. Logs and key_file.json go to --run-dir.",
    )
    p.add_argument("--store", default=str(DEFAULT_STORE), help="model store folder (default: model_store)")
    p.add_argument("--models", nargs="+", help="archive names to load (default: every .mar in the store)")
    p.add_argument("--config", help=f"config.properties (default: {DEFAULT_CONFIG})")
    p.add_argument(
        "--run-dir", default=str(DEFAULT_RUN_DIR), help="logs, pid and key file (default: runs/torchserve)"
    )
    p.add_argument("--inference-port", type=int, help="default: from the config (8080)")
    p.add_argument("--management-port", type=int, help="default: from the config (8081)")
    p.add_argument("--metrics-port", type=int, help="default: from the config (8082)")
    p.add_argument("--grpc-inference-port", type=int, help="default: from the config (7070)")
    p.add_argument("--grpc-management-port", type=int, help="default: from the config (7071)")
    p.add_argument(
        "--timeout", type=float, default=300, help="s to wait for the models to be ready (default: 300)"
    )
    g = p.add_argument_group(
        "overrides of the archives' model-config.yaml (for this server, every model; default: the archive's)"
    )
    g.add_argument("--workers", type=int, help="worker processes per model (minWorkers = maxWorkers)")
    g.add_argument("--batch-size", type=int, help="requests per TorchServe batch (batchSize)")
    g.add_argument("--max-batch-delay-ms", type=int, help="ms to wait for a batch to fill (maxBatchDelay)")
    g.add_argument("--response-timeout", type=int, help="s per batch before the worker is killed")
    g.add_argument(
        "--threads", type=int, help="torch threads per worker (handler.threads; 0 = cores // workers)"
    )
    g.add_argument(
        "--device", choices=["auto", "cpu"], help="auto: each worker on its own GPU (gpu_id) when CUDA works"
    )
    g.add_argument(
        "--gpu-ids",
        type=lambda text: [int(i) for i in text.split(",") if i.strip()],
        help="GPUs the workers are spread over, e.g. 0,1 (deviceIds; default: every visible GPU)",
    )
    p.add_argument(
        "--disable-token-auth",
        action="store_true",
        help="no Authorization header needed (local debugging only)",
    )
    p.add_argument("--stop", action="store_true", help="stop the TorchServe of --run-dir")
    p.add_argument(
        "--print-key",
        nargs="?",
        const="inference",
        choices=["inference", "management", "API"],
        help="print a key of the running server (default kind: inference) and exit",
    )
    p.set_defaults(func=_run_serve)


def _run_archive(args) -> int:
    path = build_archive(
        args.model,
        args.name,
        args.store,
        args.backend,
        args.batch_size,
        args.max_batch_delay_ms,
        args.workers,
        response_timeout_s=args.response_timeout,
        dtype=args.dtype,
        device=args.device,
        max_context_chars=args.max_context_chars,
        max_examples=args.max_examples,
        feature_batch_size=args.feature_batch_size,
        threads=args.threads,
        onnx_dir=args.onnx_dir,
        template=args.template,
    )
    print(f"wrote {path}\nserve it: qa-serving serve --store {args.store} --models {args.name}")
    return 0


def _run_serve(args) -> int:
    if args.print_key:
        print(read_token(args.run_dir, args.print_key))
        return 0
    if args.stop:
        print(
            "TorchServe stopped"
            if stop_server(args.run_dir)
            else f"no TorchServe running from {args.run_dir}"
        )
        return 0
    ports = None
    flags = ("inference", "management", "metrics", "grpc_inference", "grpc_management")
    if any(getattr(args, f"{f}_port") for f in flags):
        base = _config_ports(render_config(args.config, None))
        ports = Ports(**{f: getattr(args, f"{f}_port") or getattr(base, f) for f in flags})
    server = start_server(
        args.store,
        args.config,
        args.models,
        run_dir=args.run_dir,
        ports=ports,
        token_auth=not args.disable_token_auth,
        timeout=args.timeout,
        overrides={name: getattr(args, _OVERRIDE_FLAGS.get(name, name)) for name in SERVE_OVERRIDES},
    )
    print(serve_message(server))
    return 0


def serve_message(server: Server) -> str:
    """What ``qa-serving serve`` prints: URLs, how to read the key, a curl example, how to stop."""
    model = server.models[0]
    auth = ' -H "Authorization: Bearer $KEY"' if server.token_auth else ""
    run = server.run_dir
    return "\n".join(
        [
            f"TorchServe is up (pid {server.pid}), models: {', '.join(server.models)}",
            f"  inference:  {server.inference_url}/predictions/<model>",
            f"  management: {server.management_url}   metrics: {server.metrics_url}",
            f"  logs:       {run / 'logs'}",
            *(
                [
                    f"  keys:       {run / 'key_file.json'}  (KEY=$(qa-serving serve --print-key --run-dir {run}))"
                ]
                if server.token_auth
                else ["  token authorization is OFF"]
            ),
            "try it:",
            *([f"  KEY=$(qa-serving serve --print-key --run-dir {run})"] if server.token_auth else []),
            f"  curl -s {server.inference_url}/predictions/{model}{auth} -H 'Content-Type: application/json' \\",
            '       -d \'{"question": "Who wrote Hamlet?", "context": "Hamlet was written by Shakespeare."}\'',
            f"stop it: qa-serving serve --stop --run-dir {run}",
        ]
    )
