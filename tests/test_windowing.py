"""Windowing: labels round-trip to the gold text, windows overlap by doc_stride, offsets mark context only."""

from __future__ import annotations

import re

import numpy as np
import pytest

from qa_serving.core.config import QAConfig
from qa_serving.core.windowing import NO_OFFSET, prepare_features, truncate_questions
from qa_serving.errors import QAError

# Small windows so ordinary contexts need several of them.
SMALL = QAConfig(max_length=64, doc_stride=24, max_question_len=16)


def _context_rows(offsets: np.ndarray) -> np.ndarray:
    return np.flatnonzero(offsets[:, 0] != NO_OFFSET)


def _check_labels(features, examples) -> list[int]:
    """Every window: labelled with the exact gold text iff the answer lies inside it, else CLS.

    Returns the number of labelled windows per example.
    """
    labelled = [0] * len(examples)
    for i in range(len(features)):
        ex = examples[features.example_index[i]]
        offs = features.offsets[i]
        ctx = _context_rows(offs)
        start, end = int(features.start_positions[i]), int(features.end_positions[i])
        inside = offs[ctx[0], 0] <= ex.answer_start and offs[ctx[-1], 1] >= ex.answer_start + len(ex.answer)
        if not inside:
            assert start == end == features.cls_index[i], (
                f"window {i} lacks the answer but is not labelled CLS"
            )
            continue
        assert start != features.cls_index[i] and start in ctx and end in ctx and start <= end
        assert ex.context[offs[start, 0] : offs[end, 1]] == ex.answer
        labelled[features.example_index[i]] += 1
    return labelled


def _assert_answers_found(labelled, examples, tokenizer, config) -> None:
    """Some window labels every answer that fits in the overlap of two windows (doc_stride + 1 tokens)."""
    fits = [len(tokenizer.tokenize(e.answer)) <= config.doc_stride + 1 for e in examples]
    assert sum(fits) >= 0.9 * len(examples)
    assert all(n >= 1 for n, fit in zip(labelled, fits) if fit)


@pytest.mark.parametrize("lang", ["en", "ko"])
@pytest.mark.parametrize("config", [QAConfig(), SMALL], ids=["default", "small-windows"])
def test_labels_round_trip_to_gold_text(tiny_tokenizer, qa_factory, lang, config):
    examples = [qa_factory.example(lang, n_sentences=qa_factory.rng.randint(1, 6)) for _ in range(40)]
    features = prepare_features(
        tiny_tokenizer,
        [e.question for e in examples],
        [e.context for e in examples],
        config,
        answers=[e.answers for e in examples],
    )
    labelled = _check_labels(features, examples)
    _assert_answers_found(labelled, examples, tiny_tokenizer, config)
    assert set(features.example_index.tolist()) == set(range(len(examples)))
    assert np.all(np.diff(features.example_index) >= 0)
    assert np.all(features.cls_index == 0)


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_long_context_needs_several_windows(tiny_tokenizer, qa_factory, lang):
    examples = [qa_factory.example(lang, n_sentences=20) for _ in range(5)]
    features = prepare_features(
        tiny_tokenizer,
        [e.question for e in examples],
        [e.context for e in examples],
        SMALL,
        answers=[e.answers for e in examples],
    )
    counts = np.bincount(features.example_index, minlength=len(examples))
    assert np.all(counts > 1)
    labelled = _check_labels(features, examples)
    _assert_answers_found(labelled, examples, tiny_tokenizer, SMALL)
    # Some windows do not hold the answer and are labelled CLS.
    assert np.any(features.start_positions == features.cls_index)
    assert all(len(ids) <= SMALL.max_length for ids in features.input_ids)


