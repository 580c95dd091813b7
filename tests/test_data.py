"""Loaders, validation, article split and nested-format round trip (qa_serving/data.py)."""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys

import datasets
import pytest

from qa_serving.data.loading import load_examples, save_squad_json, split_by_article, to_squad_json
from qa_serving.errors import QAError

CTX_A = "Alpha Works was founded in 1923 by Elena Moravec in the city of Tressa."
CTX_B = "바른홀트 산업은 1923년에 엘레나 모라베크가 트레사에서 설립하였다."


def _row(qid, title, context, question, *answers):
    return {
        "id": qid,
        "title": title,
        "context": context,
        "question": question,
        "answers": {"text": list(answers), "answer_start": [context.index(a) for a in answers]},
    }


ROWS_V1 = [
    _row("q1", "Alpha", CTX_A, "When was Alpha Works founded?", "1923"),
    _row("q2", "Alpha", CTX_A, "Who founded Alpha Works?", "Elena Moravec", "Moravec"),
    _row("q3", "바른홀트", CTX_B, "바른홀트 산업은 언제 설립되었는가?", "1923년"),
]
# q4 sits with its article, so the nested writer below keeps this row order
ROWS_V2 = ROWS_V1[:2] + [_row("q4", "Alpha", CTX_A, "Who leads Alpha Works?")] + ROWS_V1[2:]


def _nested(rows, version_2=False):
    """Official nested JSON, written out by hand (not with to_squad_json) so loading is tested alone."""
    articles: dict = {}
    for r in rows:
        qa = {
            "id": r["id"],
            "question": r["question"],
            "answers": [
                {"text": t, "answer_start": s}
                for t, s in zip(r["answers"]["text"], r["answers"]["answer_start"])
            ],
        }
        if version_2:
            qa["is_impossible"] = not r["answers"]["text"]
            if qa["is_impossible"]:
                qa["plausible_answers"] = [{"text": "Elena Moravec", "answer_start": CTX_A.index("Elena")}]
        articles.setdefault(r["title"], {}).setdefault(r["context"], []).append(qa)
    data = [
        {"title": t, "paragraphs": [{"context": c, "qas": q} for c, q in ps.items()]}
        for t, ps in articles.items()
    ]
    return {"version": "v2.0" if version_2 else "1.1", "data": data}


def _answer_list(r):
    return [
        {"text": t, "answer_start": s} for t, s in zip(r["answers"]["text"], r["answers"]["answer_start"])
    ]


def write_nested_v1(tmp_path):
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(_nested(ROWS_V1), ensure_ascii=False), encoding="utf-8")
    return path, ROWS_V1


def write_nested_v2(tmp_path):
    path = tmp_path / "v2.json"
    path.write_text(json.dumps(_nested(ROWS_V2, version_2=True)), encoding="utf-8")
    return path, ROWS_V2


def write_flat_list(tmp_path):
    path = tmp_path / "flat.json"
    path.write_text(json.dumps(ROWS_V2, ensure_ascii=False), encoding="utf-8")
    return path, ROWS_V2


def write_flat_data(tmp_path):
    # {"data": [flat records]} with answers as a list of {"text", "answer_start"} objects
    records = [{**r, "answers": _answer_list(r)} for r in ROWS_V2]
    path = tmp_path / "flat_data.json"
    path.write_text(json.dumps({"data": records}), encoding="utf-8")
    return path, ROWS_V2


def write_jsonl(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS_V2) + "\n", encoding="utf-8"
    )
    return path, ROWS_V2


def write_csv_json_answers(tmp_path):
    path = tmp_path / "rows.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "title", "context", "question", "answers"])
        w.writeheader()
        for r in ROWS_V2:
            w.writerow({**r, "answers": json.dumps(r["answers"], ensure_ascii=False)})
    return path, ROWS_V2


def write_csv_columns(tmp_path):
    # single answer per row: keep the first answer of each question
    rows = [{**r, "answers": {k: v[:1] for k, v in r["answers"].items()}} for r in ROWS_V2]
    path = tmp_path / "cols.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(
            f, fieldnames=["id", "title", "context", "question", "answer_text", "answer_start"]
        )
        w.writeheader()
        for r in rows:
            text, start = (r["answers"]["text"] or [""])[0], (r["answers"]["answer_start"] or [""])[0]
            w.writerow(
                {k: r[k] for k in ("id", "title", "context", "question")}
                | {"answer_text": text, "answer_start": start}
            )
    return path, rows


WRITERS = [
    write_nested_v1,
    write_nested_v2,
    write_flat_list,
    write_flat_data,
    write_jsonl,
    write_csv_json_answers,
    write_csv_columns,
]


