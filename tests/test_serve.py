"""A real TorchServe on free loopback ports, serving an archive of a tiny model built in the test.

The server starts once per module (~10 s) with token authorization on; the last test stops it and checks
that no TorchServe process is left (the fixture's finalizer stops it too, whatever happened before).
Answers are compared with ``pipeline("custom-qa")`` on the same model, in this process.
"""

from __future__ import annotations

import json
import shutil
import threading
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.serve
pytest.importorskip("ts", reason="TorchServe is not installed (pip install 'qa-serving[serve]')")
pytest.importorskip("model_archiver", reason="torch-model-archiver is not installed")
requests = pytest.importorskip("requests")
if shutil.which("java") is None:
    pytest.skip("TorchServe needs Java 17 (no `java` on PATH)", allow_module_level=True)

import psutil
import yaml
from conftest import assert_same_answers, save_tiny_span_model
from transformers import pipeline

import qa_serving  # noqa: F401  (registers custom-qa)
from qa_serving.errors import QAError
from qa_serving.serving import Ports, build_archive, start_server

TEXTS = [
    "Shakespeare wrote Hamlet in 1600 while living in London.",
    "The cat sat on the mat. The dog slept in the garden near the old oak tree.",
    "세종대왕은 1443년에 훈민정음을 창제하였다.",
    "Marie Curie won the Nobel Prize in Physics in 1903 and in Chemistry in 1911.",
]
GOOD = [
    {"question": "Who wrote Hamlet?", "context": TEXTS[0]},
    {"question": "Where did the dog sleep?", "context": TEXTS[1]},
    {"question": "훈민정음은 언제 창제되었나?", "context": TEXTS[2]},
    {"question": "When did Curie win the prize?", "context": " ".join(TEXTS * 5)},  # several windows
]
BATCH_SIZE, MAX_DELAY_MS = 8, 300  # a generous delay, so concurrent requests batch even on a slow CI box


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def model_dir(root) -> Path:
    return save_tiny_span_model(root / "model", TEXTS)


@pytest.fixture(scope="module")
def archive(root, model_dir) -> Path:
    return build_archive(
        model_dir=model_dir, name="tiny", store=root / "store", batch_size=BATCH_SIZE, max_batch_delay_ms=MAX_DELAY_MS,
        workers=1, max_context_chars=2000, max_examples=4,
    )  # fmt: skip


@pytest.fixture(scope="module")
def server(root, archive):
    srv = start_server(store=archive.parent, models=["tiny"], run_dir=root / "run", ports=Ports.free(), timeout=180)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def reference(model_dir):
    return pipeline("custom-qa", model=str(model_dir), tokenizer=str(model_dir))


def predict(server, body, *, raw: bytes | None = None, headers: dict | None = None, session=requests):
    return session.post(
        f"{server.inference_url}/predictions/tiny",
        data=raw if raw is not None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **server.headers("inference"), **(headers or {})},
        timeout=60,
    )


def test_archive_carries_handler_code_model_and_config(archive):
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read("MAR-INF/MANIFEST.json"))
        config = yaml.safe_load(zf.read("model-config.yaml"))
        bundle = zf.read("qa_serving.zip")
    assert {"qa_handler.py", "qa_serving.zip", "model-config.yaml"} <= names
    assert {
        f"model/{f}" for f in ("config.json", "model.safetensors", "tokenizer.json", "qa_config.json")
    } <= names
    assert manifest["model"]["handler"] == "qa_handler.py"
    assert manifest["model"]["configFile"] == "model-config.yaml"
    assert (config["batchSize"], config["maxBatchDelay"], config["minWorkers"]) == (
        BATCH_SIZE,
        MAX_DELAY_MS,
        1,
    )
    assert config["handler"]["max_context_chars"] == 2000 and config["handler"]["backend"] == "torch"
    archive.with_name("bundle.zip").write_bytes(bundle)
    with zipfile.ZipFile(archive.with_name("bundle.zip")) as zf:
        assert {"qa_serving/core/windowing.py", "qa_serving/core/postprocess.py", "qa_serving/__init__.py"} <= set(
            zf.namelist()
        )


def test_model_is_registered_with_its_batching_config(server):
    reply = requests.get(
        f"{server.management_url}/models/tiny", headers=server.headers("management"), timeout=10
    )
    assert reply.status_code == 200
    [model] = reply.json()
    assert (model["batchSize"], model["maxBatchDelay"]) == (BATCH_SIZE, MAX_DELAY_MS)
    assert [w["status"] for w in model["workers"]] == ["READY"]
    # The worker runs the qa_serving code packed in the archive, not the checkout's.
    log = (server.run_dir / "logs" / "model_log.log").read_text()
    assert "qa_serving.zip/qa_serving" in log