@pytest.mark.parametrize("tokenizer_fixture", ["tiny_tokenizer", "tiny_tokenizer_left"])
def test_consecutive_windows_overlap_by_doc_stride(request, qa_factory, tokenizer_fixture):
    tok = request.getfixturevalue(tokenizer_fixture)
    examples = [qa_factory.example("en", n_sentences=15) for _ in range(3)]
    features = prepare_features(tok, [e.question for e in examples], [e.context for e in examples], SMALL)
    pairs = 0
    for i in range(len(features) - 1):
        if features.example_index[i] != features.example_index[i + 1]:
            continue
        a = features.offsets[i][_context_rows(features.offsets[i])]
        b = features.offsets[i + 1][_context_rows(features.offsets[i + 1])]
        stride = SMALL.doc_stride
        np.testing.assert_array_equal(a[-stride:], b[:stride])
        # ... and no more than that: the next window then moves on past the previous one.
        assert b[stride, 0] >= a[-1, 1]
        pairs += 1
    assert pairs >= 3
    # Together the windows cover the whole context, in order.
    for ex_id, ex in enumerate(examples):
        spans = np.concatenate(
            [
                features.offsets[i][_context_rows(features.offsets[i])]
                for i in np.flatnonzero(features.example_index == ex_id)
            ]
        )
        assert spans[0, 0] == 0 and spans[-1, 1] == len(ex.context)


def test_unanswerable_examples_are_labelled_cls(tiny_tokenizer, qa_factory):
    examples = [qa_factory.example("en", n_sentences=8) for _ in range(4)]
    answers = [e.answers if i % 2 else {"text": [], "answer_start": []} for i, e in enumerate(examples)]
    features = prepare_features(
        tiny_tokenizer, [e.question for e in examples], [e.context for e in examples], SMALL, answers=answers
    )
    unanswerable = features.example_index % 2 == 0
    assert unanswerable.any()
    np.testing.assert_array_equal(features.start_positions[unanswerable], features.cls_index[unanswerable])
    np.testing.assert_array_equal(features.end_positions[unanswerable], features.cls_index[unanswerable])
    assert np.any(features.start_positions[~unanswerable] != features.cls_index[~unanswerable])


@pytest.mark.parametrize("config", [QAConfig(), SMALL], ids=["default", "small-windows"])
def test_left_padding_tokenizer_puts_context_first(tiny_tokenizer_left, qa_factory, config):
    tok = tiny_tokenizer_left
    examples = [qa_factory.example(lang, n_sentences=8) for lang in ("en", "ko") for _ in range(10)]
    features = prepare_features(
        tok,
        [e.question for e in examples],
        [e.context for e in examples],
        config,
        answers=[e.answers for e in examples],
    )
    assert features.padding_side == "left"
    labelled = _check_labels(features, examples)
    _assert_answers_found(labelled, examples, tok, config)
    sep = tok.sep_token_id
    for ids, offs in zip(features.input_ids, features.offsets):
        # [CLS] context [SEP] question [SEP]
        first_sep = int(np.flatnonzero(ids == sep)[0])
        assert ids[0] == tok.cls_token_id and ids[-1] == sep
        np.testing.assert_array_equal(_context_rows(offs), np.arange(1, first_sep))
    if config is SMALL:
        assert len(features) > len(examples)


@pytest.mark.parametrize("tokenizer_fixture", ["tiny_tokenizer", "tiny_tokenizer_left"])
def test_long_question_is_cut_to_max_question_len(request, qa_factory, tokenizer_fixture):
    tok = request.getfixturevalue(tokenizer_fixture)
    question = " ".join(qa_factory.sentence("en", 200)) + "?"
    example = qa_factory.example("en", n_sentences=4)
    features = prepare_features(tok, [question], [example.context], SMALL, answers=[example.answers])
    expected = tok(question, add_special_tokens=False)["input_ids"][: SMALL.max_question_len]
    for ids, offs in zip(features.input_ids, features.offsets):
        special = np.isin(ids, tok.all_special_ids)
        question_rows = (offs[:, 0] == NO_OFFSET) & ~special
        assert question_rows.sum() <= SMALL.max_question_len
        assert ids[question_rows].tolist() == expected
    _check_labels(features, [example])


def test_truncate_questions_cuts_at_a_token_boundary(tiny_tokenizer):
    assert tiny_tokenizer.tokenize("the king of rome?") == ["the", "king", "of", "rome", "?"]
    assert truncate_questions(tiny_tokenizer, ["  the king of rome?"], 2) == ["the king"]
    assert truncate_questions(tiny_tokenizer, ["the king of rome?"], 5) == ["the king of rome?"]
    # A word split into subwords can be cut inside the word, still at a token boundary.
    pieces = tiny_tokenizer.tokenize("zorblaxity")
    cut = truncate_questions(tiny_tokenizer, ["zorblaxity king"], 2)[0]
    assert tiny_tokenizer.tokenize(cut) == pieces[:2]


