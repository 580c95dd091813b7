"""The inference path every caller shares: examples -> windows -> batches -> logits -> answers.

The pipeline, evaluation, the training-time evaluation, the exporter's parity check and the
TorchServe handler all call :func:`answer` (or its two halves), so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from qa_serving.core.batching import make_batch, plan_batches, unpad_logits
from qa_serving.core.config import QAConfig
from qa_serving.errors import QAError
from qa_serving.core.postprocess import Prediction, answerable_tokens, postprocess, postprocess_stock
from qa_serving.core.windowing import Features, prepare_features

Backend = Callable[[dict[str, np.ndarray]], tuple[np.ndarray, np.ndarray]]


def window_logits(
    backend: Backend,
    features: Features,
    config: QAConfig,
    progress: bool = False,
    pad_lengths: np.ndarray | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Run every window through ``backend`` in length-sorted batches; logits come back unpadded.

    ``pad_lengths``: pad each window to exactly this length (batches of equal lengths). For left padding
    in ``"pipeline"`` mode: absolute-position models (BERT) give other logits under other left padding,
    so windows are padded as the stock pipeline's batches pad them.
    """
    starts: list[np.ndarray | None] = [None] * len(features)
    ends: list[np.ndarray | None] = [None] * len(features)
    if pad_lengths is not None:
        groups = plan_batches(pad_lengths, config.batch_size, max_padding=0.0)
        batches = (make_batch(features, indices, int(pad_lengths[indices[0]])) for indices in groups)
    else:
        pad_to = config.max_length if config.pad_to_max_length else None
        fixed = pad_to is not None
        groups = plan_batches(features.lengths, config.batch_size, config.max_padding, fixed_shape=fixed)
        batches = (make_batch(features, indices, pad_to) for indices in groups)
    for batch in tqdm(batches, total=len(groups), desc="windows", unit="batch", disable=not progress):
        start, end = backend(batch.inputs)
        for i, s, e in zip(
            batch.indices, unpad_logits(start, batch, features), unpad_logits(end, batch, features)
        ):
            starts[i], ends[i] = s, e
    return starts, ends  # type: ignore[return-value]


