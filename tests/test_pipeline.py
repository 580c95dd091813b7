"""The ``custom-qa`` pipeline: call shapes, errors, batching invariance, parity with the stock
``question-answering`` pipeline, loading from a saved folder (with its qa_config.json) and from ONNX."""

from __future__ import annotations

import random

import numpy as np
import pytest
import transformers

import qa_serving
from qa_serving import QAConfig, QAError, prepare_features

pytestmark = pytest.mark.usefixtures("torch_one_thread")

KEYS = {"answer", "score", "start", "end"}
# Settings both pipelines understand, with windows small enough that long contexts need several.
PARITY = {"max_seq_len": 128, "doc_stride": 32, "max_answer_len": 15, "max_question_len": 32}
PARITY_CONFIG = QAConfig(max_length=128, doc_stride=32, max_question_len=32, max_answer_len=15)


@pytest.fixture
def qa(tiny_model, tiny_tokenizer):
    assert qa_serving.CustomQAPipeline  # importing qa_serving registers "custom-qa"
    return transformers.pipeline("custom-qa", model=tiny_model, tokenizer=tiny_tokenizer)


@pytest.fixture
def examples(qa_factory):
    return [qa_factory.example(lang, n_sentences=n) for lang in ("en", "ko") for n in (1, 2, 6, 12)]


def _span(answer: dict) -> tuple[int, int]:
    return answer["start"], answer["end"]


# --- call shapes --------------------------------------------------------------------------------------


def test_single_question_and_context_give_one_dict(qa, examples):
    ex = examples[0]
    out = qa(question=ex.question, context=ex.context)
    assert isinstance(out, dict) and set(out) == KEYS
    assert out["answer"] == ex.context[out["start"] : out["end"]] != ""
    assert 0.0 < out["score"] <= 1.0
    assert qa({"question": ex.question, "context": ex.context}) == out


def test_lists_and_list_of_dicts_give_lists(qa, examples):
    qs, cs = [e.question for e in examples], [e.context for e in examples]
    out = qa(question=qs, context=cs)
    assert isinstance(out, list) and len(out) == len(examples)
    assert all(isinstance(a, dict) and set(a) == KEYS for a in out)
    assert qa([{"question": q, "context": c} for q, c in zip(qs, cs)]) == out
    # One question over several contexts, or several questions over one context.
    assert qa(question=qs[0], context=cs[:3]) == qa(question=[qs[0]] * 3, context=cs[:3])
    assert qa(question=qs[:3], context=cs[0]) == qa(question=qs[:3], context=[cs[0]] * 3)


def test_answer_is_the_context_slice(qa, examples):
    for ex, out in zip(
        examples, qa(question=[e.question for e in examples], context=[e.context for e in examples])
    ):
        assert out["answer"] == ex.context[out["start"] : out["end"]]
        assert out["answer"] and out["answer"] == out["answer"].strip()


def test_top_k_gives_distinct_spans_by_score(qa, examples):
    ex = examples[2]
    out = qa(question=ex.question, context=ex.context, top_k=3)
    assert isinstance(out, list) and len(out) == 3
    assert len({_span(a) for a in out}) == 3
    scores = [a["score"] for a in out]
    assert scores == sorted(scores, reverse=True)
    # Without word alignment the stock pipeline picks top_k spans, so the first one does not depend on
    # top_k; with it, it sums the scores of its top 2 top_k + 10 spans per text, which can.
    assert qa(question=ex.question, context=ex.context, top_k=3, align_to_words=False)[0] == qa(
        question=ex.question, context=ex.context, align_to_words=False
    )
    many = qa(question=[ex.question] * 2, context=[ex.context] * 2, top_k=3)
    assert many == [out, out]


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((), {}),
        ((), {"question": "who?"}),
        ((), {"context": "a context."}),
        (("a bare string",), {}),
        (({"question": "who?"},), {}),
        (([{"question": "who?", "context": "a context."}, "oops"],), {}),
        (({"question": "who?", "context": "a context."},), {"question": "who?"}),
        ((), {"question": "", "context": "a context."}),
        ((), {"question": "who?", "context": "   "}),
        ((), {"question": "who\ud800?", "context": "a context."}),  # a lone surrogate: no tokenizer takes it
        ((), {"question": ["who?", "what?"], "context": ["one.", "two.", "three."]}),
    ],
)
def test_bad_input_raises_qa_error(qa, args, kwargs):
    with pytest.raises(QAError):
        qa(*args, **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"top_k": 0},
        {"top_k": "3"},
        {"doc_stride": 0},
        {"max_seq_len": 8},
        {"max_answer_len": -1},
        {"beam_size": 3},
    ],
)
def test_bad_or_unknown_arguments_raise_qa_error(qa, kwargs):
    with pytest.raises(QAError):
        qa(question="who?", context="the king of rome.", **kwargs)


