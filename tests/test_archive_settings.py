"""The one table of archive settings (:mod:`qa_serving.serving.settings`): the defaults of model-config.yaml,
the ``archive``/``serve`` flags and the handler's settings all come from it. No TorchServe needed."""

from __future__ import annotations

import argparse

import pytest

from qa_serving.cli import serve as commands
from qa_serving.errors import QAError
from qa_serving.serving import (
    SETTINGS,
    HandlerSettings,
    default_config_text,
    default_model_config,
    model_config,
)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    commands.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_defaults_of_yaml_handler_and_flags_are_the_tables():
    config = default_model_config()
    assert (config["batchSize"], config["minWorkers"], config["maxWorkers"]) == (8, 1, 1)
    assert "deviceIds" not in config  # a serve-time setting only
    assert HandlerSettings() == HandlerSettings(**config["handler"])
    for name, setting in SETTINGS.items():
        if setting.handler:
            assert getattr(HandlerSettings(), name) == setting.default == config["handler"][name]
    args = parse("archive", "--model", "m")
    assert all(getattr(args, name) is None for name, s in SETTINGS.items() if s.archive)  # unset -> table


def test_given_values_are_checked_and_a_template_keeps_its_own():
    assert model_config(batch_size=16, threads=2)["batchSize"] == 16
    template = {"batchSize": 32, "minWorkers": 2, "maxWorkers": 2, "handler": {"backend": "onnx"}}
    config = model_config(template, workers=None, precision="bf16")
    assert config["batchSize"] == 32 and config["handler"] == {"backend": "onnx", "precision": "bf16"}
    for bad in ({"batch_size": 0}, {"backend": "tf"}, {"max_batch_delay_ms": -1}, {"gpu_ids": [0]},
                {"replicas": 2}):  # fmt: skip
        with pytest.raises(QAError):
            model_config(**bad)
    with pytest.raises(QAError, match="unknown handler setting"):
        model_config({"handler": {"thread": 1}})


def test_serve_flags_are_the_serve_overrides():
    args = parse("serve", "--workers", "2", "--gpu-ids", "0,1", "--response-timeout", "30")
    overrides = {name: getattr(args, name) for name, s in SETTINGS.items() if s.serve}
    assert overrides == {"workers": 2, "batch_size": None, "max_batch_delay_ms": None, "response_timeout_s": 30,
                         "gpu_ids": [0, 1], "device": None, "threads": None}  # fmt: skip


def test_server_config_ships_with_the_package():
    text = default_config_text()
    assert "disable_token_authorization=false" in text and "enable_model_api=false" in text