def test_a_large_doc_stride_cuts_the_question_and_fails_only_when_no_context_fits(tiny_tokenizer, qa_factory):
    ex = qa_factory.example("en", n_sentences=10)
    n_special = tiny_tokenizer.num_special_tokens_to_add(pair=True)
    for scoring in ("squad", "pipeline"):
        # Room for 2 question tokens beside more than doc_stride context tokens: cut, not refused.
        config = SMALL.replace(doc_stride=64 - n_special - 3, span_scoring=scoring)
        features = prepare_features(tiny_tokenizer, [ex.question], [ex.context], config)
        assert len(features) > 1
        context_tokens = features.stock_offsets[0][:, 4].sum() - 1  # the stock p_mask keeps CLS too
        assert len(features.input_ids[0]) - n_special - context_tokens == 2
        with pytest.raises(QAError, match="no context fits"):
            prepare_features(
                tiny_tokenizer, [ex.question], [ex.context], config.replace(doc_stride=64 - n_special - 1)
            )
        # ...but a pair that fits one window needs no room for overflow: answered, as the stock pipeline does.
        short = prepare_features(
            tiny_tokenizer, [ex.question], [ex.context[:40]], config.replace(doc_stride=64 - n_special - 1)
        )
        assert len(short) == 1


@pytest.mark.parametrize(
    ("question", "context"),
    [
        ("", "some context."),
        ("   \n", "some context."),
        ("who?", ""),
        ("who?", " \t\n"),
        (None, "context"),
        ("who?", 3),
    ],
)
def test_empty_or_non_string_inputs_raise(tiny_tokenizer, question, context):
    with pytest.raises(QAError):
        prepare_features(tiny_tokenizer, [question], [context])


def test_mismatched_lengths_raise(tiny_tokenizer):
    with pytest.raises(QAError, match="questions"):
        prepare_features(tiny_tokenizer, ["who?", "what?"], ["a context."])
    with pytest.raises(QAError, match="answers"):
        prepare_features(tiny_tokenizer, ["who?"], ["a context."], answers=[])