# --- invariance ---------------------------------------------------------------------------------------


def test_batch_size_does_not_change_answers(qa, examples):
    qs, cs = [e.question for e in examples], [e.context for e in examples]
    settings = {"max_seq_len": 64, "doc_stride": 16, "max_question_len": 16}
    one = qa(question=qs, context=cs, batch_size=1, top_k=2, **settings)
    big = qa(question=qs, context=cs, batch_size=64, top_k=2, max_padding=1.0, **settings)
    split = qa(question=qs, context=cs, batch_size=64, top_k=2, max_padding=0.0, **settings)
    for a, b, c in zip(one, big, split):
        assert [_span(x) for x in a] == [_span(x) for x in b] == [_span(x) for x in c]
        np.testing.assert_allclose([x["score"] for x in a], [x["score"] for x in b], rtol=1e-4)
        np.testing.assert_allclose([x["score"] for x in a], [x["score"] for x in c], rtol=1e-4)


def test_answers_do_not_depend_on_the_other_questions(qa, examples):
    qs, cs = [e.question for e in examples], [e.context for e in examples]
    settings = {"max_seq_len": 64, "doc_stride": 16, "max_question_len": 16, "batch_size": 4}
    together = qa(question=qs, context=cs, **settings)
    reversed_ = qa(question=qs[::-1], context=cs[::-1], **settings)[::-1]
    alone = [qa(question=q, context=c, **settings) for q, c in zip(qs, cs)]
    assert [_span(a) for a in together] == [_span(a) for a in alone] == [_span(a) for a in reversed_]
    np.testing.assert_allclose([a["score"] for a in together], [a["score"] for a in alone], rtol=1e-4)


# --- parity with the stock pipeline -------------------------------------------------------------------


def _whole_word_vocab(tok) -> list[str]:
    """Vocabulary entries that are whole words (each tokenizes to exactly itself)."""
    words = [
        w for w in tok.get_vocab() if len(w) > 1 and (w.isalpha() or w.isdigit()) and not w.startswith("##")
    ]
    return sorted(w for w in words if tok.tokenize(w) == [w])


def _agreement(ours: list[dict], stock: list[dict]) -> float:
    return float(np.mean([_span(a) == _span(b) for a, b in zip(ours, stock)]))


@pytest.fixture
def stock(tiny_model, tiny_tokenizer):
    return transformers.pipeline("question-answering", model=tiny_model, tokenizer=tiny_tokenizer)


@pytest.fixture
def custom(stock):
    # The very same model object as the stock pipeline: same logits. No qa_config: "pipeline" mode.
    return transformers.pipeline("custom-qa", model=stock.model, tokenizer=stock.tokenizer)


@pytest.fixture
def custom_squad(stock):
    """The same model in "squad" mode (what a model trained here saves), with the stock max_answer_len."""
    return transformers.pipeline(
        "custom-qa", model=stock.model, tokenizer=stock.tokenizer, qa_config=PARITY_CONFIG
    )


