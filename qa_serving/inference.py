"""The inference path every caller shares: examples -> windows -> batches -> logits -> answers.

The pipeline, evaluation, the training-time evaluation, the exporter's parity check and the
TorchServe handler all call :func:`answer` (or its two halves), so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from .batching import make_batch, plan_batches, unpad_logits
from .config import QAConfig
from .postprocess import Prediction, postprocess
from .windowing import Features, prepare_features

Backend = Callable[[dict[str, np.ndarray]], tuple[np.ndarray, np.ndarray]]


def window_logits(
    backend: Backend, features: Features, config: QAConfig, progress: bool = False
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Run every window through ``backend`` in length-sorted batches; logits come back unpadded."""
    starts: list[np.ndarray | None] = [None] * len(features)
    ends: list[np.ndarray | None] = [None] * len(features)
    pad_to = config.max_length if config.pad_to_max_length else None
    fixed = pad_to is not None
    groups = plan_batches(features.lengths, config.batch_size, config.max_padding, fixed_shape=fixed)
    batches = (make_batch(features, indices, pad_to) for indices in groups)
    for batch in tqdm(batches, total=len(groups), desc="windows", unit="batch", disable=not progress):
        start, end = backend(batch.inputs)
        for i, s, e in zip(batch.indices, unpad_logits(start, batch, features), unpad_logits(end, batch, features)):
            starts[i], ends[i] = s, e
    return starts, ends  # type: ignore[return-value]


def answers_from_logits(
    features: Features,
    starts: Sequence[np.ndarray],
    ends: Sequence[np.ndarray],
    contexts: Sequence[str],
    config: QAConfig,
    top_k: int = 1,
) -> list[Prediction]:
    """Post-process window logits into one :class:`Prediction` per example."""
    offsets = features.word_offsets if config.align_to_words else features.offsets
    return postprocess(
        starts,
        ends,
        offsets,
        features.example_index,
        features.cls_index,
        contexts,
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
    """Answers for many examples; windows of ``chunk_size`` examples at a time bound the memory."""
    config = config or QAConfig()
    out: list[Prediction] = []
    bar = tqdm(total=len(questions), desc="questions", unit="q", disable=not progress)
    for lo in range(0, len(questions), chunk_size):
        qs, cs = questions[lo : lo + chunk_size], contexts[lo : lo + chunk_size]
        features = prepare_features(tokenizer, qs, cs, config)
        starts, ends = window_logits(backend, features, config)
        out.extend(answers_from_logits(features, starts, ends, cs, config, top_k=top_k))
        bar.update(len(qs))
    bar.close()
    return out
