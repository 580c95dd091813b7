"""Batching: dynamic padding to each batch's longest window, fixed shapes, left padding, unpadding."""

from __future__ import annotations

import numpy as np
import pytest

from qa_serving.core.answering import window_logits
from qa_serving.core.backends import TorchBackend
from qa_serving.core.batching import iter_batches, make_batch, pad_rows, plan_batches, unpad_logits
from qa_serving.core.config import QAConfig
from qa_serving.core.windowing import prepare_features
from qa_serving.errors import QAError

pytestmark = pytest.mark.usefixtures("torch_one_thread")

CONFIG = QAConfig(max_length=64, doc_stride=24, max_question_len=16, batch_size=3)


@pytest.fixture(params=["tiny_tokenizer", "tiny_tokenizer_left"])
def features(request, qa_factory):
    tok = request.getfixturevalue(request.param)
    # Lengths vary: one-sentence contexts fit one short window, long ones need several full windows.
    examples = [qa_factory.example("en", n_sentences=n) for n in (1, 9, 2, 1, 12, 3, 1)]
    return prepare_features(tok, [e.question for e in examples], [e.context for e in examples], CONFIG)


def test_pad_rows_docstring_example():
    out = pad_rows([np.array([1, 2]), np.array([3])], 3, 0)
    np.testing.assert_array_equal(out, [[1, 2, 0], [3, 0, 0]])
    out = pad_rows([np.array([1, 2]), np.array([3])], 3, 9, side="left")
    np.testing.assert_array_equal(out, [[9, 1, 2], [9, 9, 3]])


def _check_rows(batch, features):
    side = features.padding_side
    seq = batch.seq_len
    for row, idx in enumerate(batch.indices):
        n = features.lengths[idx]
        real = slice(seq - n, seq) if side == "left" else slice(0, n)
        pad = slice(0, seq - n) if side == "left" else slice(n, seq)
        np.testing.assert_array_equal(batch.inputs["input_ids"][row, real], features.input_ids[idx])
        assert np.all(batch.inputs["input_ids"][row, pad] == features.pad_token_id)
        assert np.all(batch.inputs["attention_mask"][row, real] == 1)
        assert np.all(batch.inputs["attention_mask"][row, pad] == 0)
        np.testing.assert_array_equal(batch.inputs["token_type_ids"][row, real], features.token_type_ids[idx])
        assert np.all(batch.inputs["token_type_ids"][row, pad] == 0)
    for value in batch.inputs.values():
        assert value.dtype == np.int64 and value.shape == (len(batch.indices), seq)


def test_dynamic_padding_sorted_longest_first_every_window_once(features):
    assert len(set(features.lengths.tolist())) > 2  # the test needs windows of different lengths
    batches = list(iter_batches(features, batch_size=3))
    order = np.concatenate([b.indices for b in batches])
    assert sorted(order.tolist()) == list(range(len(features)))
    assert np.all(np.diff(features.lengths[order]) <= 0)
    assert [len(b.indices) for b in batches[:-1]] == [3] * (len(batches) - 1)
    for batch in batches:
        assert batch.seq_len == features.lengths[batch.indices].max()
        _check_rows(batch, features)
    assert batches[0].seq_len > batches[-1].seq_len


def _lists(groups):
    return [g.tolist() for g in groups]


def test_plan_batches_closes_a_batch_before_it_is_mostly_padding():
    lengths = np.array([100, 384, 190, 380, 200])
    assert _lists(plan_batches(lengths, 4, max_padding=0.25)) == [[1, 3], [4, 2], [0]]
    assert _lists(plan_batches(lengths, 4, max_padding=1.0)) == [[1, 3, 4, 2], [0]]
    assert _lists(plan_batches(lengths, 2, max_padding=1.0)) == [[1, 3], [4, 2], [0]]
    assert _lists(plan_batches(lengths, 4, max_padding=0.0)) == [[1], [3], [4], [2], [0]]
    assert _lists(plan_batches(lengths, 4, max_padding=0.25, fixed_shape=True)) == [[1, 3, 4, 2], [0]]
    assert _lists(plan_batches(lengths, 4, 0.25, sort_by_length=False)) == [[0, 1, 2, 3], [4]]
    assert plan_batches(np.array([], dtype=np.int64), 4, 0.25) == []
    rng = np.random.default_rng(0)
    for _ in range(50):
        lengths = rng.integers(5, 400, size=int(rng.integers(1, 60)))
        size, tol = int(rng.integers(1, 9)), float(rng.uniform(0, 1))
        groups = plan_batches(lengths, size, max_padding=tol)
        assert sorted(np.concatenate(groups).tolist()) == list(range(len(lengths)))
        for g in groups:
            assert 1 <= len(g) <= size
            assert lengths[g].min() >= (1 - tol) * lengths[g].max()


def test_max_padding_applies_to_dynamic_padding_only(features):
    capped = list(iter_batches(features, batch_size=64, max_padding=0.1))
    assert len(capped) > 1
    for batch in capped:
        assert features.lengths[batch.indices].min() >= 0.9 * batch.seq_len
        _check_rows(batch, features)
    fixed = list(iter_batches(features, batch_size=64, pad_to=CONFIG.max_length, max_padding=0.1))
    assert len(fixed) == -(-len(features) // 64)


def test_unsorted_batches_keep_window_order(features):
    order = np.concatenate([b.indices for b in iter_batches(features, 4, sort_by_length=False)])
    np.testing.assert_array_equal(order, np.arange(len(features)))


def test_pad_to_fixed_shape(features):
    batches = list(iter_batches(features, batch_size=4, pad_to=CONFIG.max_length))
    assert {b.inputs["input_ids"].shape[1] for b in batches} == {CONFIG.max_length}
    for batch in batches:
        _check_rows(batch, features)


def test_unpad_logits_undoes_padding(features):
    for pad_to in (None, CONFIG.max_length):
        for batch in iter_batches(features, batch_size=3, pad_to=pad_to):
            # Logits that are the input ids: cutting the padding off must give each window back.
            fake = batch.inputs["input_ids"].astype(np.float32)
            for idx, row in zip(batch.indices, unpad_logits(fake, batch, features)):
                np.testing.assert_array_equal(row, features.input_ids[idx])


def test_make_batch_without_token_types(features):
    features.token_type_ids = None
    batch = make_batch(features, np.array([0, 1]))
    assert set(batch.inputs) == {"input_ids", "attention_mask"}


def test_batched_logits_equal_one_window_at_a_time(tiny_tokenizer, tiny_model, qa_factory):
    import torch

    examples = [qa_factory.example("en", n_sentences=n) for n in (1, 7, 2, 4)]
    features = prepare_features(
        tiny_tokenizer, [e.question for e in examples], [e.context for e in examples], CONFIG
    )
    starts, ends = window_logits(TorchBackend(tiny_model, device="cpu"), features, CONFIG)
    with torch.inference_mode():
        for i in range(len(features)):
            out = tiny_model(
                input_ids=torch.from_numpy(features.input_ids[i])[None],
                token_type_ids=torch.from_numpy(features.token_type_ids[i])[None],
            )
            np.testing.assert_allclose(starts[i], out.start_logits[0].numpy(), atol=1e-5)
            np.testing.assert_allclose(ends[i], out.end_logits[0].numpy(), atol=1e-5)


@pytest.mark.parametrize("bad", [-0.1, 1.5, True])
def test_max_padding_must_be_a_share(bad):
    with pytest.raises(QAError, match="max_padding"):
        QAConfig(max_padding=bad)
