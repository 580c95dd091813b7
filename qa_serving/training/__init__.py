"""Fine-tuning: the Trainer-based loop (``trainer``), the frozen-encoder head (``heads``), small models
from a config (``scratch``) and pretrained encoders that come from PyPI (``model_sources``)."""

from qa_serving.training.trainer import TrainConfig, train

__all__ = ["TrainConfig", "train"]