def _same_scores_where_same_span(ours: list[dict], stock: list[dict]) -> int:
    """Both modes report the stock score: where the span agrees, so must the score. Returns the count."""
    same = [(a, b) for a, b in zip(ours, stock) if _span(a) == _span(b)]
    for a, b in same:
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)
    return len(same)


def test_single_window_parity_with_stock_pipeline(
    custom, custom_squad, stock, tiny_tokenizer, record_property
):
    # Contexts of distinct whole-vocabulary words: every word is one token, so aligning to words changes
    # nothing and the stock pipeline has no same-text token spans to add up (see the next test).
    rng = random.Random(0)
    words = _whole_word_vocab(tiny_tokenizer)
    assert len(words) > 100
    qs, cs = [], []
    for _ in range(120):
        cs.append(" ".join(rng.sample(words, rng.randint(8, 45))) + rng.choice([".", "!", ""]))
        qs.append(" ".join(rng.sample(words, rng.randint(2, 8))) + "?")
    features = prepare_features(tiny_tokenizer, qs, cs, PARITY_CONFIG)
    assert len(features) == len(qs)  # single-window only
    ours, theirs = custom(question=qs, context=cs, **PARITY), stock(question=qs, context=cs, **PARITY)
    assert _agreement(ours, theirs) == 1.0 and _same_scores_where_same_span(ours, theirs) == len(qs)
    # "squad" mode ranks by start + end logits: in one window that is the stock ranking, same score too.
    squad = custom_squad(question=qs, context=cs, **PARITY)
    agree = _agreement(squad, theirs)
    record_property("stock_parity_single_window_whole_words_squad_mode", agree)
    print(f"squad mode vs stock, single window, whole-word contexts: {agree:.1%} of {len(qs)}")
    assert agree >= 0.99 and _same_scores_where_same_span(squad, theirs) >= 0.99 * len(qs)


def test_single_window_parity_on_subword_contexts(
    custom, custom_squad, stock, tiny_tokenizer, qa_factory, record_property
):
    # Pseudo-words split into several subwords. "pipeline" mode: the stock answers, word alignment and
    # its summing of same-text spans included. "squad" mode: without word alignment the same best token
    # span; with it the stock sum of same-text spans can promote another span: measured, not asserted.
    exs = [
        qa_factory.example(qa_factory.rng.choice(["en", "ko"]), n_sentences=qa_factory.rng.randint(1, 2))
        for _ in range(100)
    ]
    qs, cs = [e.question for e in exs], [e.context for e in exs]
    assert len(prepare_features(tiny_tokenizer, qs, cs, PARITY_CONFIG)) == len(qs)
    figures = {}
    for align in (False, True):
        ours = custom(question=qs, context=cs, align_to_words=align, **PARITY)
        theirs = stock(question=qs, context=cs, align_to_words=align, **PARITY)
        assert _agreement(ours, theirs) == 1.0 and _same_scores_where_same_span(ours, theirs) == len(qs)
        squad = custom_squad(question=qs, context=cs, align_to_words=align, **PARITY)
        figures[align] = _agreement(squad, theirs)
        record_property(f"stock_parity_single_window_subwords_align_{align}_squad_mode", figures[align])
        print(f"squad mode vs stock, single window, subwords, align_to_words={align}: {figures[align]:.1%}")
    assert figures[False] >= 0.99


def test_multi_window_agreement_with_stock_is_measured(
    custom, custom_squad, stock, tiny_tokenizer, qa_factory, record_property
):
    # Across windows "squad" mode compares start+end logits (SQuAD reference), the stock pipeline
    # per-window probabilities: no threshold, but the figure is recorded. "pipeline" mode: identical.
    exs = [qa_factory.example(qa_factory.rng.choice(["en", "ko"]), n_sentences=12) for _ in range(30)]
    qs, cs = [e.question for e in exs], [e.context for e in exs]
    n_windows = np.bincount(prepare_features(tiny_tokenizer, qs, cs, PARITY_CONFIG).example_index)
    assert np.all(n_windows > 1)
    for align in (False, True):
        theirs = stock(question=qs, context=cs, align_to_words=align, **PARITY)
        exact = custom(question=qs, context=cs, align_to_words=align, **PARITY)
        assert _agreement(exact, theirs) == 1.0 and _same_scores_where_same_span(exact, theirs) == len(qs)
        ours = custom_squad(question=qs, context=cs, align_to_words=align, **PARITY)
        agree = _agreement(ours, theirs)
        record_property(f"stock_parity_multi_window_align_{align}_squad_mode", agree)
        print(f"stock agreement, {n_windows.mean():.1f} windows/example, align_to_words={align}: {agree:.1%}")
        assert all(a["answer"] == c[a["start"] : a["end"]] for a, c in zip(ours, cs))


