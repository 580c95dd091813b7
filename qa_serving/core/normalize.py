"""The official SQuAD answer normalization: what exact match compares. A leaf module, so the core (the
calibrator's answer agreement) and the metrics (:mod:`qa_serving.data.metrics`) share one implementation
without the core importing the data package (and ``datasets`` with it)."""

from __future__ import annotations

import re
import string

# str.translate deletes exactly the characters the scripts' ``ch not in set(string.punctuation)`` drops.
DROP_PUNCT = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(s: str) -> str:
    """Lower-case, drop ASCII punctuation, the words a/an/the and extra whitespace.

    >>> normalize_answer("The  Eiffel-Tower!")
    'eiffeltower'
    """
    return " ".join(_ARTICLES.sub(" ", s.lower().translate(DROP_PUNCT)).split())
