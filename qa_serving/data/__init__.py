"""Examples in, scores out: loaders (SQuAD/KorQuAD JSON, flat JSON(L)/CSV, hub datasets), synthetic data,
the official SQuAD/KorQuAD metrics and ``evaluate`` (the core call + metrics)."""

from qa_serving.data.loading import load_examples, save_squad_json, split_by_article

__all__ = ["load_examples", "save_squad_json", "split_by_article"]