# --- loading from a folder ----------------------------------------------------------------------------


SAVED = QAConfig(
    max_length=96, doc_stride=24, max_question_len=24, max_answer_len=2, n_best_size=5, batch_size=4
)


@pytest.fixture
def model_dir(tmp_path, tiny_model, tiny_tokenizer):
    path = tmp_path / "model"
    tiny_model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def test_pipeline_from_saved_folder_reads_qa_config(model_dir, tiny_model, tiny_tokenizer, examples):
    SAVED.save(model_dir)
    qa = transformers.pipeline("custom-qa", model=str(model_dir))
    assert qa.qa_config == SAVED
    assert qa.tokenizer.is_fast and qa.tokenizer.tokenize("세종대왕은") == tiny_tokenizer.tokenize(
        "세종대왕은"
    )
    qs, cs = [e.question for e in examples], [e.context for e in examples]
    loaded = qa(question=qs, context=cs)
    in_memory = transformers.pipeline(
        "custom-qa", model=tiny_model, tokenizer=tiny_tokenizer, qa_config=SAVED
    )
    assert [_span(a) for a in loaded] == [_span(a) for a in in_memory(question=qs, context=cs)]
    # max_answer_len=2 from qa_config.json: at most two tokens, so at most two words.
    assert all(len(a["answer"].split()) <= 2 for a in loaded)
    # Call arguments still override the saved settings.
    longer = qa(question=qs, context=cs, max_answer_len=30, n_best_size=20)
    assert any(len(a["answer"].split()) > 2 for a in longer)


def test_pipeline_from_folder_without_qa_config_uses_defaults(model_dir):
    """A hub-style folder: the stock pipeline's mode and defaults (max_seq_len capped by the tokenizer)."""
    qa = transformers.pipeline("custom-qa", model=str(model_dir))
    assert qa.qa_config == QAConfig.stock(model_max_length=qa.tokenizer.model_max_length)
    assert qa.qa_config.span_scoring == "pipeline" and qa.qa_config.max_answer_len == 15
    assert (qa.qa_config.max_length, qa.qa_config.doc_stride, qa.qa_config.max_question_len) == (384, 128, 64)
    assert QAConfig.stock(model_max_length=128).doc_stride == 64


def test_saved_qa_config_without_span_scoring_is_squad(model_dir):
    """Every qa_config.json written before the setting existed came from our trainer: "squad"."""
    import json

    SAVED.save(model_dir)
    data = json.loads((model_dir / "qa_config.json").read_text())
    assert data.pop("span_scoring") == "squad"
    (model_dir / "qa_config.json").write_text(json.dumps(data))
    assert QAConfig.from_model_dir(model_dir).span_scoring == "squad"


def test_trainer_saves_squad_scoring():
    from qa_serving.training.trainer import TrainConfig

    cfg = TrainConfig(from_scratch="tiny", train_file="unused.json")
    assert cfg.qa_config().to_dict()["span_scoring"] == "squad"


