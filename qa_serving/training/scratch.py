"""Models and tokenizers built locally, for the offline path (no hub): a WordPiece tokenizer trained on
the training texts and a small BERT from a config.

Used by ``qa-serving train --from-scratch`` (synthetic data, KorQuAD without a Korean encoder) and by
the tests' tiny models.
"""

from __future__ import annotations

from collections.abc import Iterable

from transformers import BertConfig, BertForQuestionAnswering, BertTokenizerFast

from qa_serving.errors import QAError

SIZES = {
    # name: (hidden, layers, heads, intermediate)
    "tiny": (32, 2, 2, 64),
    "small": (128, 3, 4, 512),
    "medium": (256, 4, 4, 1024),
}


def mostly_hangul(texts: Iterable[str], sample_chars: int = 200_000) -> bool:
    """True when at least 30% of the letters in (a sample of) ``texts`` are Hangul syllables."""
    hangul = letters = 0
    for text in texts:
        for ch in text:
            if ch.isalpha():
                letters += 1
                hangul += "\uac00" <= ch <= "\ud7a3"
        if letters >= sample_chars:
            break
    return letters > 0 and hangul / letters >= 0.3


def train_wordpiece_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 8000,
    lowercase: bool = True,
    model_max_length: int = 512,
    hangul_syllables: bool | None = None,
) -> BertTokenizerFast:
    """A BERT-style WordPiece tokenizer learned from ``texts``.

    ``hangul_syllables`` (auto-detected when ``None``) makes every Hangul syllable its own token:
    WordPiece learned on Korean text glues particles and endings to stems (``##베에서``), so an answer
    that stops before its particle ends inside a token and cannot be predicted as a span.
    Example: ``train_wordpiece_tokenizer(["the cat sat"], vocab_size=100)("cat")["input_ids"]`` -> ``[2, ..., 3]``.
    """
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    texts = list(texts)
    if hangul_syllables is None:
        hangul_syllables = mostly_hangul(texts)
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    # strip_accents=False keeps Hangul syllables whole (NFD would split them into jamo).
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=False, clean_text=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    if hangul_syllables:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.BertPreTokenizer(), pre_tokenizers.Split(Regex("[\uac00-\ud7a3]"), behavior="isolated")]
        )
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special, min_frequency=1)
    tok.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return BertTokenizerFast(
        tokenizer_object=tok,
        do_lower_case=lowercase,
        # Without this, BertTokenizerFast rebuilds the normalizer with strip_accents=None, which strips
        # accents whenever it lowercases: Hangul is decomposed into jamo and every Korean word is [UNK].
        strip_accents=False,
        model_max_length=model_max_length,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
    )


def scratch_config(vocab_size: int, size: str = "small", max_position_embeddings: int = 512) -> BertConfig:
    """A BERT config of one of :data:`SIZES` (an unknown size is a QAError naming them, not a KeyError)."""
    if size not in SIZES:
        raise QAError(f"scratch model size must be one of {'|'.join(SIZES)}, got {size!r}")
    hidden, layers, heads, inter = SIZES[size]
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=inter,
        max_position_embeddings=max_position_embeddings,
        # Attention dropout costs more than the matmuls of a model this small on CPU, and synthetic
        # data has little noise to regularise against.
        attention_probs_dropout_prob=0.0,
    )


def scratch_model(tokenizer, size: str = "small", seed: int = 0) -> BertForQuestionAnswering:
    """A randomly initialised BERT span model sized for ``tokenizer``."""
    import torch

    torch.manual_seed(seed)
    config = scratch_config(len(tokenizer), size, max_position_embeddings=max(512, tokenizer.model_max_length))
    config.pad_token_id = tokenizer.pad_token_id
    return BertForQuestionAnswering(config)
