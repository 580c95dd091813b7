"""qa-serving: extractive question answering with one path for training, evaluation and serving.

Importing the package registers the ``"custom-qa"`` pipeline and the frozen-encoder head with
``transformers``. Data flows one way, through the one core call (:func:`answer`): examples ->
``core.windowing`` -> ``core.batching`` -> ``core.backends`` -> ``core.postprocess`` -> answers; scores in
``data.metrics``. Options: ``core.options`` (one table for every door).
"""

from __future__ import annotations

from qa_serving.core.answering import Example, answer, answer_stream
from qa_serving.core.backends import load_backend, load_model, make_backend
from qa_serving.core.config import QAConfig
from qa_serving.core.postprocess import Prediction, postprocess, postprocess_example
from qa_serving.core.windowing import Features, prepare_features
from qa_serving.errors import QAError
from qa_serving.pipeline import CustomQAPipeline
from qa_serving.training import heads as heads  # registers the frozen-encoder model type

__version__ = "0.1.0"

__all__ = [
    "CustomQAPipeline",
    "Example",
    "Features",
    "Prediction",
    "QAConfig",
    "QAError",
    "answer",
    "answer_stream",
    "load_backend",
    "load_model",
    "make_backend",
    "postprocess",
    "postprocess_example",
    "prepare_features",
]
