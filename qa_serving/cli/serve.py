"""``qa-serving archive`` and ``qa-serving serve``: flags -> :mod:`qa_serving.serving` calls, nothing else.

The flags of the archive settings and of the serve-time overrides are generated from
:data:`qa_serving.serving.settings.SETTINGS`, so their defaults and help texts are the library's.
``serve --engine torchserve`` (the default) starts TorchServe in the background; ``serve --engine kserve
--model DIR`` runs the KServe runtime (:mod:`qa_serving.serving.kserve_runtime`) in the foreground.
"""

from __future__ import annotations

import argparse

from qa_serving.errors import QAError
from qa_serving.serving import (
    DEFAULT_RUN_DIR,
    DEFAULT_STORE,
    SETTINGS,
    Ports,
    Server,
    build_archive,
    default_model_config,
    read_token,
    render_config,
    start_server,
    stop_server,
)
from qa_serving.serving.server import config_ports
from qa_serving.serving.settings import Setting

ENGINES = ("torchserve", "kserve")


def _flag(setting: Setting) -> str:
    return "--" + setting.name.removesuffix("_s").replace("_", "-")


def _gpu_ids(text: str) -> list[int]:
    return [int(i) for i in text.split(",") if i.strip()]


def _add_setting(group, setting: Setting, *, show_default: bool) -> None:
    kind = _gpu_ids if setting.name == "gpu_ids" else setting.kind
    default = f" (default: {setting.default})" if show_default and setting.default is not None else ""
    env = f"; env {setting.env} overrides it at serve time" if setting.env and show_default else ""
    group.add_argument(
        _flag(setting), dest=setting.name, type=kind, choices=setting.choices, default=None,
        metavar=None if setting.choices else setting.name.removesuffix("_s").upper(),
        help=f"{setting.help}{env}{default}",
    )  # fmt: skip


def add_parser(sub) -> None:
    """``qa-serving archive`` and ``qa-serving serve`` (picked up by :mod:`qa_serving.cli.main`)."""
    p = sub.add_parser(
        "archive",
        help="build a TorchServe model archive (.mar) of a model folder",
        description="Pack the handler, the qa_serving code, the model folder (weights, tokenizer, "
        "qa_config.json) and a model-config.yaml into STORE/NAME.mar with torch-model-archiver.",
    )
    p.add_argument("--model", help="saved model folder (an exported ONNX folder with --backend onnx)")
    p.add_argument("--name", default="qa", help="model name: NAME.mar and /predictions/NAME (default: qa)")
    p.add_argument("--store", default=str(DEFAULT_STORE), help="model store folder (default: model_store)")
    p.add_argument(
        "--onnx", dest="onnx_dir", help="also pack this ONNX export, so QA_BACKEND=onnx can switch"
    )
    p.add_argument("--template", help="model-config.yaml to start from (default: the built-in defaults)")
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the default model-config.yaml (a template) and exit",
    )
    g = p.add_argument_group("model-config.yaml settings")
    for setting in SETTINGS.values():
        if setting.archive:
            _add_setting(g, setting, show_default=True)
    p.set_defaults(func=_run_archive)

    p = sub.add_parser(
        "serve",
        help="start (or --stop) TorchServe on loopback with the archives of a model store",
        description="Start TorchServe in the background on 127.0.0.1 with the packaged config.properties "
        "(or --config), load the archives, wait until they are ready, and print the URL, how to read the "
        "inference key and a curl example. Logs and key_file.json go to --run-dir.",
    )
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default="torchserve",
        help="torchserve: TorchServe in the background with the store's archives (default); kserve: the "
        "KServe runtime in the foreground with --model, until SIGTERM (docs/serving.md)",
    )
    p.add_argument("--store", default=str(DEFAULT_STORE), help="model store folder (default: model_store)")
    p.add_argument("--models", nargs="+", help="archive names to load (default: every .mar in the store)")
    p.add_argument("--config", help="config.properties (default: the one shipped with qa_serving.serving)")
    p.add_argument(
        "--run-dir", default=str(DEFAULT_RUN_DIR), help="logs, pid and key file (default: runs/torchserve)"
    )
    for port, default in (
        ("inference", 8080), ("management", 8081), ("metrics", 8082), ("grpc-inference", 7070),
        ("grpc-management", 7071),
    ):  # fmt: skip
        p.add_argument(f"--{port}-port", type=int, help=f"default: from the config ({default})")
    p.add_argument(
        "--timeout", type=float, default=300, help="s to wait for the models to be ready (default: 300)"
    )
    g = p.add_argument_group(
        "overrides of the archives' model-config.yaml (for this server, every model; default: the archive's)"
    )
    for setting in SETTINGS.values():
        if setting.serve:
            _add_setting(g, setting, show_default=False)
    p.add_argument(
        "--disable-token-auth",
        action="store_true",
        help="no Authorization header needed (local debugging only)",
    )
    g = p.add_argument_group("--engine kserve (batch size, batch delay, threads and device: the flags above)")
    g.add_argument("--model", help="saved model folder to serve (a PyTorch, ONNX or OpenVINO folder)")
    g.add_argument("--name", default="qa", help="model name: /v1/models/NAME:predict, /v2/models/NAME/infer")
    g.add_argument("--host", default="127.0.0.1", help="REST address (default: 127.0.0.1; 0.0.0.0 in a pod)")
    g.add_argument("--http-port", type=int, default=8080, help="REST port (default: 8080)")
    g.add_argument("--grpc-port", type=int, default=8081, help="gRPC port, all interfaces (default: 8081)")
    for name in ("job_queue_size", "deadline_s", "grace_s"):
        _add_setting(g, SETTINGS[name], show_default=True)
    p.add_argument("--stop", action="store_true", help="stop the TorchServe of --run-dir")
    p.add_argument(
        "--print-key",
        nargs="?",
        const="inference",
        choices=["inference", "management", "API"],
        help="print a key of the running server (default kind: inference) and exit",
    )
    p.set_defaults(func=_run_serve)


