"""`--help` is the CLI's documentation: every command's must render as written."""

import argparse

import pytest

from qa_serving.cli.main import build_parser


def _commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_command_help_renders_its_text_verbatim(name):
    text = _commands()[name].format_help()
    assert "option_strings" not in text  # a bare '%' in a help string makes argparse print its own dict


def test_train_help_keeps_percent_signs_and_states_each_default_once():
    text = " ".join(_commands()["train"].format_help().split())
    assert "measured 7-13% slower (docs/hardware.md). (default: 1)" in text
    assert "every N steps (default: every epoch)." in text
    assert "every epoch). (default: None)" not in text
