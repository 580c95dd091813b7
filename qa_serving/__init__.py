"""qa-serving: extractive question answering with one path for training, evaluation and serving.

Importing the package registers the ``"custom-qa"`` pipeline and the frozen-encoder head with
``transformers``. Data flows one way: examples -> :mod:`windowing` -> :mod:`batching` ->
:mod:`backends` -> :mod:`postprocess` -> :mod:`metrics`.
"""

from __future__ import annotations

from . import heads as heads  # registers the frozen-encoder model type
from .backends import load_backend, load_model, make_backend
from .config import QAConfig
from .errors import QAError
from .inference import answer
from .pipeline import CustomQAPipeline
from .postprocess import Prediction, postprocess, postprocess_example
from .windowing import Features, prepare_features

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