def test_slow_tokenizer_raises(tiny_tokenizer, tmp_path):
    from transformers import BertTokenizer

    vocab = sorted(tiny_tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    (tmp_path / "vocab.txt").write_text("".join(token + "\n" for token, _ in vocab), encoding="utf-8")
    slow = BertTokenizer(vocab_file=str(tmp_path / "vocab.txt"))
    assert not slow.is_fast
    with pytest.raises(QAError, match="fast tokenizer"):
        prepare_features(slow, ["who wrote hamlet?"], ["shakespeare wrote hamlet."])


def test_offsets_are_minus_one_outside_the_context(tiny_tokenizer, qa_factory):
    examples = [qa_factory.example("en", n_sentences=10) for _ in range(3)]
    features = prepare_features(
        tiny_tokenizer, [e.question for e in examples], [e.context for e in examples], SMALL
    )
    for ids, types, offs, words in zip(
        features.input_ids, features.token_type_ids, features.offsets, features.word_offsets
    ):
        # Right padding: [CLS] question [SEP] (type 0) context [SEP] (type 1).
        not_context = (types == 0) | np.isin(ids, tiny_tokenizer.all_special_ids)
        assert np.all(offs[not_context] == NO_OFFSET) and np.all(words[not_context] == NO_OFFSET)
        assert np.all(offs[~not_context] >= 0) and np.all(offs[~not_context, 1] > offs[~not_context, 0])
        assert offs.shape == (len(ids), 2)


def test_word_offsets_widen_subwords_to_whole_words(tiny_tokenizer):
    context = "In 1503 the Zorblaxity of Seoul, gymosydajy crossed the river."
    assert len(tiny_tokenizer.tokenize("zorblaxity")) > 2  # the test needs a word split into subwords
    features = prepare_features(tiny_tokenizer, ["who crossed the river?"], [context])
    offs, words = features.offsets[0], features.word_offsets[0]
    ctx = _context_rows(offs)
    pieces = [context[s:e] for s, e in offs[ctx]]
    assert "".join(pieces) == re.sub(r"\s", "", context)
    zorb = [r for r in ctx if context.find("Zorblaxity") <= offs[r, 0] < context.find("Zorblaxity") + 10]
    assert len(zorb) > 2
    assert len({tuple(offs[r]) for r in zorb}) == len(zorb)  # subword spans differ ...
    assert all(context[slice(*words[r])] == "Zorblaxity" for r in zorb)  # ... their word span is the word
    # Every context token's word span is exactly one word of the pre-tokenizer (letters/digits or a mark).
    word_spans = {m.span() for m in re.finditer(r"\w+|[^\w\s]", context)}
    for r in ctx:
        assert tuple(words[r]) in word_spans
        assert words[r, 0] <= offs[r, 0] < offs[r, 1] <= words[r, 1]


def test_korean_answer_inside_a_word_is_covered_by_its_token(tiny_tokenizer):
    # KorQuAD answers often drop the particle of an eojeol ("세종대왕" out of "세종대왕은"). When the
    # tokenizer keeps the eojeol as one token (this frequent word always is, whatever ties the
    # tokenizer trainer breaks differently from run to run), no token span equals the answer: the label is
    # the smallest covering span, so the round trip holds only after the particle is stripped.
    context = "조선 시대에 세종대왕은 한글을 창제하였다."
    answer = "세종대왕"
    start = context.index(answer)
    features = prepare_features(
        tiny_tokenizer,
        ["누가 한글을 창제하였다?"],
        [context],
        answers=[{"text": [answer], "answer_start": [start]}],
    )
    assert tiny_tokenizer.tokenize("세종대왕은") == ["세종대왕은"]
    s, e = int(features.start_positions[0]), int(features.end_positions[0])
    span = context[features.offsets[0][s, 0] : features.offsets[0][e, 1]]
    assert span == "세종대왕은"
    assert span.removesuffix("은") == answer


MISTRAL_WARNING = (
    "The tokenizer you are loading from 'model' with an incorrect regex pattern: ... You should set "
    "the `fix_mistral_regex=True` flag when loading this tokenizer to fix this issue."
)


@pytest.fixture
def tokenizer_warnings():
    """The messages logged on transformers' tokenizer-loading logger while the test runs."""
    import logging

    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger, handler = logging.getLogger("transformers.tokenization_utils_base"), Collect()
    logger.addHandler(handler)
    yield seen
    logger.removeHandler(handler)


def test_quiet_mistral_regex_warning_drops_only_that_warning_and_only_inside(tokenizer_warnings):
    """Optimum's exporters load the saved tokenizer themselves; for a large-vocabulary model transformers
    4.57 then warns "incorrect regex pattern ... fix_mistral_regex" (a false positive) several times per
    export. The export functions run under this filter; other warnings, and the same one outside, pass."""
    import logging

    from qa_serving.core.windowing import quiet_mistral_regex_warning

    logger = logging.getLogger("transformers.tokenization_utils_base")
    with quiet_mistral_regex_warning():
        logger.warning(MISTRAL_WARNING)
        logger.warning("another warning")
    logger.warning(MISTRAL_WARNING)
    assert tokenizer_warnings == ["another warning", MISTRAL_WARNING]


@pytest.mark.parametrize("module, first_step, call", [("onnx", "_check_options", "export_onnx"),
                                                      ("openvino", "_check", "export_openvino")])  # fmt: skip
def test_the_export_functions_run_under_the_mistral_regex_filter(
    monkeypatch, tokenizer_warnings, tmp_path, module, first_step, call
):
    """The warning, logged from inside an export (here by its first step, as Optimum's loading does), is
    dropped; the same warning after the export returns is not."""
    import importlib
    import logging

    exporter = importlib.import_module(f"qa_serving.export.{module}")
    logger = logging.getLogger("transformers.tokenization_utils_base")

    def warn_and_stop(*args, **kwargs):
        logger.warning(MISTRAL_WARNING)
        raise RuntimeError("stop here")

    monkeypatch.setattr(exporter, first_step, warn_and_stop)
    with pytest.raises(RuntimeError, match="stop here"):
        getattr(exporter, call)(model_dir=tmp_path, output_dir=tmp_path / "out")
    assert tokenizer_warnings == []
    logger.warning(MISTRAL_WARNING)
    assert tokenizer_warnings == [MISTRAL_WARNING]
