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


def test_answer_flags_say_the_model_decides_and_commands_list_only_flags_they_use():
    evaluate = " ".join(_commands()["evaluate"].format_help().split())
    assert "--max-seq-len" in evaluate and "default: the model's, else 384]" in evaluate
    assert "default: the model's, else 'pipeline']" in evaluate  # span scoring: not "pipeline pipeline"
    assert "--top-k" not in evaluate  # EM/F1 score the top answer
    calibrate = _commands()["calibrate"].format_help()
    assert "--top-k" not in calibrate and "--min-probability" not in calibrate  # it labels the top 5 as served
    assert "--top-k" in _commands()["predict"].format_help()
    assert "korquad for a file named" in evaluate  # --metric explains auto


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "--model", "m", "--eval-file", "f", "--max-eval-samples", "0"],
        ["calibrate", "--model", "m", "--eval-file", "f", "--max-eval-samples", "-1"],
        ["calibrate", "--model", "m", "--eval-file", "f", "--folds", "1"],
    ],
)
def test_counts_that_would_mean_all_or_crash_are_refused_by_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2 and "must be an integer >=" in capsys.readouterr().err
