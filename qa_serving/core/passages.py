"""How well each of several passages matches the question: the term the span ranking adds per passage.

A reader trained on gold paragraphs only has never learnt to give low logits to a paragraph that does not
hold the answer, so start + end logits alone pick a wrong passage too often (measured in
``bench/calibration.py``). As in retriever-reader systems (BERTserini: reader score + weighted retriever
score), each span's ranking score gets ``passage_match_weight x match(passage)``, where ``match`` is the
IDF-weighted share of the question's words found in the passage, IDF taken over the question's own
passages (so it needs no corpus, and one passage gets 0: single-passage answers are unchanged).

Deliberate simplifications: words are ``\\w+`` runs, lower-cased (no stemming or stop list: IDF over the
passages discounts words every passage has); Korean particles stay attached to their words.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

_WORD = re.compile(r"\w+")


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)}


def passage_match(question: str, passages: Sequence[str]) -> np.ndarray:
    """Per passage, the IDF-weighted share (0..1) of the question's words (those some passage has) it
    contains.

    Example: ``passage_match("built by whom", ["The bridge was built by Ada.", "Rain fell."])`` ->
    ``[1.0, 0.0]``: "built" and "by" are in one passage of two (each weighs log 1.5), "whom" in none.
    """
    asked = _words(question)
    docs = [_words(p) for p in passages]
    n = len(docs)
    df = {w: sum(w in d for d in docs) for w in asked}
    # Words no passage has say nothing about which passage to read.
    weight = {w: math.log((n + 1) / (1 + k)) for w, k in df.items() if k}
    total = sum(weight.values())
    if total <= 0:
        return np.zeros(n)
    return np.array([sum(v for w, v in weight.items() if w in d) / total for d in docs])
