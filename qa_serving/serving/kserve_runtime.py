"""A KServe-native runtime: :class:`QAModel` (a ``kserve.Model``) on KServe's own ``ModelServer``.

Why: TorchServe is in limited maintenance, KServe's TorchServe runtime is being removed upstream
(kserve/kserve#5638) and KServe's Hugging Face runtime refuses extractive QA. This runtime serves the
same bodies as the TorchServe handler through the same object, :class:`~qa_serving.serving.service.QAService`
(parse per request, one ``answer`` per batch, render): no second copy of the core path.

- Open Inference Protocol v2 over REST (``/v2/models/<name>/infer``) and gRPC (KServe's servicer):
  BYTES inputs ``question`` and ``context``, optional ``parameters``; outputs answer, score, start, end.
- The project's JSON body on KServe's v1 path, ``POST /v1/models/<name>:predict``; also KServe's v1
  envelope ``{"instances": [...]}`` -> ``{"predictions": [...]}``, what KServe's batcher sidecar sends.
- Concurrent requests share forward passes (:class:`~qa_serving.serving.batcher.RequestBatcher`:
  ``batch_size``, ``max_batch_delay_ms``), a bounded queue (``job_queue_size``: 503 + ``Retry-After``),
  a deadline per request (``deadline_s``: 504).
- SIGTERM: readiness turns false and new requests get 503 for :data:`ACCEPT_WINDOW_S` (so connections
  already in the listen backlog get an answer rather than a reset), then both servers stop accepting, the
  requests already taken are answered, and the process exits 0 within ``grace_s``.
- ``/v2/health/ready``: true only after load and warm-up (the server starts after them) and until SIGTERM.
- ``/metrics``: KServe's Prometheus metrics plus ``qa_questions_total``, ``qa_windows_total``,
  ``qa_batch_size``, ``qa_refused_total{reason}``, ``qa_queue_depth``.
- ``/v1/models/<name>/openapi.json``: :func:`~qa_serving.serving.openapi.openapi_spec`.

Deliberate simplifications: one process, one model (scale with replicas); gRPC listens on all interfaces
(KServe's ``GRPCServer`` binds ``[::]``), REST on ``host`` (loopback by default).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qa_serving.errors import QAError
from qa_serving.serving.batcher import Refused, RequestBatcher
from qa_serving.serving.settings import SETTINGS, HandlerSettings

logger = logging.getLogger(__name__)

# After SIGTERM, new requests get 503 this long before the listeners close (like a preStop hook's sleep);
# QA_ACCEPT_WINDOW_S lengthens it (the tests do, on slow machines).
ACCEPT_WINDOW_S = float(os.environ.get("QA_ACCEPT_WINDOW_S", "1.0"))
GRPC_CODES = {
    400: "INVALID_ARGUMENT",
    413: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def import_kserve() -> Any:
    """``kserve``, imported with an empty ``sys.argv``: ``kserve.model_server`` parses the command line at
    import (``parse_known_args``, prefix matching), which would read this CLI's flags as its own."""
    argv = sys.argv
    sys.argv = argv[:1]
    try:
        import kserve
        import kserve.model_server
    except ImportError as err:
        raise QAError(
            f"the KServe engine needs kserve ({err}): pip install 'qa-serving[kserve]' (or pip install kserve==0.21.0)"
        ) from None
    finally:
        sys.argv = argv
    return kserve


@dataclass(frozen=True)
class RuntimeSettings:
    """What the runtime adds to the handler settings: batching, overload and shutdown (rows of SETTINGS)."""

    batch_size: int = SETTINGS["batch_size"].default
    max_batch_delay_ms: int = SETTINGS["max_batch_delay_ms"].default
    job_queue_size: int = SETTINGS["job_queue_size"].default
    deadline_s: float = SETTINGS["deadline_s"].default
    grace_s: float = SETTINGS["grace_s"].default


kserve = import_kserve()
from grpc import StatusCode
from grpc_interceptor.exceptions import GrpcException
from kserve.protocol.infer_type import InferRequest, InferResponse, to_http_parameters
from kserve.utils.utils import generate_uuid
from prometheus_client import Counter, Gauge, Histogram

QUESTIONS = Counter("qa_questions", "questions answered", ["model_name"])
WINDOWS = Counter("qa_windows", "windows run through the model", ["model_name"])
BATCH = Histogram(
    "qa_batch_size", "requests per forward batch", ["model_name"], buckets=(1, 2, 4, 8, 16, 32, 64, 128)
)
REFUSED = Counter("qa_refused", "requests answered 503/504 by the runtime", ["model_name", "reason"])
QUEUE = Gauge("qa_queue_depth", "requests waiting for a batch", ["model_name"])