@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: w.__name__.removeprefix("write_"))
def test_every_format_loads_to_the_same_rows(tmp_path, writer):
    path, expected = writer(tmp_path)
    ds, report = load_examples(path, return_report=True)
    assert isinstance(ds, datasets.Dataset)
    assert ds.column_names == ["id", "title", "context", "question", "answers"]
    assert ds.to_list() == expected
    assert report.n_examples == len(expected)
    assert report.n_unanswerable == sum(not r["answers"]["text"] for r in expected)
    assert report.n_bad_start == 0


def test_v2_impossible_ignores_plausible_answers(tmp_path):
    path, _ = write_nested_v2(tmp_path)
    ds = load_examples(path)
    row = ds.to_list()[2]
    assert row["id"] == "q4" and row["answers"] == {"text": [], "answer_start": []}


def test_missing_id_and_title_get_stable_defaults(tmp_path):
    records = [{k: v for k, v in r.items() if k not in ("id", "title")} for r in ROWS_V1]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    b.write_text("\n".join(json.dumps(r) for r in reversed(records)), encoding="utf-8")
    ds_a, ds_b = load_examples(a), load_examples(b)
    assert set(ds_a["title"]) == {""}
    assert len(set(ds_a["id"])) == len(records)
    # same question, same id, whatever the file order
    assert dict(zip(ds_a["question"], ds_a["id"])) == dict(zip(ds_b["question"], ds_b["id"]))
    assert list(load_examples(a)["id"]) == list(ds_a["id"])


def test_question_left_whitespace_is_stripped(tmp_path):
    path = tmp_path / "ws.json"
    path.write_text(json.dumps([{**ROWS_V1[0], "question": "   \t When was it founded? "}]), encoding="utf-8")
    assert load_examples(path)[0]["question"] == "When was it founded? "


def test_limit_keeps_the_first_questions(tmp_path):
    path, _ = write_nested_v2(tmp_path)
    assert list(load_examples(path, limit=2)["id"]) == ["q1", "q2"]
    with pytest.raises(QAError, match="limit"):
        load_examples(path, limit=0)


# ------------------------------------------------------------------------------------ bad answer_start

BAD_CTX = "one cd two cd three"


def _bad_file(tmp_path):
    records = [
        {
            "id": "ok",
            "context": BAD_CTX,
            "question": "q ok?",
            "answers": {"text": ["cd"], "answer_start": [4]},
        },
        # start 0 is wrong; "cd" occurs at 4 and 11: nearest to 0 is 4
        {
            "id": "near",
            "context": BAD_CTX,
            "question": "q near?",
            "answers": {"text": ["cd"], "answer_start": [0]},
        },
        # one good, one bad answer (text nowhere in the context)
        {
            "id": "mixed",
            "context": BAD_CTX,
            "question": "q mixed?",
            "answers": {"text": ["two", "zz"], "answer_start": [7, 3]},
        },
        # only answer is text that is not in the context
        {
            "id": "gone",
            "context": BAD_CTX,
            "question": "q gone?",
            "answers": {"text": ["zz"], "answer_start": [1]},
        },
        {
            "id": "late",
            "context": BAD_CTX,
            "question": "q late?",
            "answers": {"text": ["cd"], "answer_start": [13]},
        },
    ]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def test_bad_start_warn_keeps_and_counts(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="qa_serving.data.loading"):
        ds, report = load_examples(_bad_file(tmp_path), on_bad_start="warn", return_report=True)
    assert len(ds) == 5
    assert report.n_bad_start == 4
    assert report.bad_start_ids == ["near", "mixed", "gone", "late"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        len(warnings) == 1 and "4 answers" in warnings[0].getMessage() and "near" in warnings[0].getMessage()
    )


def test_bad_start_fix_moves_to_nearest_occurrence(tmp_path):
    ds, report = load_examples(_bad_file(tmp_path), on_bad_start="fix", return_report=True)
    rows = {r["id"]: r["answers"] for r in ds.to_list()}
    assert rows["near"] == {"text": ["cd"], "answer_start": [4]}
    assert rows["late"] == {"text": ["cd"], "answer_start": [11]}
    assert rows["mixed"] == {"text": ["two"], "answer_start": [7]}
    assert "gone" not in rows  # text absent: answer dropped, question left with none dropped
    assert (report.n_fixed, report.n_answers_dropped, report.dropped_ids) == (2, 2, ["gone"])
    for r in ds.to_list():
        for t, s in zip(r["answers"]["text"], r["answers"]["answer_start"]):
            assert r["context"][s : s + len(t)] == t