def test_calls_without_the_right_key_are_refused(server):
    body = json.dumps(GOOD[0]).encode()
    url = f"{server.inference_url}/predictions/tiny"
    for headers in ({}, {"Authorization": "Bearer not-the-key"}, server.headers("management")):
        reply = requests.post(
            url, data=body, headers={"Content-Type": "application/json", **headers}, timeout=10
        )
        # TorchServe 0.12 answers a missing/wrong token with 400 InvalidKeyException (not 401).
        assert reply.status_code in (400, 401), reply.text
        assert reply.json()["type"] == "InvalidKeyException"
    reply = requests.get(f"{server.management_url}/models", timeout=10)
    assert reply.status_code in (400, 401) and reply.json()["type"] == "InvalidKeyException"
    # Registering archives over HTTP is disabled (model API control off).
    reply = requests.post(
        f"{server.management_url}/models?url=tiny.mar", headers=server.headers("management"), timeout=10
    )
    assert reply.status_code == 405


def test_single_and_list_requests_match_the_pipeline(server, reference):
    for ex in GOOD:
        reply = predict(server, ex)
        assert reply.status_code == 200, reply.text
        assert_same_answers(reply.json(), reference(question=ex["question"], context=ex["context"]))
    reply = predict(server, GOOD[:3])
    assert reply.status_code == 200
    assert_same_answers(reply.json(), reference(GOOD[:3]))
    reply = predict(server, {**GOOD[3], "top_k": 3, "max_answer_len": 5})
    assert_same_answers(reply.json(), reference(question=GOOD[3]["question"], context=GOOD[3]["context"], top_k=3,
                                        max_answer_len=5))  # fmt: skip


BAD = [
    (b'{"question": "who wrote', 400, "not valid JSON"),
    (b'{"question": "\xff\xfe who?", "context": "x"}', 400, "not valid UTF-8"),
    (json.dumps({"context": "Hamlet."}).encode(), 400, "missing 'question'"),
    (json.dumps({"question": "who?", "context": 7}).encode(), 400, "'context' must be a string"),
    (json.dumps({"question": "", "context": "Hamlet."}).encode(), 400, "'question' is empty"),
    (json.dumps({"question": "who?", "context": "word " * 500}).encode(), 413, "limit is 2000"),
    (json.dumps([GOOD[0]] * 5).encode(), 413, "limit is 4"),
]


def test_concurrent_good_and_bad_requests_are_batched_and_isolated(server, reference):
    # 16 requests at once (batchSize 8): good ones (single and list bodies) mixed with bad ones.
    good = [GOOD[i % len(GOOD)] for i in range(7)] + [GOOD[:2], [GOOD[3], GOOD[2]]]
    jobs = [("good", g) for g in good] + [("bad", b) for b in BAD]
    assert len(jobs) == 16
    results: list = [None] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def send(i: int) -> None:
        kind, payload = jobs[i]
        with requests.Session() as session:
            barrier.wait()
            raw = payload[0] if kind == "bad" else None
            results[i] = predict(server, payload, raw=raw, session=session)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    batch_sizes = []
    for (kind, payload), reply in zip(jobs, results):
        assert reply is not None
        batch_sizes.append(int(reply.headers["x-qa-batch-size"]))
        if kind == "good":
            assert reply.status_code == 200, reply.text
            assert_same_answers(reply.json(), reference(payload) if isinstance(payload, list) else
                        reference(question=payload["question"], context=payload["context"]))  # fmt: skip
        else:
            _, status, message = payload
            assert reply.status_code == status, reply.text
            assert reply.json()["status"] == status and message in reply.json()["error"]
    print("batch sizes seen by each request:", batch_sizes)
    # Each reply says how many requests shared its handler call: batching happened, within batchSize.
    assert max(batch_sizes) > 1, batch_sizes
    assert max(batch_sizes) <= BATCH_SIZE


def test_metrics_endpoint_reports_requests_and_batch_sizes(server):
    reply = requests.get(server.metrics_url, timeout=10)
    assert reply.status_code == 200
    assert 'ts_inference_requests_total{model_name="tiny"' in reply.text
    assert 'QABatchSize{ModelName="tiny"' in reply.text


def processes_of(run_dir: Path) -> list[int]:
    """TorchServe processes started for ``run_dir`` (java and workers name paths inside it)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if str(run_dir) in " ".join(proc.info["cmdline"] or []):
            found.append(proc.pid)
    return found


def test_a_model_that_cannot_load_fails_the_start_fast_and_cleanly(root, model_dir):
    # fp16 on CPU is refused at load: the worker dies, start_server reports why and stops TorchServe.
    store = root / "broken_store"
    build_archive(model_dir=model_dir, name="broken", store=store, precision="fp16", device="cpu")
    with pytest.raises(QAError, match="failed to load") as err:
        start_server(store=store, models=["broken"], run_dir=root / "broken_run", ports=Ports.free(), timeout=120)
    assert "fp16 inference needs a GPU" in str(err.value)
    assert not processes_of(root / "broken_run")


def test_stop_leaves_no_torchserve_process(server):
    java = psutil.Process(server.pid)
    family = [java, *java.children(recursive=True)]
    assert any("model_service_worker" in " ".join(p.cmdline()) for p in family)
    assert server.stop()
    assert not [p.pid for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not processes_of(server.run_dir)
    assert not (server.run_dir / "key_file.json").exists()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.inference_url}/ping", timeout=5)
