"""Parity with the official evaluation scripts in ../shared/eval on a few thousand real dev questions.

Predictions are built deterministically from the gold answers and mix every kind of answer a model gives:
exact, re-cased / re-punctuated, partial, too long, wrong span, empty, answers that normalize to nothing,
missing ids and ids that are not in the data. The official script runs as a subprocess on the same
files, and every figure it reports must equal ours to 1e-9.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from qa_serving.data.metrics import korquad_v1, squad_v1, squad_v2

pytestmark = pytest.mark.shared

TOL = 1e-9
V1_DATA = "squad-v1.1-dev.part-a.json"
V2_DATA = "squad-v2.0-dev.part-a.json"
KORQUAD_DATA = "korquad-v1.0-dev.part-a.json"


# --- data and predictions -----------------------------------------------------------------------------


def _questions(data_file: Path) -> list[tuple[dict[str, Any], str]]:
    """Every (qa, context) of an official nested JSON file, in file order."""
    with open(data_file, encoding="utf-8") as f:
        data = json.load(f)["data"]
    return [(qa, p["context"]) for article in data for p in article["paragraphs"] for qa in p["qas"]]


def _references(questions: list[tuple[dict[str, Any], str]]) -> dict[str, list[str]]:
    return {qa["id"]: [a["text"] for a in qa["answers"]] for qa, _ in questions}


def _variant(rng: random.Random, gold: str, context: str, korean: bool) -> tuple[str, str]:
    """One prediction for a question whose gold is ``gold``, and the name of its kind."""
    kind = rng.choice(["exact", "styled", "partial", "superset", "wrong", "empty", "null_like"])
    words = gold.split()
    if kind == "exact":
        return kind, gold
    if kind == "styled":  # right answer, different case / punctuation / brackets / articles
        wraps = ["{}", "{}.", "The {}!", '"{}"', "({})", "  {}  ", "《{}》", "\u2018{}\u2019", "〈{}〉,"]
        text = rng.choice(wraps).format(gold)
        return kind, rng.choice([text, text.upper(), text.lower(), text.title()])
    if kind == "partial":
        if len(words) > 1:
            i = rng.randrange(len(words))
            return kind, " ".join(words[i : rng.randint(i + 1, len(words))])
        if len(gold) > 1:  # one word: a character substring (partial credit for KorQuAD's char F1)
            i = rng.randrange(len(gold) - 1)
            return kind, gold[i : rng.randint(i + 1, len(gold) - 1)]
        return kind, gold
    if kind == "superset":  # the gold plus context words around it
        start = max(context.find(gold), 0)
        before = context[:start].split()[-rng.randint(0, 3) :] if start else []
        after = context[start + len(gold) :].split()[: rng.randint(1, 4)]
        return kind, " ".join([*before, gold, *after])
    if kind == "wrong":  # a span from elsewhere in the context
        ctx = context.split()
        i = rng.randrange(len(ctx))
        return kind, " ".join(ctx[i : i + rng.randint(1, 6)])
    if kind == "empty":
        return kind, ""
    # strings that normalize to "" (SQuAD) or nearly so (KorQuAD keeps articles)
    return kind, rng.choice(["the", "A", ".", " ", "an.", "()", "《》" if korean else "The."])


def _predictions_v1(
    questions: list[tuple[dict[str, Any], str]], seed: int, korean: bool = False
) -> tuple[dict[str, str], Counter[str]]:
    """SQuAD v1.1 / KorQuAD predictions: every kind above, ~8% missing ids and a few unknown ids."""
    rng = random.Random(seed)
    preds: dict[str, str] = {}
    kinds: Counter[str] = Counter()
    for qa, context in questions:
        if rng.random() < 0.08:
            kinds["missing"] += 1
            continue
        gold = rng.choice(qa["answers"])["text"]
        kind, preds[qa["id"]] = _variant(rng, gold, context, korean)
        kinds[kind] += 1
    for i in range(5):
        preds[f"not-a-question-{i}"] = "anything"
    return preds, kinds


def _predictions_v2(
    questions: list[tuple[dict[str, Any], str]], seed: int
) -> tuple[dict[str, str], dict[str, float], Counter[str]]:
    """SQuAD v2.0 predictions for every question, plus na_probs with many ties.

    Unanswerable questions get "" (right), their plausible answer or a context span (wrong), or "the".
    na_probs lean high for unanswerable questions (a half-decent model), so the best threshold lands inside
    (0, 1), and are rounded to two decimals, so the sweep meets many ties.
    """
    rng = random.Random(seed)
    preds: dict[str, str] = {}
    kinds: Counter[str] = Counter()
    for qa, context in questions:
        if qa["answers"]:
            gold = rng.choice(qa["answers"])["text"]
            kind, pred = _variant(rng, gold, context, korean=False)
        else:
            plausible = [a["text"] for a in qa.get("plausible_answers", [])] or [context.split()[0]]
            kind = rng.choice(["null", "null", "plausible", "wrong", "null_like"])
            pred = {
                "null": "",
                "plausible": rng.choice(plausible),
                "wrong": _variant(rng, "x", context, korean=False)[1],
                "null_like": "the",
            }[kind]
            kind = f"noans_{kind}"
        preds[qa["id"]] = pred
        kinds[kind] += 1
    unanswerable = {qa["id"] for qa, _ in questions if not qa["answers"]}
    na_probs = {
        qid: round(min(max(rng.gauss(0.75 if qid in unanswerable else 0.3, 0.25), 0.0), 1.0), 2)
        for qid in preds
    }
    for i in range(5):
        preds[f"not-a-question-{i}"] = "anything"
        na_probs[f"not-a-question-{i}"] = rng.random()
    return preds, na_probs, kinds


# --- running the official scripts ---------------------------------------------------------------------


def _script(shared_dir: Path, name: str) -> Path:
    path = shared_dir / "eval" / name
    if not path.is_file():
        pytest.skip(f"official script {path} not found")
    return path


def _data(shared_dir: Path, name: str) -> Path:
    path = shared_dir / "data" / name
    if not path.is_file():
        pytest.skip(f"data file {path} not found")
    return path


def _run(script: Path, *args: Path | str) -> subprocess.CompletedProcess[str]:
    # The scripts open files with the locale encoding; KorQuAD needs UTF-8 whatever the locale is.
    env = {**os.environ, "PYTHONUTF8": "1", "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _dump(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def _assert_same(ours: dict[str, Any], official: dict[str, Any]) -> None:
    for key, theirs in official.items():
        assert key in ours, f"official figure {key!r} missing from ours"
        assert abs(ours[key] - theirs) <= TOL, f"{key}: ours {ours[key]!r} != official {theirs!r}"


def _assert_nontrivial(out: dict[str, Any], em: str, f1: str) -> None:
    """Guard against a vacuous test: the mix must give partial credit, not all-or-nothing."""
    assert 10.0 < out[em] < 90.0
    assert out[f1] > out[em] + 1.0


# --- tests --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data_name", "script_name", "ours_fn", "korean"),
    [
        (V1_DATA, "evaluate-v1.1.py", squad_v1, False),
        (KORQUAD_DATA, "evaluate-korquad-v1.0.py", korquad_v1, True),
    ],
    ids=["squad-v1.1", "korquad-v1.0"],
)
def test_v1_style_matches_official(
    shared_dir: Path, tmp_path: Path, data_name: str, script_name: str, ours_fn: Any, korean: bool
) -> None:
    data_file, script = _data(shared_dir, data_name), _script(shared_dir, script_name)
    questions = _questions(data_file)
    assert len(questions) > 3000
    preds, kinds = _predictions_v1(questions, seed=1234, korean=korean)
    assert min(kinds.values()) > 100, kinds  # every kind, missing included, is well represented

    proc = _run(script, data_file, _dump(tmp_path / "preds.json", preds))
    assert proc.returncode == 0, proc.stderr
    official = json.loads(proc.stdout)
    assert proc.stderr.count("will receive score 0") == kinds["missing"]

    ours = ours_fn(preds, _references(questions))
    assert list(ours) == ["exact_match", "f1", "total"]
    assert set(official) == {"exact_match", "f1"}
    _assert_same(ours, official)
    assert ours["total"] == len(questions)
    _assert_nontrivial(ours, "exact_match", "f1")


@pytest.mark.parametrize(
    ("with_na_probs", "thresh"),
    [(False, None), (True, None), (True, 0.5)],
    ids=["no-na-probs", "na-probs", "na-probs-thresh-0.5"],
)
def test_squad_v2_matches_official(
    shared_dir: Path, tmp_path: Path, with_na_probs: bool, thresh: float | None
) -> None:
    data_file, script = _data(shared_dir, V2_DATA), _script(shared_dir, "evaluate-v2.0.py")
    questions = _questions(data_file)
    preds, na_probs, kinds = _predictions_v2(questions, seed=2018)
    assert min(kinds.values()) > 100, kinds
    assert len(set(na_probs.values())) < 120  # plenty of ties for the threshold sweep

    args: list[Path | str] = [data_file, _dump(tmp_path / "preds.json", preds)]
    args += ["--out-file", tmp_path / "eval.json"]
    if with_na_probs:
        args += ["--na-prob-file", _dump(tmp_path / "na_probs.json", na_probs)]
    if thresh is not None:
        args += ["--na-prob-thresh", str(thresh)]
    proc = _run(script, *args)
    assert proc.returncode == 0, proc.stderr
    official = json.loads((tmp_path / "eval.json").read_text(encoding="utf-8"))

    ours = squad_v2(
        preds,
        _references(questions),
        na_probs=na_probs if with_na_probs else None,
        na_prob_thresh=1.0 if thresh is None else thresh,
    )
    assert list(ours) == list(official)  # same keys, same order
    _assert_same(ours, official)
    assert ours["NoAns_total"] > 3000 and ours["HasAns_total"] > 3000
    _assert_nontrivial(ours, "HasAns_exact", "HasAns_f1")
    if with_na_probs:
        assert 0.0 < ours["best_f1_thresh"] < 1.0
        all_null = 100.0 * ours["NoAns_total"] / ours["total"]  # the sweep's starting point
        assert ours["best_exact"] > all_null and ours["best_f1"] > ours["best_exact"]


def test_squad_v2_missing_predictions(shared_dir: Path, tmp_path: Path) -> None:
    """The official v2.0 script cannot score missing predictions; ours scores them as wrong answers."""
    data_file, script = _data(shared_dir, V2_DATA), _script(shared_dir, "evaluate-v2.0.py")
    questions = _questions(data_file)
    preds, na_probs, _ = _predictions_v2(questions, seed=7)
    rng = random.Random(7)
    missing = {qa["id"] for qa, _ in questions if rng.random() < 0.1}
    kept = {qid: p for qid, p in preds.items() if qid not in missing}

    proc = _run(script, data_file, _dump(tmp_path / "kept.json", kept), "--out-file", tmp_path / "x.json")
    assert proc.returncode != 0 and "KeyError" in proc.stderr  # what we are defining away

    # Ours with ids missing == official with those ids answered by a string that matches no gold.
    filled = {**kept, **{qid: "zzzq" for qid in missing}}
    args = [data_file, _dump(tmp_path / "filled.json", filled), "--out-file", tmp_path / "eval.json"]
    proc = _run(
        script,
        *args,
        "--na-prob-file",
        _dump(tmp_path / "na.json", {**na_probs, **dict.fromkeys(missing, 0.0)}),
    )
    assert proc.returncode == 0, proc.stderr
    official = json.loads((tmp_path / "eval.json").read_text(encoding="utf-8"))

    ours = squad_v2(
        kept, _references(questions), na_probs={k: v for k, v in na_probs.items() if k not in missing}
    )
    _assert_same(ours, {k: v for k, v in official.items() if not k.startswith("best_")})
    assert ours["total"] == len(questions)