def test_bad_start_drop_removes_answers_and_emptied_questions(tmp_path):
    ds, report = load_examples(_bad_file(tmp_path), on_bad_start="drop", return_report=True)
    rows = {r["id"]: r["answers"] for r in ds.to_list()}
    assert sorted(rows) == ["mixed", "ok"]
    assert rows["mixed"] == {"text": ["two"], "answer_start": [7]}
    assert report.dropped_ids == ["near", "gone", "late"]
    assert report.n_unanswerable == 0  # dropped, not turned into unanswerable questions


def test_bad_start_error_names_the_record(tmp_path):
    with pytest.raises(QAError, match=r"bad\.json: \[1\] \(id 'near'\): answer_start 0"):
        load_examples(_bad_file(tmp_path), on_bad_start="error")


def test_answer_start_outside_the_context_is_a_bad_start(tmp_path):
    """A start past int32 once crashed in pyarrow; outside [0, len(context)] it is no offset to keep."""
    path = tmp_path / "far.jsonl"
    rec = {"id": "far", "context": BAD_CTX, "question": "q?", "answers": {"text": ["cd"], "answer_start": [2**40]}}
    path.write_text(json.dumps(rec) + "\n", encoding="utf-8")
    with pytest.raises(QAError, match=r"far\.jsonl: line 1 \(id 'far'\): answer_start 1099511627776 is outside"):
        load_examples(path)  # "warn" cannot keep it as is
    with pytest.raises(QAError, match="outside the context"):
        load_examples(path, on_bad_start="error")
    ds = load_examples(path, on_bad_start="fix")
    assert ds[0]["answers"] == {"text": ["cd"], "answer_start": [11]}  # the occurrence nearest to 2**40


@pytest.mark.parametrize("mode", ["drop", "fix"])
def test_every_question_dropped_is_an_error(tmp_path, mode):
    path = tmp_path / "all_bad.json"
    path.write_text(
        json.dumps([{"id": "g", "context": BAD_CTX, "question": "q?", "answers": {"text": ["zz"], "answer_start": [1]}}]),
        encoding="utf-8",
    )
    with pytest.raises(QAError, match=rf"all_bad\.json: every question \(1\) was dropped by on_bad_start='{mode}'"):
        load_examples(path, on_bad_start=mode)


def test_unknown_bad_start_mode(tmp_path):
    with pytest.raises(QAError, match="on_bad_start"):
        load_examples(_bad_file(tmp_path), on_bad_start="ignore")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ validation

GOOD = {
    "id": "x1",
    "context": "some text",
    "question": "what?",
    "answers": {"text": ["text"], "answer_start": [5]},
}


@pytest.mark.parametrize(
    "record, message",
    [
        ({k: v for k, v in GOOD.items() if k != "question"}, "missing field 'question'"),
        ({k: v for k, v in GOOD.items() if k != "context"}, "missing field 'context'"),
        ({k: v for k, v in GOOD.items() if k != "answers"}, "missing field 'answers'"),
        ({**GOOD, "question": 42}, "'question' must be a string"),
        ({**GOOD, "context": ["a"]}, "'context' must be a string"),
        ({**GOOD, "context": "  \n"}, "empty context"),
        ({**GOOD, "question": "   "}, "empty question"),
        ({**GOOD, "answers": {"text": [""], "answer_start": [0]}}, "answer text is empty"),
        (
            {**GOOD, "answers": {"text": ["text"], "answer_start": ["five"]}},
            "answer_start must be an integer",
        ),
        ({**GOOD, "answers": {"text": ["text", "x"], "answer_start": [5]}}, "equal length"),
    ],
)
def test_bad_records_name_file_and_record(tmp_path, record, message):
    path = tmp_path / "recs.json"
    path.write_text(json.dumps([GOOD | {"id": "x0"}, record]), encoding="utf-8")
    with pytest.raises(QAError, match=message) as info:
        load_examples(path)
    assert "recs.json: [1]" in str(info.value)
    if "id" in record:
        assert "'x1'" in str(info.value)


def test_nested_errors_name_article_paragraph_question(tmp_path):
    doc = _nested(ROWS_V1)
    del doc["data"][1]["paragraphs"][0]["qas"][0]["question"]
    path = tmp_path / "nested.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(
        QAError, match=r"data\[1\]\.paragraphs\[0\]\.qas\[0\] \(id 'q3'\): missing field 'question'"
    ):
        load_examples(path)
    doc = _nested(ROWS_V1)
    doc["data"][0]["paragraphs"][0]["context"] = ""
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(QAError, match=r"data\[0\]\.paragraphs\[0\]\.qas\[0\] \(id 'q1'\): empty context"):
        load_examples(path)
    del doc["data"][0]["paragraphs"][0]["context"]
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(QAError, match=r"data\[0\]\.paragraphs\[0\]: missing field 'context'"):
        load_examples(path)


