"""Serving: what every server shares, and TorchServe's deployment.

- The request model (:mod:`.request`) and one envelope per wire format (:mod:`.json_api`, :mod:`.v2_api`);
  :mod:`.service` is the loaded model every server adapts (``QAService``: parse -> one core call -> render).
- Servers: the TorchServe handler (``qa_serving.handlers.qa_handler``) and the KServe runtime
  (:mod:`.kserve_runtime`, with :mod:`.batcher`); :mod:`.openapi` describes the JSON body.
- TorchServe deployment: model archives (:mod:`.archive`), the one table of their settings (:mod:`.settings`)
  and the server's lifecycle (:mod:`.server`); the commands live in :mod:`qa_serving.cli.serve`.
"""
from __future__ import annotations

from qa_serving.serving.archive import (
    DEFAULT_STORE,
    build_archive,
    handler_file,
    override_archive,
    zip_package,
)
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
