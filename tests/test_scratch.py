"""Offline models and tokenizers: Korean syllable tokenization, sizes, save/load."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from qa_serving.training.scratch import SIZES, mostly_hangul, scratch_model, train_wordpiece_tokenizer

KO = [
    "바른홀트 산업은 1923년에 엘레나 모라베크가 트레사에서 설립하였다.",
    "서울의 인구는 약 1000만 명이며 한강이 도시를 가로지른다.",
    "세종대왕은 훈민정음을 창제하였다.",
] * 30


def test_mostly_hangul_detects_korean_corpora():
    assert mostly_hangul(KO)
    assert not mostly_hangul(["The quick brown fox jumps over the lazy dog."] * 10)
    assert not mostly_hangul([])


@pytest.mark.parametrize("answer, context", [("세종대왕", KO[2]), ("1923년", KO[0]), ("트레사", KO[0])])
def test_korean_answers_without_particles_end_on_a_token_boundary(answer, context):
    tok = train_wordpiece_tokenizer(KO, vocab_size=300)
    enc = tok(context, return_offsets_mapping=True, add_special_tokens=False)
    start = context.index(answer)
    end = start + len(answer)
    starts = {s for s, _ in enc["offset_mapping"]}
    ends = {e for _, e in enc["offset_mapping"]}
    # The answer is exactly a run of tokens: the particle after it is a token of its own.
    assert start in starts and end in ends


def test_syllable_tokenizer_survives_save_and_load(tmp_path):
    tok = train_wordpiece_tokenizer(KO + ["hello world"], vocab_size=300)
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = "세종대왕은 hello"
    assert again.tokenize(text) == tok.tokenize(text)
    assert "[UNK]" not in again.tokenize(text)


def test_scratch_model_matches_tokenizer_and_size():
    tok = train_wordpiece_tokenizer(KO, vocab_size=300)
    model = scratch_model(tok, "tiny")
    hidden, layers, _, _ = SIZES["tiny"]
    assert model.config.vocab_size == len(tok)
    assert model.config.hidden_size == hidden and model.config.num_hidden_layers == layers
