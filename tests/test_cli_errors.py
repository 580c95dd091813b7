"""Bad input to the CLI is one `error: ...` line and exit code 2, never a traceback."""

from __future__ import annotations

import json
import shutil

import pytest

from qa_serving.cli.main import main
from qa_serving.errors import QAError


def _run(argv, capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"question": "q?", "context": "c."}', "", "{not json"], "line 3: not valid JSON"),
        (['{"question": "q?"}'], 'line 1: want a string "question" and a string "context"'),
        (['["q?", "c."]'], "line 1: want a JSON object"),
        (['{"question": "q?", "context": 5}'], "line 1: want a string"),
        (['{"question": "q?", "passages": []}'], "non-empty list of strings"),
        (["", "  "], "no questions"),
    ],
)
def test_predict_input_names_the_bad_line_before_loading_a_model(tmp_path, capsys, lines, message):
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    code, err = _run(["predict", "--model", str(tmp_path / "no-model"), "--input", str(path)], capsys)
    assert code == 2 and message in err and "Traceback" not in err


def test_unreadable_files_are_one_line_errors(tmp_path, capsys):
    code, err = _run(["predict", "--model", "m", "--question", "q?", "--context", f"@{tmp_path / 'nope.txt'}"], capsys)
    assert code == 2 and "cannot read" in err and "nope.txt" in err
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    code, err = _run(["predict", "--model", "m", "--question", "q?", "--context", f"@{tmp_path / 'latin1.txt'}"], capsys)
    assert code == 2 and "not UTF-8 text (bad byte at offset 3)" in err
    # Any file-system error the commands meet: the reason and the path, exit 2.
    code, err = _run(["synth", "--output", str(tmp_path), "--articles", "1"], capsys)
    assert code == 2 and err.startswith("error: Is a directory") and str(tmp_path) in err


def test_model_and_tokenizer_folders_that_cannot_load_say_why(tmp_path, tiny_model_dir):
    from qa_serving.core.backends import load_model
    from qa_serving.core.windowing import load_tokenizer

    (tmp_path / "file.json").write_text("{}")
    with pytest.raises(QAError, match="is a file; give the model's folder"):
        load_model(tmp_path / "file.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(QAError, match="has no config.json"):
        load_model(tmp_path / "empty")
    no_tokenizer = tmp_path / "no-tokenizer"
    no_tokenizer.mkdir()
    shutil.copy(tiny_model_dir / "config.json", no_tokenizer / "config.json")
    with pytest.raises(QAError, match="no usable tokenizer"):
        load_tokenizer(no_tokenizer)


def test_a_bogus_device_is_named():
    from qa_serving.core.backends import resolve_device

    with pytest.raises(QAError, match="device must be cpu, cuda, cuda:N or auto, got 'gpu0'"):
        resolve_device("gpu0")


def test_a_squad_v1_model_is_scored_on_squad_v2_data(tmp_path, tiny_model_dir, capsys):
    """Answerable-only models on v2 data: EM/F1 as they answer (no null threshold to search)."""
    from qa_serving.data.synthetic import write_squad

    data = write_squad(tmp_path / "v2.json", n_articles=2, version_2=True, seed=1)
    code = main(["evaluate", "--model", str(tiny_model_dir), "--eval-file", str(data), "--metric", "squad_v2"])
    out = capsys.readouterr().out
    assert code == 0
    metrics = json.loads(out[out.index("{"):])
    assert {"exact", "f1", "HasAns_exact", "NoAns_exact"} <= set(metrics) and "best_f1_thresh" not in metrics


def test_archive_refuses_a_bad_template_and_a_folder_that_is_no_model(tmp_path, tiny_model_dir, capsys):
    from qa_serving.serving.archive import read_template

    (tmp_path / "bad.yaml").write_text("batchSize: [1,\n")
    with pytest.raises(QAError, match="is not valid YAML"):
        read_template(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(QAError, match="must be a YAML mapping"):
        read_template(tmp_path / "list.yaml")
    tokenizer_only = tmp_path / "tok"
    tokenizer_only.mkdir()
    shutil.copy(tiny_model_dir / "tokenizer.json", tokenizer_only / "tokenizer.json")
    code, err = _run(["archive", "--model", str(tokenizer_only), "--store", str(tmp_path / "store")], capsys)
    assert code == 2 and "has no config.json" in err


def test_evaluate_checks_its_output_paths_before_answering(tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    base = ["evaluate", "--model", str(tmp_path / "never-loaded"), "--eval-file", "f.json"]
    code, err = _run([*base, "--predictions-out", str(tmp_path / "no-dir" / "p.json")], capsys)
    assert code == 2 and "want a file path in an existing folder" in err
    code, err = _run([*base, "--plots-dir", str(tmp_path / "a-file")], capsys)
    assert code == 2 and "is a file; want a folder" in err


def test_export_checks_its_eval_file_before_writing(tmp_path, capsys):
    out = tmp_path / "onnx"
    code, err = _run(["export", "--model", "m", "--output", str(out), "--eval-file", str(tmp_path / "x.json")], capsys)
    assert code == 2 and "not found" in err and not out.exists()


def test_a_missing_folder_under_a_local_folder_is_not_looked_up_on_the_hub(tmp_path, monkeypatch):
    from qa_serving.core.backends import load_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(QAError, match="model path runs/nomodel does not exist"):
        load_model("runs/nomodel")  # at once: no hub retries


def test_predict_input_errors_from_the_core_call_name_the_file_line(tmp_path, tiny_model_dir, capsys):
    path = tmp_path / "in.jsonl"
    good = json.dumps({"question": "who?", "context": "Ada built it."})
    path.write_text("\n".join([good, "", good, json.dumps({"question": "   ", "context": "x."})]) + "\n")
    code, err = _run(["predict", "--model", str(tiny_model_dir), "--input", str(path)], capsys)
    assert code == 2 and f"{path}: line 4: the question is empty" in err  # the 3rd example, on line 4
