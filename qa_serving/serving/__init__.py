"""TorchServe deployment: model archives (:mod:`.archive`), the one table of their settings
(:mod:`.settings`) and the server's lifecycle (:mod:`.server`). The ``qa-serving archive | serve``
commands live in :mod:`qa_serving.cli.serve`; the request model in :mod:`qa_serving.serving.request`, its envelopes in ``json_api`` / ``v2_api``, and the loaded model every server adapts in :mod:`qa_serving.serving.service`.
"""

from __future__ import annotations

from qa_serving.serving.archive import DEFAULT_STORE, build_archive, handler_file, override_archive, zip_package
from qa_serving.serving.server import (
    DEFAULT_RUN_DIR,
    HOST,
    Ports,
    Server,
    default_config_text,
    read_token,
    render_config,
    start_server,
    stop_server,
    wait_ready,
)
from qa_serving.serving.settings import (
    SERVE_OVERRIDES,
    SETTINGS,
    HandlerSettings,
    Setting,
    apply_overrides,
    default_model_config,
    model_config,
)

__all__ = [
    "DEFAULT_RUN_DIR",
    "DEFAULT_STORE",
    "HOST",
    "SERVE_OVERRIDES",
    "SETTINGS",
    "HandlerSettings",
    "Ports",
    "Server",
    "Setting",
    "apply_overrides",
    "build_archive",
    "default_config_text",
    "default_model_config",
    "handler_file",
    "model_config",
    "override_archive",
    "read_token",
    "render_config",
    "start_server",
    "stop_server",
    "wait_ready",
    "zip_package",
]
