"""Question/context tokenization into overlapping windows: the one place the tokenizer is called.

Every caller (training, evaluation, the ``custom-qa`` pipeline, the TorchServe handler, the ONNX parity
check) turns examples into :class:`Features` here. Downstream code never re-tokenizes: each window
carries the index of its example and the character offsets of its context tokens (``-1`` elsewhere),
which is all :mod:`qa_serving.core.postprocess` needs.

Deliberate simplifications:
- Questions too long for a window are cut (at a token boundary of the question's own tokenization) so
  that more than ``doc_stride`` context tokens fit, instead of failing as the stock pipeline's tokenizer
  call does; ``"squad"`` scoring also cuts them to ``max_question_len`` (see :func:`fit_questions`).
- Labels use the first gold answer, as the SQuAD reference scripts do.
- Left-padding tokenizers (e.g. XLNet) get ``context, question`` order with ``only_first`` truncation,
  as the Hugging Face reference does, so the question stays next to the padding-free end.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qa_serving.core.config import QAConfig
from qa_serving.errors import QAError

NO_OFFSET = -1


@dataclass
class Features:
    """Windows of token ids for a list of examples, unpadded (batching pads per batch).

    ``offsets[i]`` is an ``(len_i, 2)`` int array of character spans into the context of example
    ``example_index[i]``; rows of question, special and padding tokens are ``-1``. ``word_offsets`` is the
    same with each token widened to its whole word (used when answers are aligned to words).
    ``start_positions``/``end_positions`` are the token labels (CLS index when the answer is not inside
    the window or the question is unanswerable); present only when answers were given.
    ``stock_offsets[i]`` is ``(len_i, 5)``: every token's offsets as the tokenizer gives them (question
    tokens index the question), the span the stock pipeline's ``token_to_word``/``word_to_chars``
    alignment gives it (``-1`` where that lookup fails), and 1 where the stock ``p_mask`` lets an answer
    use it (context tokens by sequence id, and CLS; every token for context-first tokenizers), so
    postprocess can reproduce the stock answers and scores whatever ``offsets`` leave out.
    """

    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray] | None
    example_index: np.ndarray
    offsets: list[np.ndarray]
    word_offsets: list[np.ndarray]
    cls_index: np.ndarray
    pad_token_id: int
    padding_side: str = "right"
    start_positions: np.ndarray | None = None
    end_positions: np.ndarray | None = None
    stock_offsets: list[np.ndarray] | None = None
    passage: np.ndarray | None = None  # several passages per example: the passage each window reads
    lengths: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.lengths = np.array([len(ids) for ids in self.input_ids], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.input_ids)

    def select(self, example_ids: Sequence[int]) -> tuple[Features, np.ndarray]:
        """The windows of some examples, renumbered 0..len(example_ids)-1 in the given order, and the
        indices of those windows here (to pick their logits). Example: ``sub, w = f.select([2, 0])``;
        ``[starts[i] for i in w]``."""
        n = int(self.example_index.max()) + 1 if len(self) else 0
        if list(example_ids) == list(range(n)):
            return self, np.arange(len(self))
        new_id = np.full(n, -1, dtype=np.int64)
        new_id[np.asarray(example_ids, dtype=np.int64)] = np.arange(len(example_ids))
        windows = np.flatnonzero(new_id[self.example_index] >= 0)
        pick = lambda seq: [seq[w] for w in windows]
        labels = lambda arr: arr[windows] if arr is not None else None
        subset = Features(
            input_ids=pick(self.input_ids),
            token_type_ids=pick(self.token_type_ids) if self.token_type_ids is not None else None,
            example_index=new_id[self.example_index[windows]],
            offsets=pick(self.offsets),
            word_offsets=pick(self.word_offsets),
            cls_index=self.cls_index[windows],
            pad_token_id=self.pad_token_id,
            padding_side=self.padding_side,
            start_positions=labels(self.start_positions),
            end_positions=labels(self.end_positions),
            stock_offsets=pick(self.stock_offsets) if self.stock_offsets is not None else None,
            passage=labels(self.passage),
        )
        return subset, windows


def _question_first(tokenizer) -> bool:
    return tokenizer.padding_side == "right"


def truncate_questions(tokenizer, questions: Sequence[str], max_question_len: int) -> list[str]:
    """Strip leading whitespace and cut each question to at most ``max_question_len`` tokens.

    Cutting the string at a token's end offset keeps the re-tokenization identical to the kept tokens.
    Example: with ``max_question_len=2``, ``"  who wrote hamlet?"`` -> ``"who wrote"``.
    """
    stripped = [q.lstrip() for q in questions]
    encoded = tokenizer(stripped, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for question, offsets in zip(stripped, encoded["offset_mapping"]):
        if len(offsets) > max_question_len:
            question = question[: offsets[max_question_len - 1][1]]
        out.append(question)
    return out


def fit_questions(tokenizer, questions: Sequence[str], contexts: Sequence[str], config: QAConfig) -> list[str]:
    """Questions as windowing uses them: cut so that more than ``doc_stride`` context tokens fit a window.

    ``"squad"`` scoring: left-stripped and cut to ``max_question_len`` too (the SQuAD reference).
    ``"pipeline"`` scoring: as given, like the stock pipeline (its fast-tokenizer path ignores
    ``max_question_len``); cut only where the stock tokenizer call would fail (the pair needs truncating
    but no more than ``doc_stride`` context tokens would fit beside the question).
    Example: ``max_length=48, doc_stride=24`` with 3 special tokens -> at most 20 question tokens.
    """
    n_special = tokenizer.num_special_tokens_to_add(pair=True)
    fit = config.max_length - n_special - config.doc_stride - 1
    if fit < 1:
        # No question leaves room for overflowing windows; fine while every pair fits one window (the stock
        # pipeline answers those: its tokenizer only checks the stride when it has to truncate).
        if config.span_scoring != "pipeline":
            questions = truncate_questions(tokenizer, questions, config.max_question_len)
        q_ids = tokenizer(list(questions), add_special_tokens=False)["input_ids"]
        c_ids = tokenizer(list(contexts), add_special_tokens=False)["input_ids"]
        too_long = [i for i, (q, c) in enumerate(zip(q_ids, c_ids)) if len(q) + len(c) + n_special > config.max_length]
        if too_long:
            raise QAError(
                f"no context fits a window of example {too_long[0]} (it needs several): max_length "
                f"{config.max_length} - {n_special} special tokens leaves no room for a question and more than "
                f"doc_stride ({config.doc_stride}) context tokens; lower doc_stride or raise max_length"
            )
        return list(questions)
    if config.span_scoring != "pipeline":
        return truncate_questions(tokenizer, questions, min(config.max_question_len, fit))
    offsets = tokenizer(list(questions), add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    out = list(questions)
    long = [i for i, offs in enumerate(offsets) if len(offs) > fit]
    if long:
        context_ids = tokenizer([contexts[i] for i in long], add_special_tokens=False)["input_ids"]
        for i, ids in zip(long, context_ids):
            if len(offsets[i]) + len(ids) + n_special > config.max_length:
                out[i] = questions[i][: offsets[i][fit - 1][1]]
    return out


def _stock_offsets(
    raw: np.ndarray, word_ids: list, sequence_ids: list, context_index: int, answerable: np.ndarray
) -> np.ndarray:
    """``(len, 5)``: raw token offsets, ``word_to_chars(token_to_word(t), context_index)`` or ``-1``, and
    ``answerable`` (the stock ``1 - p_mask``).

    A word id is looked up among the context tokens of the window, whatever sequence the token is in
    (the stock pipeline does this for context-first tokenizers, whose answers may reach the question).
    """
    words = np.array([-1 if w is None else w for w in word_ids], dtype=np.int64)
    in_context = np.array([s == context_index for s in sequence_ids], dtype=bool) & (words >= 0)
    ctx_words, ctx_offsets = words[in_context], raw[in_context]
    aligned = np.full_like(raw, NO_OFFSET)
    if ctx_words.size:
        uniq, first = np.unique(ctx_words, return_index=True)
        last = ctx_words.size - 1 - np.unique(ctx_words[::-1], return_index=True)[1]
        pos = np.minimum(np.searchsorted(uniq, words), uniq.size - 1)
        hit = (words >= 0) & (uniq[pos] == words)
        aligned[hit, 0] = ctx_offsets[first[pos[hit]], 0]
        aligned[hit, 1] = ctx_offsets[last[pos[hit]], 1]
    return np.concatenate([raw, aligned, answerable.astype(np.int64)[:, None]], axis=1)


def _trim_leading_space(offs: np.ndarray, is_space: np.ndarray) -> None:
    """SentencePiece (XLM-R, "▁" pieces) gives a word-initial token the span of the space before it;
    move such starts past the space (in place), so answers and labels begin at the word.
    Example: ``"의 수도"``, token ``▁수도`` at (1, 4) -> (2, 4). WordPiece/BPE offsets never start on a
    space nor overlap, so nothing changes for them.
    """
    for _ in range(4):  # one space per piece in practice; a few passes cover runs of spaces
        ctx = offs[:, 0] != NO_OFFSET
        lead = ctx & (offs[:, 1] - offs[:, 0] > 1)
        lead[lead] = is_space[offs[lead, 0]]
        if not lead.any():
            break
        offs[lead, 0] += 1
    # A lone "▁" piece is no answer boundary: one spanning only spaces, or the added prefix space of a
    # context that starts with a word (it gets the word's first character, overlapping the next piece).
    ctx = np.flatnonzero(offs[:, 0] != NO_OFFSET)
    blank = is_space[offs[ctx, 0]] & (offs[ctx, 1] - offs[ctx, 0] == 1)
    blank[:-1] |= offs[ctx[:-1], 0] == offs[ctx[1:], 0]
    offs[ctx[blank]] = NO_OFFSET


def lone_surrogate(text: str) -> int | None:
    """Where ``text`` holds a lone surrogate (JSON's ``"\ud800"`` decodes to one), or ``None``: such a str
    passes every type check, but no tokenizer takes it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return err.start
    return None


def _check_inputs(questions: Sequence[str], contexts: Sequence[str]) -> None:
    if len(questions) != len(contexts):
        raise QAError(f"got {len(questions)} questions but {len(contexts)} contexts")
    for i, (q, c) in enumerate(zip(questions, contexts)):
        if not isinstance(q, str) or not isinstance(c, str):
            raise QAError(f"example {i}: question and context must be strings")
        if not q.strip():
            raise QAError(f"example {i}: the question is empty")
        if not c.strip():
            raise QAError(f"example {i}: the context is empty")
        for name, text in (("question", q), ("context", c)):
            at = lone_surrogate(text)
            if at is not None:
                raise QAError(f"example {i}: the {name} is not valid Unicode text (a lone surrogate at character {at})")


def _word_spans(offsets: np.ndarray, word_ids: list[int | None]) -> np.ndarray:
    """Widen every context token's span to the span of its word (tokens of a word are contiguous)."""
    out = offsets.copy()
    ids = np.array([-1 if w is None else w for w in word_ids], dtype=np.int64)
    ids[offsets[:, 0] == NO_OFFSET] = -1
    valid = np.flatnonzero(ids >= 0)
    if valid.size == 0:
        return out
    # Runs of equal word ids among context tokens.
    run_ids = ids[valid]
    breaks = np.flatnonzero(np.diff(run_ids) != 0) + 1
    starts = np.minimum.reduceat(offsets[valid, 0], np.r_[0, breaks])
    ends = np.maximum.reduceat(offsets[valid, 1], np.r_[0, breaks])
    run_of = np.cumsum(np.r_[0, np.diff(run_ids) != 0])
    out[valid, 0] = starts[run_of]
    out[valid, 1] = ends[run_of]
    return out


def load_tokenizer(path: str | Path):
    """The fast (Rust) tokenizer saved in ``path``: windowing needs its offset mappings.

    ``fix_mistral_regex=False`` says what is true of every tokenizer this project saves (none is a Mistral
    tokenizer): transformers 4.57.3-4.57.x otherwise warns "incorrect regex pattern ... will lead to incorrect
    tokenization" for any local folder with a vocabulary over 100k pieces, e.g. multilingual-e5-small's
    (huggingface/transformers#44031; no tokenization changes either way).
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), use_fast=True, fix_mistral_regex=False)
    except (OSError, ValueError, TypeError) as err:  # TypeError: a folder with a config but no tokenizer files
        raise QAError(f"no usable tokenizer in {path} (save one beside the model): {err}") from err
    if not getattr(tokenizer, "is_fast", False):
        raise QAError(f"the tokenizer in {path} is not a fast (Rust) one: windowing needs its offset mappings")
    return tokenizer


def _not_mistral_regex(record: logging.LogRecord) -> bool:
    return "fix_mistral_regex" not in record.getMessage()


@contextlib.contextmanager
def quiet_mistral_regex_warning() -> Iterator[None]:
    """Drop transformers' "incorrect regex pattern ... fix_mistral_regex" warning while the block runs
    (also a decorator). Libraries that load a saved tokenizer themselves (Optimum's exporters) cannot be
    passed ``fix_mistral_regex=False``; the warning is the false positive :func:`load_tokenizer` explains,
    printed several times per export of a model with a large vocabulary. Other warnings pass."""
    logger = logging.getLogger("transformers.tokenization_utils_base")
    logger.addFilter(_not_mistral_regex)
    try:
        yield
    finally:
        logger.removeFilter(_not_mistral_regex)


def prepare_features(
    tokenizer,
    questions: Sequence[str],
    contexts: Sequence[str],
    config: QAConfig | None = None,
    answers: Sequence[dict] | None = None,
) -> Features:
    """Tokenize examples into overlapping windows (``max_length``/``doc_stride`` from ``config``).

    ``answers`` (SQuAD style ``{"text": [...], "answer_start": [...]}`` per example) adds token labels
    for training. Needs a fast (Rust) tokenizer for offset mappings.
    """
    config = config or QAConfig()
    if not getattr(tokenizer, "is_fast", False):
        raise QAError(
            f"{type(tokenizer).__name__} is a slow tokenizer; windowing needs offsets from a fast "
            "tokenizer (AutoTokenizer.from_pretrained(..., use_fast=True))"
        )
    questions, contexts = list(questions), list(contexts)
    _check_inputs(questions, contexts)
    if answers is not None and len(answers) != len(questions):
        raise QAError(f"got {len(answers)} answers for {len(questions)} questions")
    questions = fit_questions(tokenizer, questions, contexts, config)
    question_first = _question_first(tokenizer)
    context_index = 1 if question_first else 0
    enc = tokenizer(
        questions if question_first else contexts,
        contexts if question_first else questions,
        truncation="only_second" if question_first else "only_first",
        max_length=config.max_length,
        stride=config.doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_token_type_ids=True,
        padding=False,
    )
    example_index = np.asarray(enc["overflow_to_sample_mapping"], dtype=np.int64)
    cls_id = tokenizer.cls_token_id
    spaces = [np.array([c.isspace() for c in ctx] + [False], dtype=bool) for ctx in contexts]
    input_ids, token_types, offsets_all, words_all, cls_index = [], [], [], [], []
    stock = []
    for i, ids in enumerate(enc["input_ids"]):
        ids_arr = np.asarray(ids, dtype=np.int64)
        seq_ids = enc.sequence_ids(i)
        offs = np.asarray(enc["offset_mapping"][i], dtype=np.int64).reshape(-1, 2)
        # The stock p_mask: question-first, only context tokens (sequence 1) and CLS; else no mask.
        answerable = np.array([s == 1 or not question_first for s in seq_ids], dtype=bool)
        answerable |= ids_arr == (cls_id if cls_id is not None else -1)
        stock.append(_stock_offsets(offs, enc.word_ids(i), seq_ids, context_index, answerable))
        in_context = np.array([s == context_index for s in seq_ids], dtype=bool)
        offs[~in_context] = NO_OFFSET
        _trim_leading_space(offs, spaces[example_index[i]])
        input_ids.append(ids_arr)
        token_types.append(np.asarray(enc["token_type_ids"][i], dtype=np.int64))
        offsets_all.append(offs)
        words_all.append(_word_spans(offs, enc.word_ids(i)))
        hits = np.flatnonzero(ids_arr == cls_id) if cls_id is not None else np.empty(0, dtype=np.int64)
        cls_index.append(int(hits[0]) if hits.size else 0)
    has_types = "token_type_ids" in tokenizer.model_input_names
    features = Features(
        input_ids=input_ids,
        token_type_ids=token_types if has_types else None,
        example_index=example_index,
        offsets=offsets_all,
        word_offsets=words_all,
        cls_index=np.asarray(cls_index, dtype=np.int64),
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        padding_side=tokenizer.padding_side,
        stock_offsets=stock,
    )
    if answers is not None:
        features.start_positions, features.end_positions = label_positions(features, answers)
    return features


def label_positions(features: Features, answers: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Start/end token labels of the first gold answer per window; CLS when it is not in the window."""
    n = len(features)
    starts = features.cls_index.copy()
    ends = features.cls_index.copy()
    for i in range(n):
        ans = answers[features.example_index[i]]
        if not ans["answer_start"]:
            continue
        text = ans["text"][0]
        # Outer whitespace belongs to no token: without this, a gold "word " would be labelled up to the
        # end of the next word (one real KorQuAD answer ends with a space).
        start_char = int(ans["answer_start"][0]) + len(text) - len(text.lstrip())
        end_char = start_char + len(text.strip())
        offs = features.offsets[i]
        ctx = np.flatnonzero(offs[:, 0] != NO_OFFSET)
        if ctx.size == 0 or offs[ctx[0], 0] > start_char or offs[ctx[-1], 1] < end_char:
            continue  # answer not fully inside this window
        # Last context token starting at or before the answer start, first ending at or after its end.
        starts[i] = ctx[np.flatnonzero(offs[ctx, 0] <= start_char)[-1]]
        ends[i] = ctx[np.flatnonzero(offs[ctx, 1] >= end_char)[0]]
    return starts, ends
