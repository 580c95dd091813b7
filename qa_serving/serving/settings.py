"""The one table of model-archive settings: defaults, where each goes in model-config.yaml, and checks.

``qa-serving archive`` flags, the keys of the model-config.yaml packed into a ``.mar``, the serve-time
overrides of ``qa-serving serve`` and the handler's own settings (with their ``QA_*`` environment
variables) are all rows of :data:`SETTINGS`; the argparse flags, :func:`model_config`,
:func:`apply_overrides` and :class:`HandlerSettings` are generated from it, so a default or a range is
written once. TorchServe reads the top-level keys; the handler reads the ``handler:`` section.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from qa_serving.core.options import PRECISIONS, parse_options
from qa_serving.errors import QAError


@dataclass(frozen=True)
class Setting:
    """One setting. ``keys``: its place in model-config.yaml (``("handler", "threads")`` = ``handler.threads``).

    ``archive``/``serve``: whether ``qa-serving archive`` sets it / ``qa-serving serve`` may override it.
    """

    name: str
    keys: tuple[str, ...]
    default: Any
    help: str
    kind: type = int
    low: int | None = None
    choices: tuple[str, ...] | None = None
    env: str | None = None
    archive: bool = True
    serve: bool = False

    @property
    def handler(self) -> bool:
        return self.keys[0] == "handler"

    def check(self, value: Any) -> Any:
        """``value`` if valid for this setting, else a QAError that names the setting and the range."""
        if self.name == "gpu_ids":
            if not value or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value):
                raise QAError(f"gpu_ids must be a non-empty list of GPU indices (e.g. 0,1), got {value!r}")
            return list(value)
        if self.choices is not None:
            if value not in self.choices:
                raise QAError(f"{self.name} must be one of {', '.join(map(repr, self.choices))}, got {value!r}")
            return value
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or (self.low is not None and value < self.low)
        ):
            raise QAError(f"{self.name} must be an integer >= {self.low}, got {value!r}")
        return value


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        # --- TorchServe (frontend) keys ---
        Setting("workers", ("minWorkers", "maxWorkers"), 1, "worker processes per model", low=1, serve=True),
        Setting("batch_size", ("batchSize",), 8, "requests per TorchServe batch", low=1, serve=True),
        Setting(
            "max_batch_delay_ms", ("maxBatchDelay",), 20, "ms to wait for a batch to fill", low=0, serve=True
        ),
        Setting(
            "response_timeout_s",
            ("responseTimeout",),
            120,
            "s per batch before the worker is killed",
            low=1,
            serve=True,
        ),
        Setting(
            "startup_timeout_s", ("startupTimeout",), 120, "s a worker may take to load the model", low=1
        ),
        # --- overload and shutdown: TorchServe reads jobQueueSize; the KServe runtime reads all three ---
        Setting(
            "job_queue_size",
            ("jobQueueSize",),
            100,
            "requests waiting per model; more get 503 + Retry-After at once",
            low=1,
        ),
        Setting(
            "deadline_s",
            ("deadline_s",),
            150,
            "s a request may take, queue + compute, before a 504 (KServe runtime; the gateway's --deadline)",
            low=1,
            archive=False,
        ),
        Setting(
            "grace_s",
            ("grace_s",),
            25,
            "s after SIGTERM to finish the requests already taken (KServe runtime; keep it under the pod's "
            "terminationGracePeriodSeconds)",
            low=1,
            archive=False,
        ),
        Setting(
            "gpu_ids",
            ("deviceIds",),
            None,
            "GPUs the workers are spread over, e.g. 0,1 (default: every visible GPU)",
            kind=list,
            archive=False,
            serve=True,
        ),
        # --- the handler's own section ---
        Setting(
            "backend",
            ("handler", "backend"),
            "torch",
            "backend the workers use (openvino: the archived IR folder, or a PyTorch model converted at load)",
            kind=str,
            choices=("torch", "onnx", "openvino"),
            env="QA_BACKEND",
        ),
        Setting(
            "precision",
            ("handler", "precision"),
            "fp32",
            "torch/OpenVINO precision (fp16: GPU only; auto: bf16 where the hardware has it, logged)",
            kind=str,
            choices=PRECISIONS,
            env="QA_PRECISION",
        ),
        Setting(
            "device",
            ("handler", "device"),
            "auto",
            "auto: the worker's GPU (gpu_id) when CUDA works, else CPU",
            kind=str,
            choices=("auto", "cpu"),
            env="QA_DEVICE",
            serve=True,
        ),
        Setting(
            "max_context_chars",
            ("handler", "max_context_chars"),
            100_000,
            "longer contexts get a 413 error",
            low=1,
            env="QA_MAX_CONTEXT_CHARS",
        ),
        Setting(
            "max_examples",
            ("handler", "max_examples"),
            64,
            "examples in one list request; more get a 413",
            low=1,
            env="QA_MAX_EXAMPLES",
        ),
        Setting(
            "feature_batch_size",
            ("handler", "feature_batch_size"),
            0,
            "windows per forward pass (0: qa_config.json batch_size)",
            low=0,
            env="QA_FEATURE_BATCH_SIZE",
        ),
        Setting(
            "threads",
            ("handler", "threads"),
            0,
            "torch threads per worker (0: CPU cores // workers)",
            low=0,
            env="QA_THREADS",
            serve=True,
        ),
    )
}

SERVE_OVERRIDES = tuple(name for name, s in SETTINGS.items() if s.serve)


def _put(config: dict, setting: Setting, value: Any) -> None:
    if setting.handler:
        config["handler"] = {**(config.get("handler") or {}), setting.keys[1]: value}
    else:
        config.update({key: value for key in setting.keys})


def default_model_config() -> dict:
    """The model-config.yaml of an archive built with every default.

    Example: ``default_model_config()["batchSize"]`` -> ``8``; ``...["handler"]["backend"]`` -> ``"torch"``.
    """
    config: dict = {}
    for setting in SETTINGS.values():
        if setting.archive:
            _put(config, setting, setting.default)
    return config


def model_config(template: Mapping | None = None, **values: Any) -> dict:
    """A model-config.yaml dict: ``template`` (default: :func:`default_model_config`) with the ``values``
    that are not None checked and applied. Example: ``model_config(batch_size=16)["batchSize"]`` -> 16."""
    unknown = sorted(n for n in values if n not in SETTINGS or not SETTINGS[n].archive)
    if unknown:
        known = sorted(n for n, s in SETTINGS.items() if s.archive)
        raise QAError(f"unknown archive setting(s) {unknown}; known: {known}")
    config = json.loads(json.dumps(dict(template))) if template is not None else default_model_config()
    for name, value in values.items():
        if value is not None:
            _put(config, SETTINGS[name], SETTINGS[name].check(value))
    HandlerSettings.resolve(config.get("handler"), env={})  # a bad handler section fails here, not at load
    return config


def apply_overrides(config: Mapping, **overrides: Any) -> dict:
    """A copy of a model-config.yaml dict with the serve-time ``overrides`` that are not None applied.

    Example: ``apply_overrides({"minWorkers": 1, "handler": {}}, workers=2, threads=1)``
    -> ``{"minWorkers": 2, "maxWorkers": 2, "handler": {"threads": 1}}``.
    """
    unknown = set(overrides) - set(SERVE_OVERRIDES)
    if unknown:
        raise QAError(f"unknown serve override(s) {sorted(unknown)}; known: {sorted(SERVE_OVERRIDES)}")
    config = json.loads(json.dumps(dict(config)))
    for name, value in overrides.items():
        if value is not None:
            _put(config, SETTINGS[name], SETTINGS[name].check(value))
    return config


def _handler_default(name: str) -> Any:
    return dataclasses.field(default=SETTINGS[name].default, metadata={"help": SETTINGS[name].help})


@dataclass
class HandlerSettings:
    """The ``handler:`` section of model-config.yaml; each field can be overridden by its env var."""

    backend: str = _handler_default("backend")
    precision: str = _handler_default("precision")
    device: str = _handler_default("device")
    max_context_chars: int = _handler_default("max_context_chars")
    max_examples: int = _handler_default("max_examples")
    feature_batch_size: int = _handler_default("feature_batch_size")
    threads: int = _handler_default("threads")
    options: dict = dataclasses.field(
        default_factory=dict,
        metadata={"help": "answer options of the one options table (e.g. max_answer_len: 20), over qa_config.json"},
    )

    ENV: ClassVar[dict[str, str]] = {n: s.env for n, s in SETTINGS.items() if s.handler and s.env}

    def __post_init__(self) -> None:
        try:
            self.options = parse_options(self.options or {}, where="handler option")
        except QAError as err:
            raise QAError(f"handler.options: {err}") from None
        for f in dataclasses.fields(self):
            if f.name == "options":
                continue
            try:
                SETTINGS[f.name].check(getattr(self, f.name))
            except QAError as err:
                raise QAError(f"handler.{err}") from None

    @classmethod
    def resolve(
        cls, section: Mapping[str, Any] | None, env: Mapping[str, str] = os.environ
    ) -> HandlerSettings:
        """Settings from the yaml section, then the env vars on top.

        Example: ``resolve({"backend": "torch"}, {"QA_BACKEND": "onnx"}).backend`` -> ``"onnx"``.
        """
        section = dict(section or {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(section) - set(fields)
        if unknown:
            raise QAError(
                f"unknown handler setting(s) {sorted(unknown)} in model-config.yaml; known: {sorted(fields)}"
            )
        for name, var in cls.ENV.items():
            if env.get(var):
                section[name] = env[var]
        values = {}
        for name, value in section.items():
            if name == "options":
                values[name] = value
                continue
            kind = SETTINGS[name].kind
            try:
                values[name] = kind(value)
            except (TypeError, ValueError):
                raise QAError(f"handler setting {name}={value!r} is not a valid {kind.__name__}") from None
        return cls(**values)
