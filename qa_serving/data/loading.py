"""Load QA examples from any supported source into one flat ``datasets.Dataset``.

Every caller (training, evaluation, CLI, export parity) reads examples through :func:`load_examples`, so
that one place decides what a valid example is. The flat format has the columns ``id``, ``title``,
``context``, ``question`` and ``answers = {"text": [...], "answer_start": [...]}``; empty answer lists
mean "unanswerable" (SQuAD v2 ``is_impossible``).

Sources: the official nested SQuAD v1.1 / v2.0 / KorQuAD 1.0 JSON; flat JSON (a list of records or
``{"data": [records]}``); JSONL; CSV (``answers`` as a JSON string, or single ``answer_text`` /
``answer_start`` columns); and, for anything that is not a path, a Hugging Face hub dataset name.

Deliberate simplifications: the whole file is read into memory (the official dev sets are a few MB);
``question`` is left-stripped like the Hugging Face reference (some SQuAD questions start with runs of
spaces) but nothing else is normalised, so character offsets stay valid.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import logging
import random
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

import datasets

from qa_serving.errors import QAError

logger = logging.getLogger(__name__)

__all__ = [
    "FEATURES",
    "LoadReport",
    "load_examples",
    "save_squad_json",
    "split_by_article",
    "to_squad_json",
]

FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "title": datasets.Value("string"),
        "context": datasets.Value("string"),
        "question": datasets.Value("string"),
        "answers": datasets.Sequence(
            {"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}
        ),
    }
)

OnBadStart = Literal["warn", "fix", "drop", "error"]
_ON_BAD_START = ("warn", "fix", "drop", "error")
# A string ending in one of these is meant as a file: never send it to the hub.
_FILE_SUFFIXES = {".json", ".jsonl", ".ndjson", ".csv"}
_SHOW_IDS = 5  # ids quoted in a warning


@dataclass
class LoadReport:
    """What :func:`load_examples` kept, repaired and dropped (also logged).

    ``n_bad_start`` counts answers whose ``answer_start`` did not point at their text, whatever was
    done about them; ``n_fixed`` of them were moved to the nearest occurrence (``on_bad_start="fix"``)
    and ``n_answers_dropped`` removed (``"drop"``, or ``"fix"`` when the text is not in the context).
    A question left with no answer is removed (``dropped_ids``), never turned into an unanswerable one.
    """

    source: str
    n_examples: int = 0
    n_unanswerable: int = 0
    n_bad_start: int = 0
    n_fixed: int = 0
    n_answers_dropped: int = 0
    bad_start_ids: list[str] = field(default_factory=list)
    dropped_ids: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------- loading


@overload
def load_examples(
    source: str | Path,
    *,
    split: str | None = ...,
    on_bad_start: OnBadStart = ...,
    limit: int | None = ...,
    return_report: Literal[False] = ...,
) -> datasets.Dataset: ...


@overload
def load_examples(
    source: str | Path,
    *,
    split: str | None = ...,
    on_bad_start: OnBadStart = ...,
    limit: int | None = ...,
    return_report: Literal[True],
) -> tuple[datasets.Dataset, LoadReport]: ...


def load_examples(
    source: str | Path,
    *,
    split: str | None = None,
    on_bad_start: OnBadStart = "warn",
    limit: int | None = None,
    return_report: bool = False,
) -> datasets.Dataset | tuple[datasets.Dataset, LoadReport]:
    """Read, validate and flatten QA examples from a file or a hub dataset name.

    ``split`` is used for hub datasets only (default ``"validation"``). ``on_bad_start`` says what to do
    with an answer whose ``answer_start`` does not point at its text: ``"warn"`` keeps it and logs one
    warning, ``"fix"`` moves it to the nearest occurrence of the text, ``"drop"`` removes it, ``"error"``
    raises. ``limit`` keeps the first N questions (handy for smoke runs).

    >>> ds = load_examples("squad-v1.1-dev.part-a.json")  # doctest: +SKIP
    >>> ds[0]["answers"]  # doctest: +SKIP
    {'text': ['Denver Broncos', ...], 'answer_start': [177, ...]}
    """
    if on_bad_start not in _ON_BAD_START:
        raise QAError(f"on_bad_start must be one of {_ON_BAD_START}, got {on_bad_start!r}")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise QAError(f"limit must be a positive integer or None, got {limit!r}")

    name = str(source)
    path = Path(source)
    if path.is_file():
        records = _read_file(path)
    elif path.exists():
        raise QAError(f"{name} is a directory; pass a .json, .jsonl or .csv file")
    elif isinstance(source, Path) or path.suffix.lower() in _FILE_SUFFIXES:
        raise QAError(f"{name} does not exist")
    else:
        records = _read_hub(name, split)

    report = LoadReport(source=name)
    rows = _build_rows(records, name, on_bad_start, limit, report)
    _log_report(report, on_bad_start)
    dataset = datasets.Dataset.from_dict(rows, features=FEATURES)
    return (dataset, report) if return_report else dataset


# A record on its way in: (where it is, for messages; the raw flat record).
_Record = tuple[str, Mapping[str, Any]]


def _read_file(path: Path) -> Iterator[_Record]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path)
    text = _read_text(path)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # one JSON object per line, saved as .json
            return _iter_jsonl(text, path)
        raise QAError(f"{path}: invalid JSON ({exc})") from exc
    return _read_json_obj(obj, path)


def _read_json_obj(obj: Any, path: Path) -> Iterator[_Record]:
    prefix = ""
    if isinstance(obj, dict):
        if not isinstance(obj.get("data"), list):
            raise QAError(f"{path}: expected a list of records or an object with a 'data' list")
        obj, prefix = obj["data"], "data"
    if not isinstance(obj, list):
        raise QAError(f"{path}: expected a list of records or an object with a 'data' list")
    if obj and isinstance(obj[0], dict) and "paragraphs" in obj[0]:
        return _iter_nested(obj, path)
    return ((f"{prefix}[{i}]", rec) for i, rec in enumerate(obj))


def _iter_nested(articles: list[Any], path: Path) -> Iterator[_Record]:
    """Flatten the official format; article/paragraph problems are reported where they are."""
    for i, article in enumerate(articles):
        where = f"data[{i}]"
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise QAError(f"{path}: {where}: an article needs a 'paragraphs' list")
        title = article.get("title", "")
        for j, paragraph in enumerate(article["paragraphs"]):
            pwhere = f"{where}.paragraphs[{j}]"
            if not isinstance(paragraph, dict) or "context" not in paragraph:
                raise QAError(f"{path}: {pwhere}: missing field 'context'")
            if not isinstance(paragraph.get("qas"), list):
                raise QAError(f"{path}: {pwhere}: missing field 'qas' (a list of questions)")
            context = paragraph["context"]
            for k, qa in enumerate(paragraph["qas"]):
                if not isinstance(qa, dict):
                    raise QAError(f"{path}: {pwhere}.qas[{k}]: a question must be an object")
                yield f"{pwhere}.qas[{k}]", {**qa, "title": title, "context": context}


def _read_text(path: Path) -> str:
    """The whole file as UTF-8 (a BOM is skipped), decoded at once so that a bad byte is reported by its
    offset in the file and its line, not as a bare UnicodeDecodeError halfway through the records."""
    data = path.read_bytes()
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = bom + exc.start
        line = data.count(b"\n", 0, offset) + 1
        raise QAError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{data[offset]:02x} at offset {offset}: {exc.reason}); "
            "save the file as UTF-8"
        ) from exc


def _read_jsonl(path: Path) -> Iterator[_Record]:
    text = _read_text(path)  # before the first record, so a bad file yields nothing
    return _iter_jsonl(text, path)


def _iter_jsonl(text: str, path: Path) -> Iterator[_Record]:
    # newline=None splits lines like a file opened in text mode (\n, \r\n or \r), not like str.splitlines.
    for n, line in enumerate(io.StringIO(text, newline=None), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise QAError(f"{path}: line {n}: invalid JSON ({exc})") from exc
        yield f"line {n}", rec


def _read_csv(path: Path) -> Iterator[_Record]:
    text = _read_text(path)
    return _iter_csv(text, path)


def _iter_csv(text: str, path: Path) -> Iterator[_Record]:
    # Contexts can exceed the csv module's default 128 KiB field limit.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    reader = csv.DictReader(io.StringIO(text, newline=""))
    for rec in reader:
        where = f"line {reader.line_num}"
        if isinstance(rec.get("answers"), str):
            try:
                rec["answers"] = json.loads(rec["answers"]) if rec["answers"].strip() else []
            except json.JSONDecodeError as exc:
                raise QAError(f"{path}: {where}: column 'answers' is not valid JSON ({exc})") from exc
        yield where, rec


def _read_hub(name: str, split: str | None) -> Iterator[_Record]:
    try:
        ds = datasets.load_dataset(name, split=split or "validation")
    except Exception as exc:  # any failure means "not loadable from the hub"
        raise QAError(
            f"{name!r} is not an existing file, and loading it as a Hugging Face hub dataset failed "
            f"({type(exc).__name__}: {exc}); check the path, or go online for hub datasets"
        ) from exc
    columns = ds.to_dict()
    n = len(ds)
    keys = list(columns)
    return ((f"row {i}", {k: columns[k][i] for k in keys}) for i in range(n))


# ------------------------------------------------------------------------------------------ validation


def _build_rows(
    records: Iterator[_Record], source: str, on_bad_start: str, limit: int | None, report: LoadReport
) -> dict[str, list[Any]]:
    rows: dict[str, list[Any]] = {"id": [], "title": [], "context": [], "question": [], "answers": []}
    seen: dict[str, str] = {}
    n_read = 0
    for where, rec in records:
        n_read += 1
        if limit is not None and len(rows["id"]) >= limit:
            break
        row = _normalize(rec, where, source)
        qid = row["id"] if row["id"] is not None else _stable_id(row, seen)
        if qid in seen:
            raise QAError(f"{source}: {where}: duplicate id {qid!r} (first seen at {seen[qid]})")
        seen[qid] = where
        texts, starts = row["texts"], row["starts"]
        if not _check_starts(qid, where, row["context"], texts, starts, source, on_bad_start, report):
            report.dropped_ids.append(qid)
            continue
        rows["id"].append(qid)
        rows["title"].append(row["title"])
        rows["context"].append(row["context"])
        rows["question"].append(row["question"])
        rows["answers"].append({"text": texts, "answer_start": starts})
        report.n_unanswerable += not texts
    if n_read == 0:
        raise QAError(f"{source}: no questions found")
    if not rows["id"]:
        why = (
            "no answer text occurs in its context"
            if on_bad_start == "fix"
            else "no answer_start points at its answer text (on_bad_start='fix' moves them to the text)"
        )
        raise QAError(
            f"{source}: every question ({len(report.dropped_ids)}) was dropped by on_bad_start="
            f"{on_bad_start!r}: {why}; correct the answers' text and answer_start"
        )
    report.n_examples = len(rows["id"])
    return rows


def _fail(source: str, where: str, qid: Any, problem: str) -> QAError:
    ident = f" (id {qid!r})" if qid not in (None, "") else ""
    return QAError(f"{source}: {where}{ident}: {problem}")


def _normalize(rec: Any, where: str, source: str) -> dict[str, Any]:
    """Check one flat record; return id (None if absent), title, context, question, texts, starts."""
    if not isinstance(rec, Mapping):
        raise _fail(source, where, None, f"a record must be an object, got {type(rec).__name__}")
    qid = rec.get("id")
    if isinstance(qid, int) and not isinstance(qid, bool):
        qid = str(qid)
    elif qid == "":
        qid = None
    elif qid is not None and not isinstance(qid, str):
        raise _fail(source, where, None, f"'id' must be a string, got {type(qid).__name__}")

    for key in ("context", "question"):
        if key not in rec:
            raise _fail(source, where, qid, f"missing field {key!r}")
        if not isinstance(rec[key], str):
            raise _fail(source, where, qid, f"{key!r} must be a string, got {type(rec[key]).__name__}")
    context = rec["context"]
    if not context.strip():
        raise _fail(source, where, qid, "empty context")
    question = rec["question"].lstrip()
    if not question:
        raise _fail(source, where, qid, "empty question")
    title = rec.get("title")
    if title is None:
        title = ""
    elif not isinstance(title, str):
        raise _fail(source, where, qid, f"'title' must be a string, got {type(title).__name__}")

    texts, starts = _answers(rec, where, qid, source)
    return {
        "id": qid,
        "title": title,
        "context": context,
        "question": question,
        "texts": texts,
        "starts": starts,
    }


def _answers(rec: Mapping[str, Any], where: str, qid: Any, source: str) -> tuple[list[str], list[int]]:
    """Accept ``answers`` as {"text": [...], "answer_start": [...]} or a list of {"text", "answer_start"},
    or single ``answer_text`` / ``answer_start`` fields; ``is_impossible: true`` wins over all of them."""
    if rec.get("is_impossible") is True:
        return [], []
    if "answers" in rec:
        raw = rec["answers"]
        if raw is None:
            return [], []
        if isinstance(raw, Mapping):
            if "text" not in raw or "answer_start" not in raw:
                raise _fail(source, where, qid, "'answers' needs both 'text' and 'answer_start'")
            texts, starts = raw["text"], raw["answer_start"]
            if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
                raise _fail(
                    source, where, qid, "'answers' text and answer_start must be lists of equal length"
                )
            pairs = list(zip(texts, starts))
        elif isinstance(raw, list):
            pairs = []
            for a in raw:
                if not isinstance(a, Mapping) or "text" not in a or "answer_start" not in a:
                    raise _fail(source, where, qid, "each answer needs 'text' and 'answer_start'")
                pairs.append((a["text"], a["answer_start"]))
        else:
            raise _fail(
                source, where, qid, f"'answers' must be a list or an object, got {type(raw).__name__}"
            )
    elif "answer_text" in rec or "answer_start" in rec:
        text, start = rec.get("answer_text"), rec.get("answer_start")
        if text in (None, "") and start in (None, ""):
            return [], []  # both empty: unanswerable
        pairs = [(text, start)]
    else:
        raise _fail(source, where, qid, "missing field 'answers' (or 'answer_text'/'answer_start')")

    texts: list[str] = []
    starts: list[int] = []
    for text, start in pairs:
        if not isinstance(text, str) or not text.strip():
            raise _fail(source, where, qid, f"answer text is empty or not a string: {text!r}")
        texts.append(text)
        starts.append(_as_int(start, source, where, qid))
    return texts, starts


def _as_int(value: Any, source: str, where: str, qid: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise _fail(source, where, qid, f"answer_start must be an integer, got {value!r}")


def _stable_id(row: Mapping[str, Any], seen: Mapping[str, str]) -> str:
    """Content hash, so the same question gets the same id whatever the file order."""
    key = "\x1f".join((row["title"], row["context"], row["question"]))
    base = hashlib.sha1(key.encode("utf-8")).hexdigest()[:24]
    qid, n = base, 1
    while qid in seen:
        qid, n = f"{base}-{n}", n + 1
    return qid


def _check_starts(
    qid: str,
    where: str,
    context: str,
    texts: list[str],
    starts: list[int],
    source: str,
    on_bad_start: str,
    report: LoadReport,
) -> bool:
    """Apply ``on_bad_start`` in place; False when the question lost all its answers."""
    had_answers = bool(texts)
    bad = False
    i = 0
    while i < len(texts):
        text, start = texts[i], starts[i]
        if start >= 0 and context.startswith(text, start):
            i += 1
            continue
        report.n_bad_start += 1
        bad = True
        outside = not 0 <= start <= len(context)
        if on_bad_start == "error":
            raise _fail(
                source,
                where,
                qid,
                f"answer_start {start} does not point at answer {text!r} in the context"
                + (f" (it is outside the context, 0..{len(context)})" if outside else ""),
            )
        if on_bad_start == "warn" and outside:
            # "Keep as is" needs an offset into the context (and one the int32 column can hold).
            raise _fail(
                source,
                where,
                qid,
                f"answer_start {start} is outside the context (0..{len(context)} characters); correct it, "
                "or load with on_bad_start='fix' or 'drop'",
            )
        if on_bad_start == "fix":
            new = _nearest(context, text, start)
            if new is not None:
                starts[i] = new
                report.n_fixed += 1
                i += 1
                continue
        elif on_bad_start == "warn":
            i += 1
            continue
        del texts[i], starts[i]
        report.n_answers_dropped += 1
    if bad:
        report.bad_start_ids.append(qid)
    return not had_answers or bool(texts)


def _nearest(context: str, text: str, start: int) -> int | None:
    """Occurrence of ``text`` closest to ``start``: ``_nearest("ab ab", "ab", 2) == 3``."""
    best = None
    pos = context.find(text)
    while pos != -1:
        if best is None or abs(pos - start) < abs(best - start):
            best = pos
        pos = context.find(text, pos + 1)
    return best


def _log_report(report: LoadReport, on_bad_start: str) -> None:
    if not report.n_bad_start:
        return
    ids = ", ".join(report.bad_start_ids[:_SHOW_IDS])
    more = "" if len(report.bad_start_ids) <= _SHOW_IDS else ", ..."
    msg = f"{report.source}: {report.n_bad_start} answers whose answer_start does not point at their text (ids {ids}{more})"
    if on_bad_start == "warn":
        logger.warning("%s; kept as is (on_bad_start='fix' or 'drop' to repair)", msg)
    else:
        logger.warning(
            "%s; fixed %d, dropped %d answers and %d questions left without an answer",
            msg,
            report.n_fixed,
            report.n_answers_dropped,
            len(report.dropped_ids),
        )


# ------------------------------------------------------------------------------------- split and write


def split_by_article(
    dataset: datasets.Dataset,
    *,
    eval_fraction: float = 0.2,
    seed: int = 0,
    n_eval_articles: int | None = None,
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Split into (train, eval) by ``title`` so no article has questions on both sides.

    Splitting by question would leak: questions on the same paragraph share their context. The split
    depends only on the set of titles and ``seed``, not on row order; rows keep their order. The eval
    side gets ``n_eval_articles`` articles, or ``round(eval_fraction * n_articles)`` (at least one).

    >>> train, dev = split_by_article(load_examples("squad-v1.1-dev.part-a.json"))  # doctest: +SKIP
    """
    titles = dataset.select_columns(["title"]).to_dict()["title"]  # a plain list, fast
    unique = sorted(set(titles))
    n = len(unique)
    if n < 2:
        raise QAError(
            f"split_by_article needs at least 2 articles (distinct titles), found {n}"
            + (" (all titles are empty: give your records a 'title')" if unique == [""] else "")
        )
    if n_eval_articles is None:
        if not 0.0 < eval_fraction < 1.0:
            raise QAError(f"eval_fraction must be between 0 and 1 (exclusive), got {eval_fraction!r}")
        n_eval = min(max(round(eval_fraction * n), 1), n - 1)
    else:
        if not isinstance(n_eval_articles, int) or not 1 <= n_eval_articles <= n - 1:
            raise QAError(
                f"n_eval_articles must be between 1 and {n - 1} for {n} articles, got {n_eval_articles!r}"
            )
        n_eval = n_eval_articles
    random.Random(seed).shuffle(unique)
    eval_titles = set(unique[:n_eval])
    train_idx = [i for i, t in enumerate(titles) if t not in eval_titles]
    eval_idx = [i for i, t in enumerate(titles) if t in eval_titles]
    return dataset.select(train_idx), dataset.select(eval_idx)


