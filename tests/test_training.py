"""Training: a short run that really learns, resume, the frozen-encoder head, what gets saved."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoTokenizer, BertConfig, BertModel

from qa_serving.cli.main import main as cli_main
from qa_serving.core.backends import TorchBackend
from qa_serving.core.config import QAConfig
from qa_serving.core.hardware import resolve_precision
from qa_serving.data.evaluation import evaluate
from qa_serving.data.loading import load_examples
from qa_serving.data.synthetic import write_squad
from qa_serving.errors import QAError
from qa_serving.training.trainer import TrainConfig, train, training_arguments

# fp32: the figures asserted below were measured in fp32 (precision "auto" is tested on its own).
FAST = {"max_length": 128, "doc_stride": 32, "max_question_len": 24, "vocab_size": 800, "logging_steps": 1000,
        "progress": False, "eval_batch_size": 64, "precision": "fp32"}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return write_squad(root / "train.json", n_articles=50, seed=3), write_squad(root / "eval.json", n_articles=8, seed=4)


@pytest.fixture(scope="module")
def trained(synth, tmp_path_factory):
    """A tiny scratch BERT trained for a few epochs (shared by the tests below)."""
    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("run") / "model"
    cfg = TrainConfig(from_scratch="tiny", train_file=str(synth[0]), eval_file=str(synth[1]), output_dir=str(out),
                      epochs=2, batch_size=32, learning_rate=3e-3, **FAST)
    return out, train(cfg)


def test_a_short_run_learns(trained, synth):
    out, results = trained
    # Untrained baseline: the same architecture and tokenizer with fresh weights.
    tokenizer = AutoTokenizer.from_pretrained(out)
    torch.manual_seed(0)  # a fixed baseline: unseeded fresh weights scored 2.9-7.6 F1 from run to run
    fresh = AutoModelForQuestionAnswering.from_config(AutoConfig.from_pretrained(out))
    config = QAConfig.from_model_dir(out)
    before = evaluate(TorchBackend(fresh), tokenizer, load_examples(synth[1]), config).metrics["f1"]
    after = results["final"]["f1"]
    # Measured on 2 CPU cores: untrained 3.7 F1, 13-15 F1 after one or two epochs of this tiny model;
    # the margin asserted is well below that. (The real-encoder test asserts a larger rise.)
    assert after > before + 6, (before, after)
    # EM/F1 after every epoch, not only at the end.
    assert [h["epoch"] for h in results["history"]] == [1.0, 2.0]
    assert all(h["f1"] > before for h in results["history"])


def test_the_model_folder_is_complete(trained):
    out, results = trained
    for name in ("config.json", "model.safetensors", "tokenizer.json", "qa_config.json", "eval_results.json"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["final"]["f1"] == pytest.approx(results["final"]["f1"])
    assert saved["train_questions"] > 0 and saved["train_windows"] >= saved["train_questions"]
    assert QAConfig.from_model_dir(out).max_length == 128


def test_evaluate_cli_reproduces_the_training_figures(trained, synth, capsys):
    out, results = trained
    assert cli_main(["evaluate", "--model", str(out), "--eval-file", str(synth[1]), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads(printed[printed.index("{"):])
    # Same path, same settings (qa_config.json): the same score as the end of training.
    assert metrics["f1"] == pytest.approx(results["final"]["f1"])
    assert metrics["exact_match"] == pytest.approx(results["final"]["exact_match"])


def test_resume_continues_from_the_last_checkpoint(synth, tmp_path):
    out = tmp_path / "model"
    base = dict(from_scratch="tiny", train_file=str(synth[0]), eval_file=str(synth[1]), output_dir=str(out),
                batch_size=64, max_train_samples=200, max_eval_samples=20, eval_every_epoch=False, **FAST)
    first = train(TrainConfig(epochs=1, **base))
    assert first["epochs_done"] == 1.0
    second = train(TrainConfig(epochs=2, resume=True, **base))
    assert second["epochs_done"] == 2.0
    # Resumed, not restarted: the steps of the first epoch were not run again.
    steps = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert steps and steps[-1] == 2 * steps[0]


def test_frozen_encoder_trains_only_the_head(synth, tmp_path):
    enc_dir = tmp_path / "encoder"
    tok = AutoTokenizer.from_pretrained(_tokenizer_dir(synth, tmp_path))
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(enc_dir)
    tok.save_pretrained(enc_dir)
    before = BertModel.from_pretrained(enc_dir).state_dict()
    out = tmp_path / "frozen"
    train(TrainConfig(model=str(enc_dir), freeze_encoder=True, train_file=str(synth[0]), eval_file=str(synth[1]),
                      output_dir=str(out), epochs=1, batch_size=64, max_train_samples=200, max_eval_samples=20,
                      learning_rate=1e-3, eval_every_epoch=False, **FAST))
    model = AutoModelForQuestionAnswering.from_pretrained(out)
    after = model.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert type(model).__name__ == "FrozenEncoderForQuestionAnswering"


def _tokenizer_dir(synth, tmp_path):
    from qa_serving.training.scratch import train_wordpiece_tokenizer

    data = load_examples(synth[0])
    tok = train_wordpiece_tokenizer(list(data["context"]) + list(data["question"]), vocab_size=800)
    tok.save_pretrained(tmp_path / "tok")
    return tmp_path / "tok"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"train_file": "x.json"}, "give a model"),
        ({"model": "m", "from_scratch": "tiny", "train_file": "x.json"}, "exclude each other"),
        ({"model": "m"}, "training data"),
        ({"from_scratch": "tiny", "train_file": "x.json", "freeze_encoder": True}, "pretrained encoder"),
        ({"model": "m", "train_file": "x.json", "precision": "fp8"}, "precision"),
        ({"model": "m", "train_file": "x.json", "max_steps": 0}, "max_steps"),
        ({"model": "m", "train_file": "x.json", "eval_steps": -5}, "eval_steps"),
        ({"model": "m", "train_file": "x.json", "max_train_samples": 0}, "max_train_samples must be a positive"),
        ({"model": "m", "train_file": "x.json", "max_eval_samples": 0}, "max_eval_samples must be a positive"),
        ({"model": "m", "train_file": "x.json", "max_eval_samples": -1}, "max_eval_samples must be a positive"),
        ({"from_scratch": "huge", "train_file": "x.json"}, r"--from-scratch must be one of tiny\|small\|medium"),
        ({"model": "m", "train_file": "x.json", "metric": "bleu"}, "metric must be one of auto"),
    ],
)
def test_bad_training_settings_are_clear_errors(kwargs, message):
    with pytest.raises(QAError, match=message):
        TrainConfig(**kwargs)


def test_unknown_scratch_size_is_a_clear_error():
    from qa_serving.training.scratch import scratch_config

    with pytest.raises(QAError, match=r"one of tiny\|small\|medium, got 'huge'"):
        scratch_config(100, "huge")


def test_train_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    code = cli_main(["train", "--from-scratch", "tiny", "--train-file", str(tmp_path / "missing.json"),
                     "--output-dir", str(tmp_path / "out")])
    assert code == 2
    assert "missing.json" in capsys.readouterr().err


def test_output_dir_that_is_a_file_is_refused_before_training(synth, tmp_path, capsys, monkeypatch):
    from qa_serving.training import trainer

    monkeypatch.setattr(trainer, "load_data", lambda cfg: pytest.fail("data loaded before the output dir check"))
    taken = tmp_path / "model.bin"
    taken.write_text("not a folder")
    for out, shown in ((taken, "is an existing file"), (taken / "run", "lies under")):
        code = cli_main(["train", "--from-scratch", "tiny", "--train-file", str(synth[0]), "--output-dir", str(out)])
        assert code == 2
        assert shown in capsys.readouterr().err
    assert taken.read_text() == "not a folder"


def test_held_out_share_is_the_real_article_count(tmp_path):
    from qa_serving.training.trainer import load_data

    path = write_squad(tmp_path / "two.json", n_articles=2, seed=1)
    train_ds, eval_ds, source = load_data(TrainConfig(from_scratch="tiny", train_file=str(path)))
    assert len(set(eval_ds["title"])) == 1 and len(set(train_ds["title"])) == 1
    assert "1 of 2 articles held out, seed 0" in source  # eval_fraction 0.2 rounds up to one article: 50%


def test_metric_follows_the_eval_file_not_the_train_file(synth, tmp_path, monkeypatch):
    """--eval-file korquad_dev.json is scored with the KorQuAD metric even when the training file's name
    says nothing, at every evaluation: per epoch, every N steps, the final one and the calibrator's."""
    from qa_serving.data import evaluation
    from qa_serving.training import trainer

    eval_file = tmp_path / "korquad_dev.json"
    eval_file.write_bytes(synth[1].read_bytes())
    sources, real_pick = [], evaluation.pick_metric

    def spy(metric, config, source=None):
        sources.append(str(source))
        return real_pick(metric, config, source)

    monkeypatch.setattr(evaluation, "pick_metric", spy)
    monkeypatch.setattr(trainer, "pick_metric", spy)
    results = train(TrainConfig(
        from_scratch="tiny", train_file=str(synth[0]), eval_file=str(eval_file), output_dir=str(tmp_path / "out"),
        batch_size=16, max_train_samples=32, max_eval_samples=10, max_steps=2, eval_steps=1, **FAST))
    assert results["metric"] == "korquad"
    assert json.loads((tmp_path / "out" / "eval_results.json").read_text())["metric"] == "korquad"
    assert len(sources) >= 6 and all(s == str(eval_file) for s in sources), sources