def test_csv_and_jsonl_errors_name_the_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(GOOD) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(QAError, match="rows.jsonl: line 2: invalid JSON"):
        load_examples(path)
    path = tmp_path / "rows.csv"
    path.write_text(
        "id,context,question,answer_text,answer_start\nz1,some text,what?,text,\n", encoding="utf-8"
    )
    with pytest.raises(QAError, match=r"rows.csv: line 2 \(id 'z1'\): answer_start must be an integer"):
        load_examples(path)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".json"])
def test_non_utf8_files_name_the_line_and_byte(tmp_path, suffix):
    path = tmp_path / f"latin1{suffix}"
    good = json.dumps(GOOD).encode()
    body = {
        ".jsonl": good + b"\n" + good.replace(b"some text", b"caf\xe9 text") + b"\n",
        ".csv": b"id,context,question,answer_text,answer_start\nz1,some text,what?,text,5\nz2,caf\xe9,what?,caf,0\n",
        ".json": b"[" + good + b",\n" + good.replace(b"some text", b"caf\xe9 text") + b"]",
    }[suffix]
    path.write_bytes(body)
    offset, line = body.index(b"\xe9"), 3 if suffix == ".csv" else 2
    with pytest.raises(QAError, match=rf"latin1\{suffix}: line {line}: not UTF-8 text \(byte 0xe9 at offset {offset}"):
        load_examples(path)


def test_duplicate_ids_and_empty_files_are_errors(tmp_path):
    path = tmp_path / "dup.json"
    path.write_text(json.dumps([GOOD, GOOD]), encoding="utf-8")
    with pytest.raises(QAError, match="duplicate id 'x1'"):
        load_examples(path)
    path.write_text(json.dumps({"version": "1.1", "data": []}), encoding="utf-8")
    with pytest.raises(QAError, match="no questions"):
        load_examples(path)


# --------------------------------------------------------------------------------------------- the hub