class ServingError(GrpcException):
    """An HTTP error body with its status and headers; on gRPC, the matching status code."""

    def __init__(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        code = getattr(StatusCode, GRPC_CODES.get(status, "INVALID_ARGUMENT" if status < 500 else "INTERNAL"))
        super().__init__(details=str(body.get("error", body)), status_code=code)
        self.status, self.body, self.headers = status, body, headers or {}


def v2_body(request: InferRequest) -> dict:
    """KServe's decoded v2 request (REST or gRPC) as the plain v2 dict the service parses (its checks,
    its error wording), e.g. ``{"inputs": [{"name": "question", "datatype": "BYTES", ...}, ...]}``."""
    inputs = []
    for tensor in request.inputs:
        data = tensor.data
        if getattr(tensor, "_raw_data", None) is not None:  # gRPC raw_input_contents
            try:
                data = tensor.as_numpy().reshape(-1).tolist()
            except (ValueError, TypeError, struct.error) as err:  # bytes that do not decode as datatype + shape say
                message = f"input '{tensor.name}': raw_input_contents do not match its datatype and shape ({err})"
                raise ServingError(400, {"error": message, "status": 400}) from None
        inputs.append({"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape),
                       "data": list(data) if data is not None else None})  # fmt: skip
    body: dict[str, Any] = {"inputs": inputs}
    params = request.parameters
    if params and not isinstance(params, dict):  # gRPC: a protobuf map of InferParameter
        params = to_http_parameters(params)
    if params:
        body["parameters"] = dict(params)
    if request.request_outputs:
        body["outputs"] = [{"name": o.name} for o in request.request_outputs]
    if request.id:
        body["id"] = request.id
    return body


class QAModel(kserve.Model):
    """Extractive QA over :class:`QAService`; ``predict`` queues each request for a shared batch."""

    def __init__(
        self,
        name: str,
        model_dir: str | Path,
        settings: HandlerSettings | None = None,
        runtime: RuntimeSettings | None = None,
        device: str = "cpu",
    ) -> None:
        super().__init__(name)
        self.model_dir, self.settings, self.device = Path(model_dir), settings, device
        self.runtime = runtime or RuntimeSettings()
        self.service = None
        self.draining = False
        self.batcher = RequestBatcher(
            self._run,
            max_batch_size=self.runtime.batch_size,
            max_wait_ms=self.runtime.max_batch_delay_ms,
            max_queue=self.runtime.job_queue_size,
            deadline_s=self.runtime.deadline_s,
            on_batch=lambda n, _s: BATCH.labels(self.name).observe(n),
        )

    def load(self) -> bool:
        """Load the model and answer one example (QAService.load warms up): ready only after both."""
        from qa_serving.serving.service import QAService

        self.service = QAService.load(self.model_dir, self.settings, device=self.device)
        self.ready = True
        return self.ready

    def _run(self, requests: list) -> list[tuple[int, Any]]:
        """One batch, in the batcher's thread: the one core call, then a body per request."""
        answers = self.service.answer(requests)
        stats = self.service.last
        QUESTIONS.labels(self.name).inc(stats.examples)
        WINDOWS.labels(self.name).inc(stats.windows)
        return self.service.render(requests, answers, self.name, None)

    async def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        v2 = isinstance(payload, InferRequest)
        # KServe's v1 envelope, {"instances": [{question, context}, ...]} -> {"predictions": [...]}: what
        # KServe's batcher sidecar sends (it concatenates the instances of several clients' requests).
        instances = not v2 and isinstance(payload, dict) and set(payload) == {"instances"}
        request = self.service.parse(
            v2_body(payload) if v2 else payload["instances"] if instances else payload
        )
        if request.error is not None:
            raise ServingError(request.error.status, request.error.body())
        QUEUE.labels(self.name).set(self.batcher.waiting)
        try:
            status, body = await self.batcher.submit(request)
        except Refused as err:
            REFUSED.labels(self.name, type(err).__name__.lower()).inc()
            raise ServingError(err.status, err.body(), err.headers) from None
        if status != 200:
            raise ServingError(status, body)
        if v2:
            # KServe's v2 response model requires an id; TorchServe's v2 body omits it when none was sent.
            return InferResponse.from_rest({**body, "id": body.get("id") or generate_uuid()})
        return {"predictions": body} if instances else body

    def drain(self) -> None:
        """SIGTERM: readiness false, new requests 503; those already taken are still answered."""
        self.draining = True
        self.batcher.close()


class QAModelServer(kserve.ModelServer):
    """KServe's ModelServer with the QA routes, error bodies and the drain on SIGTERM."""

    def __init__(self, model: QAModel, host: str = "127.0.0.1", **kwargs: Any) -> None:
        kwargs.setdefault("grace_period", int(model.runtime.grace_s))
        kwargs.setdefault("enable_latency_logging", False)
        super().__init__(**kwargs)
        self.model, self.host = model, host
        self._stopping = False

        async def ready() -> bool:  # KServe's REST /v2/health/ready and gRPC ServerReady both ask this
            return model.ready and not model.draining

        self.dataplane.ready = ready
        self._routes()

    def _routes(self) -> None:
        """Routes and handlers on KServe's app, added before KServe's own (the first match wins)."""
        from fastapi import Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import JSONResponse
        from kserve.model_server import app

        async def openapi(model_name: str) -> JSONResponse:
            from qa_serving.serving.openapi import openapi_spec

            return JSONResponse(openapi_spec())

        async def serving_error(_: Request, err: ServingError) -> JSONResponse:
            return JSONResponse(err.body, status_code=err.status, headers=err.headers)

        async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
            problems = "; ".join(
                f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in err.errors()
            )
            body = {"error": f"not a valid request body: {problems}", "status": 400}
            return JSONResponse(body, status_code=400)

        async def too_deep(_: Request, err: RecursionError) -> JSONResponse:
            body = {"error": "the request body is nested too deeply (JSON objects/lists)", "status": 400}
            return JSONResponse(body, status_code=400)

        app.add_api_route("/v1/models/{model_name}/openapi.json", openapi, methods=["GET"])
        app.add_exception_handler(ServingError, serving_error)
        app.add_exception_handler(RecursionError, too_deep)
        app.add_exception_handler(RequestValidationError, invalid)

    async def _serve(self) -> None:
        rest = self._rest_server
        if rest is not None:
            rest.config.host = self.host
            uvicorn_exit = rest._server.handle_exit  # uvicorn installs it as the SIGTERM/SIGINT handler

            def handle_exit(sig: int, frame: Any) -> None:
                if self.model.draining:
                    return uvicorn_exit(sig, frame)  # a second signal: uvicorn's own (SIGINT forces)
                self.model.drain()
                loop.call_soon_threadsafe(lambda: loop.create_task(self._drain(sig, frame, uvicorn_exit)))

            loop = asyncio.get_running_loop()
            rest._server.handle_exit = handle_exit
        await super()._serve()

    async def _drain(self, sig: int, frame: Any, uvicorn_exit: Any) -> None:
        logger.info("SIGTERM: draining (%d requests taken), then stopping", self.model.batcher.taken)
        await asyncio.sleep(ACCEPT_WINDOW_S)
        uvicorn_exit(sig, frame)  # stop accepting; finish the requests in flight (up to grace_period)
        await self._stop_grpc()

    async def _stop_grpc(self) -> None:
        if self._grpc_server is not None and not self._stopping:
            self._stopping = True
            await self._grpc_server.stop(sig=signal.SIGTERM)

    def stop(self, sig: int) -> None:
        """KServe's signal handler (uvicorn re-raises the signal once it has stopped): stop gRPC, unload."""
        self.model.drain()
        asyncio.get_event_loop().create_task(self._stop_grpc())
        for name in list(self.registered_models.get_models()):
            self.registered_models.unload(name)


def serve(
    model_dir: str | Path,
    name: str = "qa",
    http_port: int = 8080,
    grpc_port: int = 8081,
    host: str = "127.0.0.1",
    settings: HandlerSettings | None = None,
    runtime: RuntimeSettings | None = None,
    enable_grpc: bool = True,
    device: str = "cpu",
) -> int:
    """Load, warm up and serve ``model_dir`` in the foreground until SIGTERM/SIGINT; 0 after a clean drain."""
    import torch

    from qa_serving.core.hardware import available_cpus

    settings = settings or HandlerSettings.resolve(None)
    torch.set_num_threads(settings.threads or available_cpus())
    model = QAModel(name, model_dir, settings, runtime, device=device)
    model.load()
    server = QAModelServer(
        model, host=host, http_port=http_port, grpc_port=grpc_port, enable_grpc=enable_grpc
    )
    logger.info(
        "KServe runtime: model %r from %s on http://%s:%d (v1 + v2) and gRPC :%d; batch %d, wait %d ms, "
        "queue %d, deadline %g s, grace %g s",
        name, model_dir, host, http_port, grpc_port, model.runtime.batch_size,
        model.runtime.max_batch_delay_ms, model.runtime.job_queue_size, model.runtime.deadline_s,
        model.runtime.grace_s,
    )  # fmt: skip
    server.start([model])
    return 0