def stock_padded_lengths(
    lengths: np.ndarray, batch_size: int, first_position: int = 0, carried_max: int = 0
) -> np.ndarray:
    """The length each window is padded to by the stock pipeline: it batches consecutive windows of all
    inputs ``batch_size`` at a time and pads each batch to its longest window.

    ``first_position``: position of the first window in its stock batch (windows before it, from an
    earlier chunk of the stream, were ``carried_max`` long at most).
    Example: lengths ``[5, 9, 4, 6]`` with ``batch_size=2`` -> ``[9, 9, 6, 6]``.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size == 0:
        return lengths
    group = (first_position + np.arange(lengths.size)) // batch_size
    longest = np.zeros(int(group[-1]) + 1, dtype=np.int64)
    np.maximum.at(longest, group, lengths)
    longest[0] = max(longest[0], carried_max)
    return longest[group]


def answers_from_logits(
    features: Features,
    starts: Sequence[np.ndarray],
    ends: Sequence[np.ndarray],
    contexts: Sequence[str],
    config: QAConfig,
    top_k: int = 1,
    padded_length: np.ndarray | None = None,
) -> list[Prediction]:
    """Post-process window logits into one :class:`Prediction` per example.

    ``padded_length`` (``"pipeline"`` mode): each window's length in the stock pipeline's batches
    (:func:`stock_padded_lengths`); by default its own length, i.e. the stock pipeline with batch_size 1.
    """
    context_first = features.padding_side == "left"
    if features.stock_offsets is not None:  # the stock p_mask, from sequence ids
        answerable = [so[:, 4].astype(bool) for so in features.stock_offsets]
    else:
        answerable = [
            answerable_tokens(o, c, context_first) for o, c in zip(features.offsets, features.cls_index)
        ]
    if config.span_scoring == "pipeline":
        if features.stock_offsets is None:
            raise QAError(
                "span_scoring='pipeline' needs features with stock offsets "
                "(build them with prepare_features, not by hand)"
            )
        padded = features.lengths if padded_length is None else np.asarray(padded_length)
        shift = None
        if context_first:  # the stock code subtracts the number of pad ids in the padded row
            extra = np.array([int((ids == features.pad_token_id).sum()) for ids in features.input_ids])
            shift = padded - features.lengths + extra
        return postprocess_stock(
            starts,
            ends,
            features.stock_offsets,
            answerable,
            features.example_index,
            contexts,
            padded_length=padded,
            pad_shift=shift,
            left_padding=context_first,
            top_k=top_k,
            max_answer_len=config.max_answer_len,
            handle_impossible_answer=config.version_2,
            align_to_words=config.align_to_words,
        )
    offsets = features.word_offsets if config.align_to_words else features.offsets
    return postprocess(
        starts,
        ends,
        offsets,
        features.example_index,
        features.cls_index,
        contexts,
        answerable=answerable,
        n_best_size=config.n_best_size,
        max_answer_len=config.max_answer_len,
        top_k=top_k,
        version_2=config.version_2,
        null_score_diff_threshold=config.null_score_diff_threshold,
    )


def answer(
    backend: Backend,
    tokenizer,
    questions: Sequence[str],
    contexts: Sequence[str],
    config: QAConfig | None = None,
    *,
    top_k: int = 1,
    chunk_size: int = 512,
    progress: bool = False,
) -> list[Prediction]:
    """Answers for many examples; windows of ``chunk_size`` examples at a time bound the memory.

    ``"pipeline"`` mode answers as the stock pipeline with ``batch_size=1``; see :func:`answer_stream`.
    """
    config = config or QAConfig()
    bar = tqdm(total=len(questions), desc="questions", unit="q", disable=not progress)
    out: list[Prediction] = []
    for prediction in answer_stream(
        backend, tokenizer, zip(questions, contexts), config, top_k=top_k, chunk_size=chunk_size
    ):
        out.append(prediction)
        bar.update(1)
    bar.close()
    return out


def answer_stream(
    backend: Backend,
    tokenizer,
    examples: Iterable[tuple[str, str]],
    config: QAConfig | None = None,
    *,
    top_k: int = 1,
    chunk_size: int = 512,
    stock_batch_size: int = 1,
) -> Iterator[Prediction]:
    """Answers for a stream of ``(question, context)``, yielded chunk by chunk while later examples are
    still unread (memory: one chunk of windows).

    ``stock_batch_size`` (``"pipeline"`` mode): the ``batch_size`` of the stock pipeline to match. Its
    batches run across inputs and their padding can decide ties, so examples whose windows share a stock
    batch with unread windows wait for the next chunk (then tokenized again).
    """
    config = config or QAConfig()
    stock = config.span_scoring == "pipeline"
    source = iter(examples)
    pending: list[tuple[str, str]] = []
    position, carried = 0, 0  # where the next window sits in its stock batch; longest window before it
    want, exhausted = chunk_size, False
    while True:
        while len(pending) < want and not exhausted:
            item = next(source, _END)
            if item is _END:
                exhausted = True
            else:
                pending.append(item)
        if not pending:
            return
        qs, cs = [q for q, _ in pending], [c for _, c in pending]
        features = prepare_features(tokenizer, qs, cs, config)
        n_windows, n_done, padded = len(features), len(pending), None
        if stock:
            padded = stock_padded_lengths(features.lengths, stock_batch_size, position, carried)
            open_windows = (position + n_windows) % stock_batch_size
            if open_windows and not exhausted:
                # Examples with a window in the unfinished stock batch wait for the next chunk.
                first_open = n_windows - open_windows
                n_done = int(features.example_index[first_open]) if first_open >= 0 else 0
                if n_done == 0:
                    want = len(pending) + chunk_size  # one unfinished stock batch so far: read more
                    continue
            first = int(np.searchsorted(features.example_index, n_done))  # first window not answered now
            next_position = (position + first) % stock_batch_size
            batch_start = first - next_position
            before = features.lengths[max(batch_start, 0) : first]
            next_carried = max(int(before.max()) if before.size else 0, carried if batch_start < 0 else 0)
            if first < n_windows:
                features, padded = _first_windows(features, first), padded[:first]
            position, carried = next_position, next_carried
        left = stock and features.padding_side == "left"
        starts, ends = window_logits(backend, features, config, pad_lengths=padded if left else None)
        yield from answers_from_logits(
            features, starts, ends, cs[:n_done], config, top_k, padded_length=padded
        )
        pending, want = pending[n_done:], chunk_size
        if exhausted and not pending:
            return


_END = object()


def _first_windows(features: Features, n: int) -> Features:
    """The first ``n`` windows of ``features`` (those of the examples answered now)."""
    return Features(
        input_ids=features.input_ids[:n],
        token_type_ids=features.token_type_ids[:n] if features.token_type_ids is not None else None,
        example_index=features.example_index[:n],
        offsets=features.offsets[:n],
        word_offsets=features.word_offsets[:n],
        cls_index=features.cls_index[:n],
        pad_token_id=features.pad_token_id,
        padding_side=features.padding_side,
        stock_offsets=features.stock_offsets[:n] if features.stock_offsets is not None else None,
    )
