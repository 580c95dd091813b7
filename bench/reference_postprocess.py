"""The SQuAD reference post-processing loop, the golden reference for ``qa_serving.core.postprocess``.

Hugging Face ``examples/pytorch/question-answering/utils_qa.py`` ``postprocess_qa_predictions``, for one
example, transcribed loop for loop (with its quirks: the ``"empty"`` placeholder, the null candidate
appended after the n-best cut). ``tests/test_postprocess.py`` checks our vectorized version against it;
``bench.postprocess_cost`` times both. Kept here, once, so the two cannot drift apart.
"""

from __future__ import annotations

import numpy as np


def reference_postprocess(
    windows: list[tuple[np.ndarray, np.ndarray, list]],
    context: str,
    n_best_size: int,
    max_answer_length: int,
    version_2_with_negative: bool,
    null_score_diff_threshold: float,
) -> tuple[str, list[dict], float | None]:
    """``utils_qa.postprocess_qa_predictions`` for one example, transcribed loop for loop.

    ``windows``: ``(start_logits, end_logits, offset_mapping)`` per feature, ``None`` offsets outside the
    context, CLS at index 0. Returns the prediction, the n-best list and the null score diff.
    """
    min_null_prediction = None
    prelim_predictions = []
    for start_logits, end_logits, offset_mapping in windows:
        feature_null_score = start_logits[0] + end_logits[0]
        if min_null_prediction is None or min_null_prediction["score"] > feature_null_score:
            min_null_prediction = {
                "offsets": (0, 0),
                "score": feature_null_score,
                "start_logit": start_logits[0],
                "end_logit": end_logits[0],
            }
        start_indexes = np.argsort(start_logits)[-1 : -n_best_size - 1 : -1].tolist()
        end_indexes = np.argsort(end_logits)[-1 : -n_best_size - 1 : -1].tolist()
        for start_index in start_indexes:
            for end_index in end_indexes:
                if (
                    start_index >= len(offset_mapping)
                    or end_index >= len(offset_mapping)
                    or offset_mapping[start_index] is None
                    or len(offset_mapping[start_index]) < 2
                    or offset_mapping[end_index] is None
                    or len(offset_mapping[end_index]) < 2
                ):
                    continue
                if end_index < start_index or end_index - start_index + 1 > max_answer_length:
                    continue
                prelim_predictions.append(
                    {
                        "offsets": (offset_mapping[start_index][0], offset_mapping[end_index][1]),
                        "score": start_logits[start_index] + end_logits[end_index],
                        "start_logit": start_logits[start_index],
                        "end_logit": end_logits[end_index],
                    }
                )
    if version_2_with_negative and min_null_prediction is not None:
        prelim_predictions.append(min_null_prediction)
        null_score = min_null_prediction["score"]
    predictions = sorted(prelim_predictions, key=lambda x: x["score"], reverse=True)[:n_best_size]
    if (
        version_2_with_negative
        and min_null_prediction is not None
        and not any(p["offsets"] == (0, 0) for p in predictions)
    ):
        predictions.append(min_null_prediction)
    for pred in predictions:
        offsets = pred["offsets"]
        pred["text"] = context[offsets[0] : offsets[1]]
    if len(predictions) == 0 or (len(predictions) == 1 and predictions[0]["text"] == ""):
        predictions.insert(0, {"text": "empty", "start_logit": 0.0, "end_logit": 0.0, "score": 0.0})
    scores = np.array([pred["score"] for pred in predictions])
    exp_scores = np.exp(scores - np.max(scores))
    probs = exp_scores / exp_scores.sum()
    for prob, pred in zip(probs, predictions):
        pred["probability"] = prob
    if not version_2_with_negative:
        return predictions[0]["text"], predictions, None
    i = 0
    while predictions[i]["text"] == "":
        i += 1
    best_non_null_pred = predictions[i]
    score_diff = null_score - best_non_null_pred["start_logit"] - best_non_null_pred["end_logit"]
    answer = "" if score_diff > null_score_diff_threshold else best_non_null_pred["text"]
    return answer, predictions, float(score_diff)