def test_missing_path_that_is_no_hub_name(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("hub unreachable")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(QAError, match="not an existing file.*hub.*ConnectionError"):
        load_examples("no_such_dataset_or_file_xyz")


def test_missing_file_name_never_asks_the_hub(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append(a))
    with pytest.raises(QAError, match="does not exist"):
        load_examples(tmp_path / "missing.json")
    with pytest.raises(QAError, match="does not exist"):
        load_examples("missing.csv")
    assert calls == []


def test_hub_dataset_maps_to_flat_rows(monkeypatch):
    seen = {}

    def fake_load(name, split):
        seen.update(name=name, split=split)
        return datasets.Dataset.from_list([{k: v for k, v in r.items() if k != "title"} for r in ROWS_V2])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    ds = load_examples("someone/squad-like")
    assert seen == {"name": "someone/squad-like", "split": "validation"}
    assert ds.to_list() == [{**r, "title": ""} for r in ROWS_V2]
    load_examples("someone/squad-like", split="train")
    assert seen["split"] == "train"


# ------------------------------------------------------------------------------------ split and write


def _articles(n_titles=10, per_title=3):
    rows = [
        _row(f"t{t}q{q}", f"Article {t}", f"Context {t} has answer {q}.", f"Question {q}?", f"answer {q}")
        for t in range(n_titles)
        for q in range(per_title)
    ]
    return datasets.Dataset.from_list(rows)


def test_split_by_article_keeps_articles_whole_and_is_deterministic():
    ds = _articles()
    train, dev = split_by_article(ds, eval_fraction=0.3, seed=1)
    assert len(set(dev["title"])) == 3 and len(set(train["title"])) == 7
    assert not set(train["title"]) & set(dev["title"])
    assert sorted(list(train["id"]) + list(dev["id"])) == sorted(ds["id"])
    again_train, again_dev = split_by_article(ds, eval_fraction=0.3, seed=1)
    assert (list(again_train["id"]), list(again_dev["id"])) == (list(train["id"]), list(dev["id"]))
    # only the set of titles matters, not the row order
    shuffled = ds.shuffle(seed=5)
    assert set(split_by_article(shuffled, eval_fraction=0.3, seed=1)[1]["title"]) == set(dev["title"])
    other = {frozenset(split_by_article(ds, eval_fraction=0.3, seed=s)[1]["title"]) for s in range(6)}
    assert len(other) > 1
    assert len(set(split_by_article(ds, n_eval_articles=4)[1]["title"])) == 4


@pytest.mark.parametrize("kwargs", [{"eval_fraction": 0.0}, {"eval_fraction": 1.0}, {"n_eval_articles": 10}])
def test_split_by_article_rejects_bad_sizes(kwargs):
    with pytest.raises(QAError):
        split_by_article(_articles(), **kwargs)


def test_split_by_article_needs_two_articles():
    with pytest.raises(QAError, match="at least 2 articles"):
        split_by_article(_articles(n_titles=1))


def test_to_squad_json_round_trips(tmp_path):
    path, _ = write_nested_v2(tmp_path)
    ds = load_examples(path)
    doc = to_squad_json(ds, "2.0")
    assert doc["version"] == "v2.0"
    assert [a["title"] for a in doc["data"]] == ["Alpha", "바른홀트"]
    assert [qa["is_impossible"] for qa in doc["data"][0]["paragraphs"][0]["qas"]] == [False, False, True]
    out = save_squad_json(ds, tmp_path / "out" / "v2.json", version="2.0")
    assert load_examples(out).to_list() == ds.to_list()
    v1 = load_examples(write_nested_v1(tmp_path)[0])
    assert to_squad_json(v1) == _nested(ROWS_V1)
    with pytest.raises(QAError, match="no answer.*version='2.0'"):
        to_squad_json(ds, "1.1")


# ---------------------------------------------------------------------------------------- real files

REAL = [
    ("squad-v1.1-dev.part-a.json", 8544, 0),
    ("squad-v2.0-dev.part-a.json", 7900, 3978),
    ("korquad-v1.0-dev.part-a.json", 3867, 0),
]


@pytest.mark.shared
@pytest.mark.parametrize("name, n_questions, n_unanswerable", REAL)
def test_real_files_load_with_documented_counts(shared_dir, name, n_questions, n_unanswerable):
    ds, report = load_examples(shared_dir / "data" / name, on_bad_start="error", return_report=True)
    assert len(ds) == n_questions and report.n_unanswerable == n_unanswerable
    assert report.n_bad_start == 0  # every official answer_start points at its text
    assert len(set(ds["id"])) == n_questions


def _flat_qas(doc):
    return [
        (article["title"], paragraph["context"], qa["id"], qa["question"].lstrip(), qa["answers"])
        for article in doc["data"]
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    ]


@pytest.mark.shared
def test_real_squad_round_trips_to_the_official_json(shared_dir):
    path = shared_dir / "data" / REAL[0][0]
    original = json.loads(path.read_text(encoding="utf-8"))
    for qa in (qa for a in original["data"] for p in a["paragraphs"] for qa in p["qas"]):
        qa["question"] = qa["question"].lstrip()  # the loader strips left whitespace (10 questions)
    assert to_squad_json(load_examples(path)) == original


@pytest.mark.shared
def test_real_korquad_round_trips_up_to_repeated_paragraphs(shared_dir):
    # Three KorQuAD paragraphs repeat an earlier context of their article verbatim (grouping by context
    # merges them) and one has no questions (nothing to rebuild it from); the official script cares
    # about neither. Every question is unchanged.
    path = shared_dir / "data" / REAL[2][0]
    original = json.loads(path.read_text(encoding="utf-8"))
    doc = to_squad_json(load_examples(path), "KorQuAD_v1.0_dev")
    assert doc["version"] == original["version"]
    assert sorted(_flat_qas(doc)) == sorted(_flat_qas(original))
    n_paragraphs = sum(len(a["paragraphs"]) for a in doc["data"])
    assert n_paragraphs == sum(len(a["paragraphs"]) for a in original["data"]) - 3 - 1


@pytest.mark.shared
def test_official_v2_script_reads_what_we_write(shared_dir, tmp_path):
    ds = load_examples(shared_dir / "data" / REAL[1][0], limit=300)
    gold = save_squad_json(ds, tmp_path / "gold.json", version="2.0")
    preds = {r["id"]: (r["answers"]["text"] or [""])[0] for r in ds.to_list()}
    (tmp_path / "preds.json").write_text(json.dumps(preds), encoding="utf-8")
    script = shared_dir / "eval" / "evaluate-v2.0.py"
    out = subprocess.run(
        [sys.executable, str(script), str(gold), str(tmp_path / "preds.json")],
        capture_output=True,
        text=True,
        check=True,
    )
    scores = json.loads(out.stdout)
    assert scores["exact"] == 100.0 and scores["total"] == 300
