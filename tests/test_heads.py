"""The frozen-encoder span head: loads the real encoder weights (or fails loudly), freezes them, and
round-trips through ``AutoModelForQuestionAnswering``."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import (
    AutoModelForQuestionAnswering,
    BertConfig,
    BertForQuestionAnswering,
    BertModel,
    DistilBertConfig,
    DistilBertModel,
)

from qa_serving.errors import QAError
from qa_serving.training.heads import FrozenEncoderForQuestionAnswering

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY = {
    "vocab_size": 120,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}


def _bert_config(**changes) -> BertConfig:
    return BertConfig(**{**TINY, **changes})


@pytest.fixture
def encoder_dir(tmp_path):
    torch.manual_seed(0)
    encoder = BertModel(_bert_config())
    path = tmp_path / "encoder"
    encoder.save_pretrained(path)
    return path, encoder


def _inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, TINY["vocab_size"], (3, 17), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0
    types = torch.zeros_like(ids)
    types[:, 6:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def test_from_encoder_loads_the_saved_weights_frozen(encoder_dir):
    path, encoder = encoder_dir
    model = FrozenEncoderForQuestionAnswering.from_encoder(str(path), head_hidden_size=16)
    saved, loaded = encoder.state_dict(), model.encoder.state_dict()
    assert saved.keys() == loaded.keys()
    for name, value in saved.items():
        assert torch.equal(loaded[name], value), name
    assert all(not p.requires_grad for p in model.encoder.parameters())
    head = list(model.head.parameters())
    assert head and all(p.requires_grad for p in head)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("head.") for n in trainable)
    # A training step moves the head only.
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    out = model(**_inputs(), start_positions=torch.tensor([1, 2, 3]), end_positions=torch.tensor([2, 4, 3]))
    out.loss.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable


def test_unfrozen_encoder_is_trainable(encoder_dir):
    model = FrozenEncoderForQuestionAnswering.from_encoder(str(encoder_dir[0]), freeze_encoder=False)
    assert all(p.requires_grad for p in model.parameters())


def test_save_and_auto_load_round_trip(encoder_dir, tmp_path):
    model = FrozenEncoderForQuestionAnswering.from_encoder(str(encoder_dir[0]), head_hidden_size=16).eval()
    model.save_pretrained(tmp_path / "qa")
    loaded = AutoModelForQuestionAnswering.from_pretrained(tmp_path / "qa").eval()
    assert isinstance(loaded, FrozenEncoderForQuestionAnswering)
    assert all(not p.requires_grad for p in loaded.encoder.parameters())
    with torch.inference_mode():
        a, b = model(**_inputs()), loaded(**_inputs())
    assert torch.equal(a.start_logits, b.start_logits) and torch.equal(a.end_logits, b.end_logits)
    assert a.start_logits.shape == (3, 17)


def test_distilbert_weights_under_a_bert_config_raise(tmp_path):
    # The notebook's failure: a DistilBERT checkpoint read as BERT loads none of its encoder weights.
    path = tmp_path / "mislabelled"
    DistilBertModel(
        DistilBertConfig(
            vocab_size=120, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64
        )
    ).save_pretrained(path)
    (path / "config.json").write_text(json.dumps(_bert_config().to_dict()))
    with pytest.raises(QAError, match="missing") as err:
        FrozenEncoderForQuestionAnswering.from_encoder(str(path))
    assert "unused" in str(err.value) and "random encoder" in str(err.value)


def test_checkpoint_missing_a_layer_raises(tmp_path):
    path = tmp_path / "short"
    BertModel(_bert_config(num_hidden_layers=1)).save_pretrained(path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 2}))
    with pytest.raises(QAError, match="encoder.layer.1|layer.1"):
        FrozenEncoderForQuestionAnswering.from_encoder(str(path))


def test_span_model_checkpoint_is_a_fine_encoder_source(tmp_path):
    torch.manual_seed(1)
    qa_model = BertForQuestionAnswering(_bert_config())  # has qa_outputs, no pooler
    qa_model.save_pretrained(tmp_path / "bert-qa")
    model = FrozenEncoderForQuestionAnswering.from_encoder(str(tmp_path / "bert-qa"))
    encoder = model.encoder.state_dict()
    for name, value in qa_model.bert.state_dict().items():
        assert torch.equal(encoder[name], value), name
