"""The core path every door calls: examples -> windows -> batches -> logits -> answers.

``options`` (the one table of public options) and ``config`` (``QAConfig``, saved with a model) say how;
``windowing`` -> ``batching`` -> ``backends`` -> ``postprocess`` do it; ``answering.answer`` /
``answering.answer_stream`` is the one call that runs them in order. Nothing else orchestrates windows ->
logits -> answers.
"""
