"""qa-serving: extractive question answering with one path for training, evaluation and serving.

Importing the package registers the ``"custom-qa"`` pipeline and the frozen-encoder head with
``transformers``. Data flows one way: examples -> :mod:`windowing` -> :mod:`batching` ->
:mod:`backends` -> :mod:`postprocess` -> :mod:`metrics`.
"""

from __future__ import annotations

from qa_serving.training import heads as heads  # registers the frozen-encoder model type
from qa_serving.core.backends import load_backend, load_model, make_backend
from qa_serving.core.config import QAConfig
from qa_serving.errors import QAError
from qa_serving.core.answering import answer
from qa_serving.pipeline import CustomQAPipeline
from qa_serving.core.postprocess import Prediction, postprocess, postprocess_example
from qa_serving.core.windowing import Features, prepare_features

__version__ = "0.1.0"

__all__ = [
    "CustomQAPipeline",
    "Features",
    "Prediction",
    "QAConfig",
    "QAError",
    "answer",
    "load_backend",
    "load_model",
    "make_backend",
    "postprocess",
    "postprocess_example",
    "prepare_features",
]
