"""Group windows into padded model batches.

Windows are sorted by length so each batch pads only to its own longest window (dynamic padding), and a
batch is closed early when the next window would be mostly padding (``max_padding``): on CPU a padded
token costs as much as a real one, so one long window in a batch of short ones made whole batches 2x
slower (measured: TorchServe with batchSize 8 served half the questions/s of batchSize 1).
``pad_to`` pads every batch to one fixed length instead, for fixed-shape backends.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from qa_serving.core.windowing import Features


@dataclass
class Batch:
    """Model inputs for some windows; ``indices`` says which windows of the :class:`Features` they are."""

    indices: np.ndarray
    inputs: dict[str, np.ndarray]

    @property
    def seq_len(self) -> int:
        return int(self.inputs["input_ids"].shape[1])


def pad_rows(rows: list[np.ndarray], length: int, value: int, side: str = "right") -> np.ndarray:
    """Stack 1-D int arrays into ``(len(rows), length)``, padding on ``side``.

    Example: ``pad_rows([np.array([1, 2]), np.array([3])], 3, 0)`` -> ``[[1, 2, 0], [3, 0, 0]]``.
    """
    out = np.full((len(rows), length), value, dtype=np.int64)
    for i, row in enumerate(rows):
        if side == "left":
            out[i, length - len(row) :] = row
        else:
            out[i, : len(row)] = row
    return out


def make_batch(features: Features, indices: np.ndarray, pad_to: int | None = None) -> Batch:
    """Pad the windows ``indices`` of ``features`` into one batch of model inputs."""
    rows = [features.input_ids[i] for i in indices]
    length = pad_to if pad_to is not None else max(len(r) for r in rows)
    side = features.padding_side
    inputs = {
        "input_ids": pad_rows(rows, length, features.pad_token_id, side),
        "attention_mask": pad_rows([np.ones(len(r), dtype=np.int64) for r in rows], length, 0, side),
    }
    if features.token_type_ids is not None:
        inputs["token_type_ids"] = pad_rows([features.token_type_ids[i] for i in indices], length, 0, side)
    return Batch(indices=np.asarray(indices), inputs=inputs)


def plan_batches(
    lengths: np.ndarray,
    batch_size: int,
    max_padding: float = 1.0,
    sort_by_length: bool = True,
    fixed_shape: bool = False,
) -> list[np.ndarray]:
    """Window indices per batch: at most ``batch_size`` each, longest first when sorting.

    With sorting, a window shorter than ``(1 - max_padding)`` x its batch's longest window starts a new
    batch; not with ``fixed_shape`` (every batch is padded to one length anyway, so only full batches
    pay). Example: lengths ``[384, 380, 200, 190, 100]``, batch 4, max_padding 0.25 ->
    ``[[0, 1], [2, 3], [4]]``; with max_padding 1 -> ``[[0, 1, 2, 3], [4]]``.
    """
    lengths = np.asarray(lengths)
    if not sort_by_length:
        order = np.arange(len(lengths))
        return [order[lo : lo + batch_size] for lo in range(0, len(order), batch_size)]
    if fixed_shape:
        max_padding = 1.0
    order = np.argsort(-lengths, kind="stable")
    groups: list[np.ndarray] = []
    lo, floor = 0, 0.0
    for pos, idx in enumerate(order.tolist()):
        if pos > lo and (pos - lo == batch_size or lengths[idx] < floor):
            groups.append(order[lo:pos])
            lo = pos
        if pos == lo:
            floor = (1.0 - max_padding) * lengths[idx]
    if len(order):
        groups.append(order[lo:])
    return groups


def iter_batches(
    features: Features,
    batch_size: int,
    pad_to: int | None = None,
    sort_by_length: bool = True,
    max_padding: float = 1.0,
) -> Iterator[Batch]:
    """Yield padded batches covering every window once (see :func:`plan_batches`).

    ``pad_to`` (fixed shapes) pads every batch to that length, so ``max_padding`` is not applied.
    """
    for indices in plan_batches(features.lengths, batch_size, max_padding, sort_by_length, pad_to is not None):
        yield make_batch(features, indices, pad_to)


def unpad_logits(logits: np.ndarray, batch: Batch, features: Features) -> list[np.ndarray]:
    """Cut each row of ``(batch, seq)`` logits back to its window's own length (undoing padding)."""
    out = []
    for row, idx in zip(logits, batch.indices):
        n = features.lengths[idx]
        out.append(row[-n:] if features.padding_side == "left" else row[:n])
    return out