def to_squad_json(dataset: datasets.Dataset, version: str = "1.1") -> dict[str, Any]:
    """Rebuild the official nested format (grouped by title, then context) for the official scripts.

    ``version`` is written as given (``"2.0"`` becomes ``"v2.0"`` like the official file); a version
    containing ``2.0`` writes ``is_impossible``. Use ``"KorQuAD_v1.0_dev"`` for the KorQuAD script.
    Questions are written left-stripped, as loaded.
    """
    version_2 = "2.0" in version
    if version == "2.0":
        version = "v2.0"
    articles: dict[str, dict[str, list[dict[str, Any]]]] = {}
    columns = dataset.select_columns(["id", "title", "context", "question", "answers"]).to_dict()
    for qid, title, context, question, answers in zip(
        columns["id"], columns["title"], columns["context"], columns["question"], columns["answers"]
    ):
        texts, starts = answers["text"], answers["answer_start"]
        if not texts and not version_2:
            raise QAError(
                f"example {qid!r} has no answer, which SQuAD {version} cannot express; use version='2.0'"
            )
        qa: dict[str, Any] = {
            "id": qid,
            "question": question,
            "answers": [{"text": t, "answer_start": s} for t, s in zip(texts, starts)],
        }
        if version_2:
            qa["is_impossible"] = not texts
        articles.setdefault(title, {}).setdefault(context, []).append(qa)
    return {
        "version": version,
        "data": [
            {"title": title, "paragraphs": [{"context": c, "qas": qas} for c, qas in paragraphs.items()]}
            for title, paragraphs in articles.items()
        ],
    }


def save_squad_json(dataset: datasets.Dataset, path: str | Path, version: str = "1.1") -> Path:
    """Write :func:`to_squad_json` as UTF-8 (Hangul unescaped); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_squad_json(dataset, version), ensure_ascii=False), encoding="utf-8")
    return path
