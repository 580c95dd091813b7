"""Shared fixtures: tiny offline models and tokenizers, and the real data in ../shared when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_root() -> Path:
    """``$QA_SHARED_DIR`` or ``../shared`` beside the project root."""
    return Path(os.environ.get("QA_SHARED_DIR", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The provided real data folder; tests using it skip cleanly when it is absent."""
    root = shared_root()
    if not (root / "data").is_dir():
        pytest.skip(f"real data not found at {root} (set QA_SHARED_DIR)")
    return root


# --- tiny offline tokenizer and model -----------------------------------------------------------------

import copy
import random
import string
from dataclasses import dataclass

_EN_TEXT = (
    "the a an of in on at by to from with for and or but is was were are has had have its their his her "
    "city river king queen tower bridge museum painting book year people capital country university war "
    "empire church school mountain island ocean language music festival team player league station "
    "built wrote painted founded opened crossed ruled visited moved named called won lost located "
    "old new large small famous northern southern ancient modern first last second national royal "
    "london paris seoul busan rome berlin tokyo shakespeare hamlet napoleon newton darwin mozart "
    "thousand hundred million people army fleet harbour castle garden library theatre temple palace"
)
EN_WORDS = _EN_TEXT.split()
_KO_TEXT = (
    "서울은 서울의 한국의 수도이다 세종대왕은 한글을 창제하였다 부산은 항구 도시이다 김치는 전통 음식이다 "
    "한강은 서울을 흐른다 경복궁은 조선 시대에 지어졌다 이순신 장군은 거북선을 만들었다 대한민국 정부는 "
    "학교에서 학생들이 공부한다 도서관에 책이 많다 제주도는 섬이다 한라산은 높은 산이다 축구 경기가 열렸다 "
    "고려는 왕건이 세웠다 백제의 문화는 찬란하였다 신라는 삼국을 통일하였다 년에 월에 처음으로 가장 유명한"
)
KO_WORDS = _KO_TEXT.split()
KO_SYLLABLES = (
    "가나다라마바사아자차카타파하고노도로모보소오조초코토포호구누두루무부수우주추쿠투푸후기니디리미비시이지"
)
PSEUDO_CONSONANTS = "bcdfghjklmnprstvzqx"
PSEUDO_VOWELS = "aeiouy"


def _pseudo_word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(PSEUDO_CONSONANTS) + rng.choice(PSEUDO_VOWELS) for _ in range(syllables))


def _ko_pseudo_word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(KO_SYLLABLES) for _ in range(syllables))


def tiny_corpus(seed: int = 0, n: int = 300) -> list[str]:
    """A few hundred English and Korean sentences (real words, pseudo-words, numbers, punctuation)."""
    rng = random.Random(seed)
    texts = [string.ascii_letters + string.digits + string.punctuation, KO_SYLLABLES]
    for _ in range(n):
        en = [
            rng.choice(EN_WORDS) if rng.random() < 0.7 else _pseudo_word(rng, rng.randint(1, 4))
            for _ in range(12)
        ]
        en.insert(rng.randint(0, len(en)), str(rng.randint(1, 2024)))
        texts.append(" ".join(en) + rng.choice(".?!,"))
        ko = [
            rng.choice(KO_WORDS) if rng.random() < 0.7 else _ko_pseudo_word(rng, rng.randint(1, 3))
            for _ in range(8)
        ]
        texts.append(" ".join(ko) + ".")
    return texts


@dataclass
class QAExample:
    question: str
    context: str
    answer: str
    answer_start: int

    @property
    def answers(self) -> dict:
        """SQuAD-style answers dict, as :func:`qa_serving.core.windowing.prepare_features` takes it."""
        return {"text": [self.answer], "answer_start": [self.answer_start]}


class QAFactory:
    """Random (question, context, word-aligned answer) examples in English or Korean.

    Example: ``QAFactory(0).example("en", n_sentences=3)`` -> a 3-sentence context whose answer is 1-3
    whole words of one sentence, at a known character offset.
    """

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)

    def word(self, lang: str) -> str:
        rng = self.rng
        if lang == "ko":
            return rng.choice(KO_WORDS) if rng.random() < 0.8 else _ko_pseudo_word(rng, rng.randint(1, 3))
        if rng.random() < 0.1:
            return str(rng.randint(1, 9999))
        word = rng.choice(EN_WORDS) if rng.random() < 0.7 else _pseudo_word(rng, rng.randint(1, 5))
        return word.capitalize() if rng.random() < 0.2 else word

    def sentence(self, lang: str, n_words: int | None = None) -> list[str]:
        return [self.word(lang) for _ in range(n_words or self.rng.randint(5, 14))]

    def question(self, lang: str, n_words: int | None = None) -> str:
        return " ".join(self.sentence(lang, n_words or self.rng.randint(2, 8))) + "?"

    def example(self, lang: str = "en", n_sentences: int = 3, answer_words: int | None = None) -> QAExample:
        rng = self.rng
        sentences = [self.sentence(lang) for _ in range(n_sentences)]
        k = rng.randrange(n_sentences)
        n = min(answer_words or rng.randint(1, 3), len(sentences[k]))
        first = rng.randint(0, len(sentences[k]) - n)
        context, start = "", -1
        for i, words in enumerate(sentences):
            if i:
                context += rng.choice([" ", "  ", "\n", " \t "])
            if i == k:
                start = len(context) + len(" ".join(words[:first])) + (1 if first else 0)
            context += " ".join(words) + rng.choice(".!;")
        answer = " ".join(sentences[k][first : first + n])
        assert context[start : start + len(answer)] == answer
        return QAExample(self.question(lang), context, answer, start)


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return tiny_corpus()


