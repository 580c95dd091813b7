"""The one core call: examples -> windows -> the padding the span-scoring mode needs -> batched forward
passes -> answers.

Every door calls :func:`answer` / :func:`answer_stream` (:func:`answer_variants`: several option sets
over one forward pass, for evaluation): the pipeline (lists and lazy iterators), the
served model (:mod:`qa_serving.serving.service`: TorchServe handler, KServe runtime), ``evaluate`` and
``predict``, the training-time evaluation, the exporter's parity check and the quickstart. Each
:class:`Example` carries its own per-example options (``top_k``, ``max_answer_len``,
``handle_impossible_answer``, ...; :mod:`qa_serving.core.options`) over the call's :class:`QAConfig`.
Nothing else orchestrates windows -> logits -> answers.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from qa_serving.core.batching import iter_batches, make_batch, plan_batches, unpad_logits
from qa_serving.core.calibration import Calibrator, calibrate_prediction
from qa_serving.core.config import QAConfig
from qa_serving.core.options import parse_options
from qa_serving.core.passages import PassageScorer, passage_scorer
from qa_serving.core.postprocess import Prediction, answerable_tokens, postprocess, postprocess_stock
from qa_serving.core.windowing import Features, prepare_features
from qa_serving.errors import QAError

Backend = Callable[[dict[str, np.ndarray]], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Example:
    """One question about one context, with its own per-example options (checked, canonical names of
    :data:`qa_serving.core.options.PER_EXAMPLE`; absent ones follow the call's :class:`QAConfig`).

    ``passages``: several passages for the question instead of one ``context`` (then ignored): their
    windows are more windows of the one question, and each answer says which passage it is in.
    Example: ``Example("Who?", "Ada did.", {"top_k": 2, "handle_impossible_answer": True})``;
    ``Example("Who?", "", {}, ("Ada did.", "Bob did not."))``.
    """

    question: str
    context: str
    options: Mapping[str, Any] = field(default_factory=dict)
    passages: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.passages is not None:
            if isinstance(self.passages, str) or not all(isinstance(p, str) for p in self.passages):
                raise QAError("passages must be a list of strings")
            if not self.passages:
                raise QAError("passages is empty: give at least one passage")
            object.__setattr__(self, "passages", tuple(self.passages))

    @property
    def text(self) -> str | tuple[str, ...]:
        """The context, or the passages: what answers' ``start``/``end`` index into."""
        return self.passages if self.passages is not None else self.context

    @classmethod
    def make(
        cls, question: str, context: str = "", passages: Sequence[str] | None = None, **options: Any
    ) -> Example:
        """An example with options given under any public name or alias, checked."""
        passages = tuple(passages) if passages is not None and not isinstance(passages, str) else passages
        return cls(question, context, parse_options(options, per_example_only=True), passages)


def as_example(item: Example | tuple[str, str]) -> Example:
    return item if isinstance(item, Example) else Example(*item)



def example_features(tokenizer, examples: Sequence[Example], config: QAConfig) -> Features:
    """The windows of every example, in order. An example with passages gets the windows of each passage,
    numbered as windows of that one example; ``features.passage`` says which passage a window reads."""
    if all(ex.passages is None for ex in examples):
        questions = [ex.question for ex in examples]
        return prepare_features(tokenizer, questions, [ex.context for ex in examples], config)
    owner, passage, questions, texts = [], [], [], []
    for i, ex in enumerate(examples):
        for j, text in enumerate(ex.passages if ex.passages is not None else (ex.context,)):
            owner.append(i)
            passage.append(j)
            questions.append(ex.question)
            texts.append(text)
    features = prepare_features(tokenizer, questions, texts, config)
    unit = features.example_index
    features.example_index = np.asarray(owner, dtype=np.int64)[unit]
    features.passage = np.asarray(passage, dtype=np.int64)[unit]
    return features


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
        groups = None
        batches = iter_batches(features, config.batch_size, pad_to, max_padding=config.max_padding)
    total = len(groups) if groups is not None else None
    limit = getattr(backend, "max_positions", None)
    for batch in tqdm(batches, total=total, desc="windows", unit="batch", disable=not progress):
        length = batch.inputs["input_ids"].shape[1]
        if limit is not None and length > limit:
            raise QAError(
                f"windows of {length} tokens are longer than the model's {limit} positions: lower max_seq_len "
                f"(now {config.max_length}) to {limit} or less"
            )
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
    contexts: Sequence[str | Sequence[str]],
    config: QAConfig,
    top_k: int = 1,
    padded_length: np.ndarray | None = None,
    scorers: Sequence[PassageScorer | None] | None = None,
) -> list[Prediction]:
    """Post-process window logits into one :class:`Prediction` per example, all with ``config``'s options.

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
            window_passage=features.passage,
            padded_length=padded,
            pad_shift=shift,
            left_padding=context_first,
            top_k=top_k,
            max_answer_len=config.max_answer_len,
            handle_impossible_answer=config.handle_impossible_answer,
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
        window_passage=features.passage,
        scorers=scorers,
        n_best_size=config.n_best_size,
        max_answer_len=config.max_answer_len,
        top_k=top_k,
        version_2=config.handle_impossible_answer,
        null_score_diff_threshold=config.null_score_diff_threshold,
    )


def answers_per_example(
    examples: Sequence[Example],
    features: Features,
    starts: Sequence[np.ndarray],
    ends: Sequence[np.ndarray],
    config: QAConfig,
    padded_length: np.ndarray | None = None,
) -> list[Prediction]:
    """One :class:`Prediction` per example, each with its own options over ``config``; examples that share
    options are post-processed together (one call per distinct set of options). With a calibrator
    (``config.calibrator``) every answer gets its ``probability`` and ``min_probability`` applies."""
    groups: dict[tuple, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault((ex.passages is not None, tuple(sorted(ex.options.items()))), []).append(i)
    out: list[Prediction | None] = [None] * len(examples)
    for (multi, key), ids in groups.items():
        options = dict(key)
        top_k = options.pop("top_k", 1)
        group_config = config.with_options(options) if options else config
        calibrator = _calibrator_for(group_config)
        # Over several passages in "pipeline" mode (stock scores are per window: they do not compare
        # across passages) a calibrated model ranks answers by probability, among a pool of at least
        # RERANK_POOL so the top answer does not depend on top_k. "squad" mode keeps its logits + match
        # ranking: re-ranking it by probability lost 9% of its EM (bench/calibration.py).
        rerank = multi and calibrator is not None and group_config.span_scoring == "pipeline"
        pool = max(top_k, RERANK_POOL) if rerank else top_k
        subset, windows = features.select(ids)
        padded = None if padded_length is None else np.asarray(padded_length)[windows]
        predictions = answers_from_logits(
            subset,
            [starts[w] for w in windows],
            [ends[w] for w in windows],
            [examples[i].text for i in ids],
            group_config,
            pool,
            padded_length=padded,
            scorers=[_scorer(examples[i], group_config) for i in ids],
        )
        counts = np.bincount(subset.example_index, minlength=len(ids))
        for i, prediction, count in zip(ids, predictions, counts.tolist()):
            prediction.windows = count
            if calibrator is not None:
                calibrate_prediction(
                    prediction,
                    calibrator,
                    count,
                    examples[i].text,
                    min_probability=group_config.min_probability,
                    rank=rerank,
                )
                prediction.answers = prediction.answers[:top_k]
            out[i] = prediction
    return out  # type: ignore[return-value]


# Answers re-ranked by probability over several passages in "pipeline" mode.
RERANK_POOL = 5


def _scorer(example: Example, config: QAConfig) -> PassageScorer | None:
    """What the example's spans get added over several passages (:mod:`qa_serving.core.passages`);
    ``"squad"`` mode only (the stock ranking has no logits to add to)."""
    if example.passages is None or config.span_scoring != "squad":
        return None
    return passage_scorer(example.question, example.passages, config.passage_match_weight)


def _calibrator_for(config: QAConfig) -> Calibrator | None:
    """The config's calibrator when it was fitted in this span-scoring mode (its features differ between
    modes); a mismatch answers without ``probability`` and warns (Python shows a warning once per place)."""
    calibrator = config.calibrator
    if calibrator is None or calibrator.span_scoring == config.span_scoring:
        return calibrator
    warnings.warn(
        f"the calibrator was fitted for span_scoring={calibrator.span_scoring!r}, this call uses "
        f"{config.span_scoring!r}: answers come without probability (run qa-serving calibrate in this mode)",
        stacklevel=2,
    )
    return None


def answer(
    backend: Backend,
    tokenizer,
    examples: Sequence[Example | tuple[str, str]],
    config: QAConfig | None = None,
    *,
    chunk_size: int = 512,
    stock_batch_size: int = 1,
    progress: bool = False,
) -> list[Prediction]:
    """The one core call: answers for many examples, in order (see :func:`answer_stream`; a list, with a
    progress bar).

    Example: ``answer(backend, tok, [Example("Who?", "Ada did.", {"top_k": 2})])[0].answers``.
    """
    return answer_variants(
        backend, tokenizer, examples, [{}], config,
        chunk_size=chunk_size, stock_batch_size=stock_batch_size, progress=progress,
    )[0]


def answer_stream(
    backend: Backend,
    tokenizer,
    examples: Iterable[Example | tuple[str, str]],
    config: QAConfig | None = None,
    *,
    chunk_size: int = 512,
    stock_batch_size: int = 1,
) -> Iterator[Prediction]:
    """Answers for a stream of examples, yielded chunk by chunk while later examples are still unread
    (memory: one chunk of windows): windows -> the padding the span-scoring mode needs -> batched forward
    passes -> answers, each example with its own options (:class:`Example`) over ``config``.

    ``stock_batch_size`` (``"pipeline"`` mode): the ``batch_size`` of the stock pipeline to match. Its
    batches run across inputs and their padding can decide ties, so examples whose windows share a stock
    batch with unread windows wait for the next chunk (then tokenized again).
    """
    config = config or QAConfig()
    for done, features, starts, ends, padded in _logit_chunks(
        backend, tokenizer, examples, config, chunk_size, stock_batch_size
    ):
        yield from answers_per_example(done, features, starts, ends, config, padded_length=padded)


def answer_variants(
    backend: Backend,
    tokenizer,
    examples: Sequence[Example | tuple[str, str]],
    variants: Sequence[Mapping[str, Any]],
    config: QAConfig | None = None,
    *,
    chunk_size: int = 512,
    stock_batch_size: int = 1,
    progress: bool = False,
) -> list[list[Prediction]]:
    """The answers of every example under each of several option sets, from one forward pass of its
    windows: ``out[v][i]`` is what :func:`answer` gives for example ``i`` with ``variants[v]`` over its own
    options. For option sets that change only post-processing (``top_k``, ``max_answer_len``, ...): e.g.
    the served top answer and the top 5 of the same questions, at the cost of one pass.

    Example: ``top1, top5 = answer_variants(backend, tok, [("Who?", "Ada did.")], [{}, {"top_k": 5}])``.
    """
    config = config or QAConfig()
    variants = [parse_options(dict(v), per_example_only=True) for v in variants]
    out: list[list[Prediction]] = [[] for _ in variants]
    bar = tqdm(total=len(examples), desc="questions", unit="q", disable=not progress)
    chunks = _logit_chunks(backend, tokenizer, examples, config, chunk_size, stock_batch_size)
    for done, features, starts, ends, padded in chunks:
        for v, options in enumerate(variants):
            own = [replace(ex, options={**ex.options, **options}) for ex in done] if options else done
            out[v] += answers_per_example(own, features, starts, ends, config, padded_length=padded)
        bar.update(len(done))
    bar.close()
    return out


def _logit_chunks(
    backend: Backend,
    tokenizer,
    examples: Iterable[Example | tuple[str, str]],
    config: QAConfig,
    chunk_size: int,
    stock_batch_size: int,
) -> Iterator[tuple[list[Example], Features, list[np.ndarray], list[np.ndarray], np.ndarray | None]]:
    """Chunks of examples with their windows' logits: ``(examples, features, starts, ends, padded)``, the
    ``padded`` lengths of the stock batches in ``"pipeline"`` mode (see :func:`answer_stream`)."""
    stock = config.span_scoring == "pipeline"
    source = (as_example(item) for item in examples)
    pending: list[Example] = []
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
        features = example_features(tokenizer, pending, config)
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
                features, _ = features.select(range(n_done))
                padded = padded[:first]
            position, carried = next_position, next_carried
        left = stock and features.padding_side == "left"
        starts, ends = window_logits(backend, features, config, pad_lengths=padded if left else None)
        yield pending[:n_done], features, starts, ends, padded
        pending, want = pending[n_done:], chunk_size
        if exhausted and not pending:
            return


_END = object()