def _run_archive(args: argparse.Namespace) -> int:
    if args.print_config:
        import yaml

        print(yaml.safe_dump(default_model_config(), sort_keys=False), end="")
        return 0
    if not args.model:
        raise QAError("qa-serving archive needs --model DIR (the saved model folder)")
    settings = {name: getattr(args, name) for name, s in SETTINGS.items() if s.archive}
    path = build_archive(
        model_dir=args.model, name=args.name, store=args.store, onnx_dir=args.onnx_dir, template=args.template,
        **settings,
    )  # fmt: skip
    print(f"wrote {path}\nserve it: qa-serving serve --store {args.store} --models {args.name}")
    return 0


def _run_serve(args: argparse.Namespace) -> int:
    if args.engine == "kserve":
        return _run_kserve(args)
    kserve_only = [
        f for f in ("model", "job_queue_size", "deadline_s", "grace_s") if getattr(args, f) is not None
    ]
    if kserve_only:
        raise QAError(
            f"{', '.join(kserve_only)}: flags of --engine kserve. TorchServe serves archives (--store, --models); "
            "its queue bound is the archive's jobQueueSize (qa-serving archive --job-queue-size)"
        )
    if args.print_key:
        print(read_token(args.run_dir, args.print_key))
        return 0
    if args.stop:
        print(
            "TorchServe stopped"
            if stop_server(args.run_dir)
            else f"no TorchServe running from {args.run_dir}"
        )
        return 0
    ports = None
    flags = ("inference", "management", "metrics", "grpc_inference", "grpc_management")
    if any(getattr(args, f"{f}_port") for f in flags):
        base = config_ports(render_config(args.config, None))
        ports = Ports(**{f: getattr(args, f"{f}_port") or getattr(base, f) for f in flags})
    server = start_server(
        store=args.store,
        config_path=args.config,
        models=args.models,
        run_dir=args.run_dir,
        ports=ports,
        token_auth=not args.disable_token_auth,
        timeout=args.timeout,
        overrides={name: getattr(args, name) for name, s in SETTINGS.items() if s.serve},
    )
    print(serve_message(server))
    return 0


def _run_kserve(args: argparse.Namespace) -> int:
    import dataclasses

    from qa_serving.serving.settings import HandlerSettings

    if not args.model:
        raise QAError("qa-serving serve --engine kserve needs --model DIR (a saved model folder)")
    from qa_serving.serving.kserve_runtime import RuntimeSettings, serve

    settings = HandlerSettings.resolve(None)
    for name in ("threads", "device"):
        if getattr(args, name) is not None:
            settings = dataclasses.replace(settings, **{name: getattr(args, name)})
    given = {
        name: SETTINGS[name].check(getattr(args, name))
        for name in ("batch_size", "max_batch_delay_ms", "job_queue_size", "deadline_s", "grace_s")
        if getattr(args, name) is not None
    }
    device = "cuda:0" if settings.device == "auto" and _cuda() else "cpu"
    return serve(
        args.model, name=args.name, http_port=args.http_port, grpc_port=args.grpc_port, host=args.host,
        settings=settings, runtime=RuntimeSettings(**given), device=device,
    )  # fmt: skip


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def serve_message(server: Server) -> str:
    """What ``qa-serving serve`` prints: URLs, how to read the key, a curl example, how to stop."""
    model = server.models[0]
    auth = ' -H "Authorization: Bearer $KEY"' if server.token_auth else ""
    run = server.run_dir
    return "\n".join(
        [
            f"TorchServe is up (pid {server.pid}), models: {', '.join(server.models)}",
            f"  inference:  {server.inference_url}/predictions/<model>",
            f"  management: {server.management_url}   metrics: {server.metrics_url}",
            f"  logs:       {run / 'logs'}",
            *(
                [
                    f"  keys:       {run / 'key_file.json'}  (KEY=$(qa-serving serve --print-key --run-dir {run}))"
                ]
                if server.token_auth
                else ["  token authorization is OFF"]
            ),
            "try it:",
            *([f"  KEY=$(qa-serving serve --print-key --run-dir {run})"] if server.token_auth else []),
            f"  curl -s {server.inference_url}/predictions/{model}{auth} -H 'Content-Type: application/json' \\",
            '       -d \'{"question": "Who wrote Hamlet?", "context": "Hamlet was written by Shakespeare."}\'',
            f"stop it: qa-serving serve --stop --run-dir {run}",
        ]
    )
