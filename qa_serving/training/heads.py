"""A span head over a frozen pretrained encoder (``qa-serving train --freeze-encoder``).

The encoder is any ``AutoModel`` architecture, so its pretrained weights load by their own class.
The notebook this project grew from loaded a DistilBERT checkpoint into a ``BertModel`` class: every
encoder weight was skipped with only a warning and it trained a head over a random, frozen encoder.
:meth:`FrozenEncoderForQuestionAnswering.from_encoder` therefore fails when encoder weights are
missing or unused. The model registers with the ``Auto`` classes, so a saved one loads back through
``AutoModelForQuestionAnswering`` (pipeline, evaluation, handler) like any other span model.
"""

from __future__ import annotations

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForQuestionAnswering,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import QuestionAnsweringModelOutput

from qa_serving.errors import QAError

MODEL_TYPE = "qa_serving_frozen_encoder"
# Weights an encoder checkpoint may carry or lack without it being the wrong checkpoint: task heads
# and the pooler, which span extraction does not use.
_IGNORABLE = ("pooler.", "qa_outputs.", "classifier.", "cls.", "lm_head.", "vocab_", "pre_classifier.")


class FrozenEncoderQAConfig(PretrainedConfig):
    model_type = MODEL_TYPE

    def __init__(self, encoder: dict | None = None, head_hidden_size: int = 256, head_dropout: float = 0.1,
                 freeze_encoder: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.encoder = encoder or {}
        self.head_hidden_size = head_hidden_size
        self.head_dropout = head_dropout
        self.freeze_encoder = freeze_encoder


def _encoder_config(config: FrozenEncoderQAConfig) -> PretrainedConfig:
    enc = dict(config.encoder)
    return AutoConfig.for_model(enc.pop("model_type"), **enc)


class FrozenEncoderForQuestionAnswering(PreTrainedModel):
    """Encoder (frozen by default) -> dropout -> Linear -> GELU -> Linear(2) start/end logits."""

    config_class = FrozenEncoderQAConfig
    base_model_prefix = "encoder"

    def __init__(self, config: FrozenEncoderQAConfig) -> None:
        super().__init__(config)
        from torch import nn

        self.encoder = AutoModel.from_config(_encoder_config(config))
        hidden = self.encoder.config.hidden_size
        self.head = nn.Sequential(
            nn.Dropout(config.head_dropout),
            nn.Linear(hidden, config.head_hidden_size),
            nn.GELU(),
            nn.Linear(config.head_hidden_size, 2),
        )
        self.post_init()
        self.set_encoder_trainable(not config.freeze_encoder)

    def _init_weights(self, module) -> None:
        from torch import nn

        # Only the head is ours to initialise; the encoder keeps its own (pretrained) weights.
        if isinstance(module, nn.Linear) and any(module is m for m in self.head):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    def set_encoder_trainable(self, trainable: bool) -> None:
        for p in self.encoder.parameters():
            p.requires_grad = trainable

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, start_positions=None,
                end_positions=None, **kwargs):
        import torch.nn.functional as F

        enc_kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and "token_type_ids" in _forward_args(self.encoder):
            enc_kwargs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**enc_kwargs).last_hidden_state
        logits = self.head(hidden)
        start_logits, end_logits = logits[..., 0].contiguous(), logits[..., 1].contiguous()
        loss = None
        if start_positions is not None and end_positions is not None:
            n = start_logits.size(1)
            loss = (F.cross_entropy(start_logits, start_positions.clamp(0, n - 1))
                    + F.cross_entropy(end_logits, end_positions.clamp(0, n - 1))) / 2
        return QuestionAnsweringModelOutput(loss=loss, start_logits=start_logits, end_logits=end_logits)

    @classmethod
    def from_encoder(cls, encoder_path: str, head_hidden_size: int = 256, freeze_encoder: bool = True):
        """A new head over the pretrained encoder at ``encoder_path``; fails on missing/unused weights."""
        encoder, info = AutoModel.from_pretrained(encoder_path, output_loading_info=True)
        bad_missing = [k for k in info["missing_keys"] if not k.startswith(_IGNORABLE)]
        bad_unused = [k for k in info["unexpected_keys"] if not k.startswith(_IGNORABLE)]
        if bad_missing or bad_unused:
            raise QAError(
                f"{encoder_path} does not match its {type(encoder).__name__} architecture: "
                f"{len(bad_missing)} encoder weights missing (e.g. {bad_missing[:3]}), "
                f"{len(bad_unused)} checkpoint weights unused (e.g. {bad_unused[:3]}); "
                "the head would train over a random encoder"
            )
        config = FrozenEncoderQAConfig(
            encoder=encoder.config.to_dict(), head_hidden_size=head_hidden_size, freeze_encoder=freeze_encoder
        )
        model = cls(config)
        model.encoder.load_state_dict(encoder.state_dict())
        return model


def _forward_args(module) -> set[str]:
    import inspect

    return set(inspect.signature(module.forward).parameters)


AutoConfig.register(MODEL_TYPE, FrozenEncoderQAConfig, exist_ok=True)
AutoModelForQuestionAnswering.register(FrozenEncoderQAConfig, FrozenEncoderForQuestionAnswering, exist_ok=True)
