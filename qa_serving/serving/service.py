"""A loaded model behind a server: wire envelopes in, the one core call, wire envelopes out.

Every server is an adapter over :class:`QAService`: the TorchServe handler (``handlers/qa_handler.py``)
and the KServe runtime call :meth:`QAService.parse` per request body, :meth:`QAService.answer` once for a
batch of requests (all their examples share windows and forward passes), and :meth:`QAService.render` for
the bodies. A new server is an envelope (if its wire format is new) plus these three calls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qa_serving.core.answering import answer
from qa_serving.core.backends import load_backend
from qa_serving.core.config import QAConfig
from qa_serving.core.windowing import load_tokenizer
from qa_serving.errors import QAError
from qa_serving.serving.json_api import parse_json, render_json
from qa_serving.serving.request import Limits, Request, RequestError, decode_body
from qa_serving.serving.settings import HandlerSettings
from qa_serving.serving.v2_api import is_v2_body, parse_v2, render_v2

logger = logging.getLogger(__name__)


@dataclass
class BatchStats:
    """What the last :meth:`QAService.answer` did (servers turn it into metrics and log lines)."""

    requests: int = 0
    examples: int = 0
    windows: int = 0
    seconds: float = 0.0


@dataclass
class QAService:
    """A model, its tokenizer and its :class:`QAConfig`, answering requests through the one core call."""

    backend: Any
    tokenizer: Any
    config: QAConfig
    settings: HandlerSettings = field(default_factory=HandlerSettings)
    last: BatchStats = field(default_factory=BatchStats)

    @classmethod
    def load(
        cls, model_dir: str | Path, settings: HandlerSettings | None = None, device: str = "cpu"
    ) -> QAService:
        """Load a model folder (PyTorch, ONNX or OpenVINO) with the settings' backend and precision, then
        answer one example end to end, so a broken model fails the load, not the first request."""
        settings = settings or HandlerSettings()
        config = QAConfig.from_model_dir(model_dir)
        config = config.with_options(settings.options)  # the handler's `options:` over qa_config.json
        if settings.feature_batch_size:
            config = config.replace(batch_size=settings.feature_batch_size)
        backend = load_backend(model_dir, backend=settings.backend, device=device, dtype=settings.precision)
        limit = getattr(backend, "max_positions", None)
        if limit is not None and config.max_length > limit:  # the warm-up is short: it would not show
            raise QAError(
                f"max_seq_len {config.max_length} (qa_config.json or the handler's options) is longer than the "
                f"model's {limit} positions: a long context would fail every request of its batch; set it to "
                f"{limit} or less"
            )
        service = cls(backend, load_tokenizer(model_dir), config, settings)
        service.warm_up()
        return service

    @property
    def limits(self) -> Limits:
        return Limits.of(self.settings)

    def warm_up(self) -> None:
        answer(self.backend, self.tokenizer, [("warm up?", "warm up the model.")], self.config)

    def parse(self, body: Any) -> Request:
        """One request body -> its :class:`Request` (:func:`parse_request` with this model's limits)."""
        return parse_request(body, self.limits)

    def answer(self, requests: Sequence[Request]) -> list[list[list[dict]]]:
        """One core call for every valid example of every request; per request, per example, its answers.

        A request with an error gets ``[]``. The examples of all requests share windows and forward passes.
        If that shared call fails, each request is answered alone, so one request the checks let through
        but the model cannot take fails only itself (its ``error`` set: 400 for a :class:`QAError`, else 500).
        """
        try:
            return self._answer_together(requests)
        except Exception as err:  # noqa: BLE001 - isolated per request below; logged by _answer_error
            live = [req for req in requests if req.error is None]
            if len(live) > 1:
                logger.warning("a batch of %d requests failed (%s); answering them one by one", len(live), err)
                return [self.answer([req])[0] if req.error is None else [] for req in requests]
            for req in live:
                req.error = _answer_error(err)
            return [[] for _ in requests]

    def _answer_together(self, requests: Sequence[Request]) -> list[list[list[dict]]]:
        examples = [ex for req in requests if req.error is None for ex in req.examples]
        start = time.perf_counter()
        predictions = answer(self.backend, self.tokenizer, examples, self.config) if examples else []
        self.last = BatchStats(
            len(requests), len(examples), sum(p.windows for p in predictions), time.perf_counter() - start
        )
        out, cursor = [], 0
        for req in requests:
            n = 0 if req.error is not None else len(req.examples)
            out.append([p.answers for p in predictions[cursor : cursor + n]])
            cursor += n
        return out

    def render(
        self,
        requests: Sequence[Request],
        answers: Sequence[list[list[dict]]],
        model_name: str | None = None,
        model_version: str | None = None,
    ) -> list[tuple[int, Any]]:
        """``(HTTP status, body)`` per request, in its own envelope (:func:`render`)."""
        return render(requests, answers, model_name, model_version)

    def handle(
        self, bodies: Sequence[Any], model_name: str | None = None, model_version: str | None = None
    ) -> list[tuple[int, Any]]:
        """Parse, answer and render a batch of request bodies."""
        requests = [self.parse(body) for body in bodies]
        return self.render(requests, self.answer(requests), model_name, model_version)


def _answer_error(err: Exception) -> RequestError:
    """The error a request gets when answering it failed: its own bad input (a :class:`QAError`: 400), or
    the server's (500, logged with its traceback)."""
    if isinstance(err, RequestError):
        return err
    if isinstance(err, QAError):
        return RequestError(400, str(err))
    logger.error("answering a request failed", exc_info=err)
    return RequestError(500, f"internal error while answering: {type(err).__name__}: {err}")


def parse_request(body: Any, limits: Limits) -> Request:
    """One request body (bytes, text or decoded JSON; project JSON or v2) -> its :class:`Request`.
    Never raises: a bad body carries its :class:`RequestError` (4xx), an unexpected failure a 500."""
    try:
        body = decode_body(body)
        return parse_v2(body, limits) if is_v2_body(body) else parse_json(body, limits)
    except RequestError as err:
        return Request(error=err)
    except Exception as err:  # one odd request must not fail the others
        logger.exception("a request could not be parsed")
        return Request(error=RequestError(500, f"internal error while parsing the request: {err}"))


def render(
    requests: Sequence[Request],
    answers: Sequence[list[list[dict]]],
    model_name: str | None = None,
    model_version: str | None = None,
) -> list[tuple[int, Any]]:
    """``(HTTP status, body)`` per request, in its own envelope; ``answers``: per request, per example."""
    out = []
    for req, mine in zip(requests, answers):
        if req.error is not None:
            out.append((req.error.status, req.error.body()))
        elif req.envelope == "v2":
            try:
                out.append((200, render_v2(req, mine, model_name, model_version)))
            except RequestError as err:  # an output the model cannot give (probability without calibrator)
                out.append((err.status, err.body()))
        else:
            out.append((200, render_json(req, mine)))
    return out