def test_cpu_options_map_to_the_trainer(tmp_path):
    cfg = TrainConfig(model="m", train_file="x.json", output_dir=str(tmp_path), max_steps=40, save_steps=10)
    assert cfg.precision == "auto" and cfg.group_by_length  # the defaults a CPU user gets
    args = training_arguments(cfg, "bf16", cuda=False)
    assert args.group_by_length and args.bf16 and not args.fp16
    assert args.max_steps == 40 and args.save_strategy == "steps" and args.save_steps == 10
    fp32 = training_arguments(TrainConfig(model="m", train_file="x.json", output_dir=str(tmp_path)), "fp32", False)
    assert not fp32.bf16 and fp32.max_steps == -1 and fp32.save_strategy == "epoch"


def test_frozen_embeddings_step_budget_and_learning_curve(synth, tmp_path, caplog):
    """--freeze-embeddings keeps the word embeddings and trains the rest; --max-steps, --save-steps and
    --eval-steps give a resumable, step-budgeted run with EM/F1 every N steps; precision auto is logged."""
    enc_dir = tmp_path / "encoder"
    tok = AutoTokenizer.from_pretrained(_tokenizer_dir(synth, tmp_path))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(enc_dir)
    tok.save_pretrained(enc_dir)
    before = BertModel.from_pretrained(enc_dir).state_dict()
    out = tmp_path / "run"
    fast = {**FAST, "precision": "auto"}
    with caplog.at_level("INFO", logger="qa_serving"):
        results = train(TrainConfig(
            model=str(enc_dir), freeze_embeddings=True, train_file=str(synth[0]), eval_file=str(synth[1]),
            output_dir=str(out), batch_size=16, max_train_samples=120, max_eval_samples=12, learning_rate=1e-3,
            max_steps=4, save_steps=2, eval_steps=2, curve_eval_samples=5, eval_every_epoch=False, **fast))
    after = AutoModelForQuestionAnswering.from_pretrained(out).bert.state_dict()
    key = "embeddings.word_embeddings.weight"
    assert torch.equal(before[key], after[key])
    assert not torch.equal(before["encoder.layer.0.attention.self.query.weight"],
                           after["encoder.layer.0.attention.self.query.weight"])
    assert results["freeze_embeddings"] and results["epochs_done"] < 1
    assert results["precision"] == resolve_precision("auto", "cpu", log=False)
    assert "precision auto ->" in caplog.text and "froze the word embeddings" in caplog.text
    assert [(h["step"], h["questions"]) for h in results["history"]] == [(2, 5), (4, 5)]
    assert results["final"]["total"] == 12
    assert {t["step"] for t in results["timing"]} <= {1, 2, 3, 4} and results["timing"]
    assert all(t["wall_s_per_step"] > 0 for t in results["timing"])
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    # The final figures are the saved model's as served (fp32), even after bf16 training.
    served = evaluate(TorchBackend(AutoModelForQuestionAnswering.from_pretrained(out)),
                      AutoTokenizer.from_pretrained(out), load_examples(synth[1]).select(range(12)),
                      QAConfig.from_model_dir(out))
    assert served.metrics["f1"] == pytest.approx(results["final"]["f1"])