def test_bf16_is_kept_not_cast_back(model_dir, tiny_model, tiny_tokenizer, examples):
    """`dtype=torch.bfloat16` (the stock way) runs bf16; a model already in bf16 stays bf16."""
    import torch

    qs, cs = [e.question for e in examples], [e.context for e in examples]
    fp32 = transformers.pipeline("custom-qa", model=str(model_dir))
    bf16 = transformers.pipeline("custom-qa", model=str(model_dir), dtype=torch.bfloat16)
    assert fp32.backend.dtype == "fp32" and bf16.backend.dtype == "bf16"
    assert next(bf16.backend.model.parameters()).dtype == torch.bfloat16
    spans32 = [_span(a) for a in fp32(question=qs, context=cs)]
    spans16 = [_span(a) for a in bf16(question=qs, context=cs)]
    assert len(spans16) == len(spans32)  # bf16 logits differ slightly; answers are not compared exactly
    import copy

    in_bf16 = copy.deepcopy(tiny_model).to(torch.bfloat16)
    cast = transformers.pipeline("custom-qa", model=in_bf16, tokenizer=tiny_tokenizer)
    assert cast.backend.dtype == "bf16"
    forced = transformers.pipeline("custom-qa", model=str(model_dir), precision="bf16")
    assert forced.backend.dtype == "bf16"


def test_pipeline_from_onnx_export_matches_torch(model_dir, tiny_model, tiny_tokenizer, examples, tmp_path):
    pytest.importorskip("optimum.onnxruntime")
    from optimum.exporters.onnx import main_export
    from optimum.onnxruntime import ORTModelForQuestionAnswering

    onnx_dir = tmp_path / "onnx"
    main_export(str(model_dir), output=onnx_dir, task="question-answering")
    assert any(onnx_dir.glob("*.onnx"))
    qs, cs = [e.question for e in examples], [e.context for e in examples]
    settings = {"max_seq_len": 64, "doc_stride": 16, "max_question_len": 16, "top_k": 2}
    torch_answers = transformers.pipeline("custom-qa", model=tiny_model, tokenizer=tiny_tokenizer)(
        question=qs, context=cs, **settings
    )
    from_path = transformers.pipeline("custom-qa", model=str(onnx_dir))
    from_model = transformers.pipeline(
        "custom-qa", model=ORTModelForQuestionAnswering.from_pretrained(onnx_dir), tokenizer=tiny_tokenizer
    )
    assert type(from_path.model).__name__ == "ORTModelForQuestionAnswering"
    for qa in (from_path, from_model):
        for ours, ref in zip(qa(question=qs, context=cs, **settings), torch_answers):
            assert [(_span(a), a["answer"]) for a in ours] == [(_span(a), a["answer"]) for a in ref]
            np.testing.assert_allclose([a["score"] for a in ours], [a["score"] for a in ref], rtol=1e-4)


def test_windows_longer_than_the_model_reads_are_a_clear_error(tiny_tokenizer):
    from transformers import BertForQuestionAnswering, RobertaConfig

    from qa_serving.core.backends import position_limit
    from qa_serving.training.scratch import scratch_config

    model = BertForQuestionAnswering(scratch_config(len(tiny_tokenizer), "tiny", max_position_embeddings=64)).eval()
    qa64 = transformers.pipeline("custom-qa", model=model, tokenizer=tiny_tokenizer)
    long = "the king of paris built the tower near the river. " * 20
    with pytest.raises(QAError, match="longer than the model's 64 positions: lower max_seq_len"):
        qa64(question="who built it?", context=long, max_seq_len=128)
    # A pair that fits the model reads as it is, whatever max_seq_len allows (the stock pipeline too).
    short = qa64(question="who built it?", context="the king built it.", max_seq_len=128)
    assert short["answer"] == "the king built it."[short["start"] : short["end"]]
    assert isinstance(qa64(question="who built it?", context=long, max_seq_len=64), dict)
    assert position_limit(model) == 64
    roberta = type("M", (), {"config": RobertaConfig(max_position_embeddings=514, pad_token_id=1)})()
    assert position_limit(roberta) == 512  # position ids start after the padding index
    pad0 = type("M", (), {"config": RobertaConfig(max_position_embeddings=514, pad_token_id=0)})()
    assert position_limit(pad0) == 513
    assert position_limit(object()) is None