@pytest.fixture(scope="session")
def tiny_tokenizer(corpus):
    """A WordPiece tokenizer (right padding, question first) trained on the tiny corpus."""
    from qa_serving.training.scratch import train_wordpiece_tokenizer

    return train_wordpiece_tokenizer(corpus, vocab_size=1000)


@pytest.fixture(scope="session")
def tiny_tokenizer_left(tiny_tokenizer):
    """The same tokenizer with ``padding_side="left"`` (windowing puts the context first)."""
    tok = copy.deepcopy(tiny_tokenizer)
    tok.padding_side = "left"
    return tok


@pytest.fixture(scope="session")
def _tiny_model_session(tiny_tokenizer):
    from qa_serving.training.scratch import scratch_model

    return scratch_model(tiny_tokenizer, "tiny", seed=0).eval()


@pytest.fixture
def tiny_model(_tiny_model_session):
    """A randomly initialised tiny BERT span model (seeded); a fresh deep copy per test."""
    return copy.deepcopy(_tiny_model_session)


@pytest.fixture
def qa_factory() -> QAFactory:
    """Random word-aligned QA examples (seeded per test)."""
    return QAFactory(seed=1234)


@pytest.fixture(scope="module")
def torch_one_thread():
    """Run torch on one thread for the module: tiny models are per-call overhead, and on a busy 2-core
    machine a second intra-op thread makes each forward pass ~10x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- served-model helpers (handler, server, scale-out tests) -----------------------------------------


def save_tiny_span_model(path: Path, texts: list[str], head_scale: float = 50.0) -> Path:
    """A tiny random span model + tokenizer (trained on ``texts``) + qa_config.json with small windows, so
    long contexts split. The span head is scaled up: logits spread apart, answers do not hinge on float
    noise between differently padded batches, and comparisons with the pipeline can be exact."""
    import torch

    from qa_serving.core.config import QAConfig
    from qa_serving.training.scratch import scratch_model, train_wordpiece_tokenizer

    tokenizer = train_wordpiece_tokenizer(texts * 5, vocab_size=300)
    model = scratch_model(tokenizer, "tiny", seed=0)
    with torch.no_grad():
        model.qa_outputs.weight.mul_(head_scale)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    QAConfig(max_length=64, doc_stride=16, max_question_len=16, batch_size=4).save(path)
    return path


# --- export helpers (ONNX and OpenVINO export tests) --------------------------------------------------

#: Short windows, so the generated examples split into several each (the export tests' settings).
EXPORT_QA_CONFIG_FIELDS = {"max_length": 64, "doc_stride": 24, "max_question_len": 20, "batch_size": 16}


def save_exportable_model(path: Path) -> Path:
    """A random tiny BERT span model + WordPiece tokenizer trained on generated SQuAD text + qa_config.json
    (:data:`EXPORT_QA_CONFIG_FIELDS`): what the ONNX and OpenVINO export tests convert."""
    from qa_serving.core.config import QAConfig
    from qa_serving.data.synthetic import generate_squad
    from qa_serving.training.scratch import scratch_model, train_wordpiece_tokenizer

    paragraphs = [p for article in generate_squad(20, seed=3)["data"] for p in article["paragraphs"]]
    texts = [p["context"] for p in paragraphs] + [qa["question"] for p in paragraphs for qa in p["qas"]]
    tokenizer = train_wordpiece_tokenizer(texts, vocab_size=400)
    scratch_model(tokenizer, "tiny", seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    QAConfig(**EXPORT_QA_CONFIG_FIELDS).save(path)
    return path


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """:func:`save_exportable_model` in a temp folder (a test module may define its own instead)."""
    return save_exportable_model(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def eval_file(tmp_path_factory) -> Path:
    """A generated 4-article SQuAD v1.1 file for parity checks (a test module may define its own)."""
    from qa_serving.data.synthetic import write_squad

    return write_squad(tmp_path_factory.mktemp("data") / "dev.json", n_articles=4, seed=11)


def assert_same_answers(got, want) -> None:
    """Same spans and texts as the reference (a dict, or lists of them); scores equal up to float noise."""
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want)
        for g, w in zip(got, want):
            assert_same_answers(g, w)
        return
    assert {k: got[k] for k in ("answer", "start", "end")} == {k: want[k] for k in ("answer", "start", "end")}
    assert got["score"] == pytest.approx(want["score"], rel=1e-4, abs=1e-6)


def send_json(handler, status: int, obj, headers: dict[str, str] | None = None) -> None:
    """Answer an ``http.server`` request with a JSON body (the fake upstreams of the gateway tests)."""
    import json

    body = json.dumps(obj).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