@pytest.mark.parametrize("side", ["right", "left"])
def test_batches_pad_to_a_multiple_never_past_max_length(side):
    """pad_to_multiple_of rounds each batch's length up (fewer shapes), caps at max_length, and the labels
    still point at the same tokens when padding goes on the left."""
    import numpy as np

    from qa_serving.training.trainer import PadCollator

    rows = [np.arange(3, 3 + n) for n in (5, 11)]
    items = [{"input_ids": r, "start_positions": 1, "end_positions": 2} for r in rows]
    assert PadCollator(0, side)(items)["input_ids"].shape == (2, 11)  # default: the longest window
    batch = PadCollator(0, side, pad_to_multiple_of=8, max_length=64)(items)
    assert batch["input_ids"].shape == (2, 16) and batch["attention_mask"].sum() == 5 + 11
    for i, r in enumerate(rows):
        start, end = int(batch["start_positions"][i]), int(batch["end_positions"][i])
        assert batch["input_ids"][i, start].item() == r[1] and batch["input_ids"][i, end].item() == r[2]
    assert PadCollator(0, side, pad_to_multiple_of=8, max_length=12)(items)["input_ids"].shape == (2, 12)
    with pytest.raises(QAError, match="pad_to_multiple_of"):
        TrainConfig(model="m", train_file="x.json", pad_to_multiple_of=0)


def test_squad_v2_data_in_a_run_that_cannot_answer_nothing_is_caught_before_training(tmp_path, caplog):
    import datasets

    from qa_serving.training.trainer import check_unanswerable

    rows = lambda *texts: datasets.Dataset.from_dict(
        {"answers": [{"text": [t] if t else [], "answer_start": [0] if t else []} for t in texts]}
    )
    cfg = TrainConfig(from_scratch="tiny", train_file="train.json")
    with pytest.raises(QAError, match="1 of 2 evaluation questions have no answer .* --handle-impossible-answer"):
        check_unanswerable(cfg, rows("a"), rows("a", ""))
    check_unanswerable(TrainConfig(from_scratch="tiny", train_file="t.json", metric="squad_v2"), rows("a"), rows(""))
    check_unanswerable(TrainConfig(from_scratch="tiny", train_file="t.json", handle_impossible_answer=True),
                       rows(""), rows(""))
    with caplog.at_level("WARNING"):
        check_unanswerable(cfg, rows("a", "", ""), rows("a"))
    assert "2 of 3 training questions have no answer" in caplog.text
