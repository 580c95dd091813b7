"""Model backends: padded numpy batch in, ``(start_logits, end_logits)`` numpy float32 out.

The choice (PyTorch, ONNX Runtime or OpenVINO; CPU or CUDA; fp32/fp16/bf16) happens once, at load time;
the callers (pipeline, evaluation, handler, exporter parity check) only call the backend.
Optional dependencies (optimum, onnxruntime, optimum-intel/openvino) are imported lazily with an
actionable error. ``dtype="auto"`` resolves through :func:`qa_serving.core.hardware.resolve_precision`
(bf16 where the CPU has avx512_bf16/AMX, fp32 elsewhere) and logs the choice; nothing picks "auto"
unless the caller asks, so the defaults stay the stock pipeline's (fp32).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from qa_serving.core.hardware import PRECISIONS
from qa_serving.errors import QAError

logger = logging.getLogger(__name__)

DTYPES = tuple(p for p in PRECISIONS if p != "auto")  # what "auto" resolves among
BACKENDS = ("auto", "torch", "onnx", "openvino")
OV_XML = "openvino_model.xml"
#: Sequence lengths the compiled torch path pads to (``TorchBackend(compile=True)``): one graph per
#: bucket instead of one per length; windows longer than the last bucket keep their own length.
SEQ_BUCKETS = (64, 128, 192, 256, 384, 512)


def _require_onnx():
    try:
        import onnxruntime  # noqa: F401
        from optimum.onnxruntime import ORTModelForQuestionAnswering
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise QAError(
            "the ONNX backend needs optimum-onnx and onnxruntime: pip install 'qa-serving[onnx]' "
            "(or 'qa-serving[gpu]' for CUDA)"
        ) from err
    return ORTModelForQuestionAnswering


def is_onnx_dir(path: str | Path) -> bool:
    """True when ``path`` is a local folder holding an exported ``*.onnx`` model."""
    path = Path(path)
    return path.is_dir() and any(path.glob("*.onnx"))


def is_openvino_dir(path: str | Path) -> bool:
    """True when ``path`` is a local folder holding an OpenVINO IR (``openvino_model.xml`` + ``.bin``)."""
    path = Path(path)
    return path.is_dir() and (path / OV_XML).is_file()


def _require_openvino():
    try:
        import openvino  # noqa: F401
        from optimum.intel import OVModelForQuestionAnswering
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise QAError(
            "the OpenVINO backend needs optimum-intel and openvino: pip install 'qa-serving[openvino]'"
        ) from err
    return OVModelForQuestionAnswering


def resolve_dtype(dtype: str, device: str = "cpu") -> str:
    """``"auto"`` -> ``"bf16"``/``"fp32"`` for ``device`` (logged, :func:`hardware.resolve_precision`);
    explicit dtypes pass through checked. Example: ``resolve_dtype("auto")`` -> ``"bf16"`` on a Xeon with AMX."""
    from qa_serving.core.hardware import resolve_precision

    if dtype != "auto" and dtype not in DTYPES:
        raise QAError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {dtype!r}")
    return resolve_precision(dtype, device=str(device))


def openvino_config(dtype: str = "auto", threads: int | None = None) -> dict[str, str]:
    """OpenVINO CPU compile settings: the inference precision hint, and threads when given.

    The hint is always explicit: OpenVINO's own CPU default is bf16 wherever the CPU has avx512_bf16 or
    AMX, so an unset hint would silently change the numerics of an "fp32" run there.
    Example: ``openvino_config("fp32", 2)`` -> ``{"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": "2",
    "PERFORMANCE_HINT": "LATENCY"}``.
    """
    dtype = resolve_dtype(dtype, "cpu")
    if dtype == "fp16":
        raise QAError("fp16 OpenVINO inference is for GPUs; on CPU use dtype='bf16' or 'fp32'")
    config = {"INFERENCE_PRECISION_HINT": "bf16" if dtype == "bf16" else "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(int(threads))
    return config


def resolve_device(device: str | int | None) -> str:
    """``"auto"``/``None`` -> ``"cuda"`` when torch sees a GPU, else ``"cpu"``; ints are CUDA ordinals."""
    import torch

    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if isinstance(device, int):
        return "cpu" if device < 0 else f"cuda:{device}"
    device = str(device)
    try:
        torch.device(device)
    except RuntimeError:
        raise QAError(f"device must be cpu, cuda, cuda:N or auto, got {device!r}") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise QAError(f"device {device!r} requested but torch sees no CUDA GPU; use device='cpu'")
    return device


# Models whose position ids start after the padding index (pad_token_id + 1): 514 embeddings, 512 positions.
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "mpnet"}


def position_limit(model) -> int | None:
    """The longest window ``model`` can read (``max_position_embeddings``, less the padding offset of
    RoBERTa-style models); ``None`` when its config does not say. A longer window would fail inside the
    model (a tensor-size error in torch, an index error in ONNX Runtime) instead of with a clear error."""
    config = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int):
        return None
    if getattr(config, "model_type", None) in _OFFSET_POSITIONS:
        pad = getattr(config, "pad_token_id", None)
        limit -= (1 if pad is None else pad) + 1  # a pad id of 0 offsets by 1, not 2
    return limit


class TorchBackend:
    """A ``transformers`` span model (or any module returning start/end logits) on one device.

    ``compile=True`` runs the model through ``torch.compile`` with sequence lengths padded up to
    :data:`SEQ_BUCKETS` (padding is masked, logits are cut back), so a new length does not recompile.
    """

    def __init__(self, model, device: str | None = None, dtype: str = "fp32", compile: bool = False) -> None:
        import torch

        self.device = torch.device(resolve_device(device) if device is not None else _module_device(model))
        dtype = resolve_dtype(dtype, self.device.type)
        if dtype == "fp16" and self.device.type == "cpu":
            raise QAError("fp16 inference needs a GPU; on CPU use dtype='bf16' or 'fp32'")
        self.dtype = dtype
        torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
        self.model = model.to(device=self.device, dtype=torch_dtype).eval()
        self.input_names = _accepted_inputs(model)
        self.max_positions = position_limit(model)
        self.compiled = compile
        if compile:
            import torch._dynamo
            import torch._inductor.config

            # One graph per (batch, bucket) shape: more than dynamo's default limit of 8 recompiles.
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
            # Inference weights are constants: freezing lets inductor pre-pack them for oneDNN on CPU.
            torch._inductor.config.freezing = True
        self.forward = torch.compile(self.model, dynamic=False) if compile else self.model

    def __call__(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        import torch

        length = next(iter(inputs.values())).shape[1]
        if self.compiled:
            inputs = pad_to_bucket(inputs, SEQ_BUCKETS)
        feed = {k: torch.from_numpy(v).to(self.device) for k, v in inputs.items() if k in self.input_names}
        with torch.inference_mode():
            out = self.forward(**feed)
        start, end = (out["start_logits"], out["end_logits"]) if isinstance(out, dict) else out[:2]
        return start[:, :length].float().cpu().numpy(), end[:, :length].float().cpu().numpy()


def pad_to_bucket(
    inputs: dict[str, np.ndarray], buckets: tuple[int, ...] = SEQ_BUCKETS
) -> dict[str, np.ndarray]:
    """Right-pad every input to the smallest bucket >= its length (zeros: masked out by attention_mask).

    Example: a ``(16, 100)`` batch with buckets ``(64, 128)`` -> ``(16, 128)``; ``(16, 600)`` stays as it is.
    """
    length = next(iter(inputs.values())).shape[1]
    target = next((b for b in buckets if b >= length), length)
    if target == length:
        return inputs
    return {k: np.pad(v, ((0, 0), (0, target - length))) for k, v in inputs.items()}


def _module_device(model) -> str:
    try:
        return str(next(model.parameters()).device)
    except (StopIteration, AttributeError):
        return "cpu"


def _accepted_inputs(model) -> set[str]:
    import inspect

    params = inspect.signature(model.forward).parameters
    return {name for name in ("input_ids", "attention_mask", "token_type_ids") if name in params}


def graph_feed(inputs: dict[str, np.ndarray], input_names: set[str]) -> dict[str, np.ndarray]:
    """The inputs an exported graph takes: ours it does not know are dropped, and ``token_type_ids`` is
    zeros when the graph wants it but the tokenizer gives none (a BERT-architecture encoder with an XLM-R
    tokenizer, e.g. multilingual-e5-small: PyTorch defaults it to zeros, a graph needs it fed)."""
    feed = {k: v for k, v in inputs.items() if k in input_names}
    if "token_type_ids" in input_names and "token_type_ids" not in feed:
        feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
    return feed


class OrtBackend:
    """An ONNX Runtime session (from an Optimum export); CUDA runs through Optimum's IO binding."""

    def __init__(self, ort_model) -> None:
        self.ort_model = ort_model
        self.session = ort_model.session
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.max_positions = position_limit(ort_model)
        self.providers = self.session.get_providers()
        self.on_cuda = self.providers[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider")

    def __call__(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        if self.on_cuda:
            import torch

            feed = {
                k: torch.from_numpy(v).to(self.ort_model.device)
                for k, v in graph_feed(inputs, self.input_names).items()
            }
            out = self.ort_model(**feed)
            return out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()
        start, end = self.session.run(["start_logits", "end_logits"], graph_feed(inputs, self.input_names))
        return start.astype(np.float32, copy=False), end.astype(np.float32, copy=False)


class OVBackend:
    """An OpenVINO compiled model (from :class:`optimum.intel.OVModelForQuestionAnswering`) on CPU.

    Calls the compiled model's infer request directly: numpy in, numpy out, no torch tensors between.
    """

    def __init__(self, ov_model, dtype: str | None = None) -> None:
        if dtype is not None:
            set_openvino_dtype(ov_model, dtype)
        ov_model.compile()
        self.ov_model = ov_model
        self.request = ov_model.request.create_infer_request()
        self.input_names = set(ov_model.input_names)
        self.max_positions = position_limit(ov_model)
        self.dtype = openvino_dtype(ov_model)

    def __call__(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        out = self.request.infer(graph_feed(inputs, self.input_names))
        return (
            np.asarray(out["start_logits"], dtype=np.float32),
            np.asarray(out["end_logits"], dtype=np.float32),
        )


def is_openvino_model(model) -> bool:
    """True for an Optimum-Intel ``OVModel*`` (it carries an ``ov_config`` and an OpenVINO model)."""
    return hasattr(model, "ov_config") and hasattr(model, "compile") and not hasattr(model, "session")


def openvino_dtype(ov_model) -> str:
    """``"bf16"`` or ``"fp32"``: the precision hint the model compiles (or compiled) with."""
    hint = str(ov_model.ov_config.get("INFERENCE_PRECISION_HINT", "")).lower()
    if not hint and getattr(ov_model, "request", None) is not None:
        hint = str(ov_model.request.get_property("INFERENCE_PRECISION_HINT")).lower()
    return "bf16" if "bf" in hint else "fp32"


def set_openvino_dtype(ov_model, dtype: str) -> None:
    """Set the precision hint of an Optimum-Intel model (``"auto"`` resolved for this CPU), recompiling
    if it was compiled with another one."""
    hint = openvino_config(dtype)["INFERENCE_PRECISION_HINT"]
    if ov_model.ov_config.get("INFERENCE_PRECISION_HINT") != hint:
        ov_model.ov_config["INFERENCE_PRECISION_HINT"] = hint
        ov_model.request = None  # Optimum compiles again on the next compile()


def load_openvino_model(
    path: str | Path,
    device: str | None = "cpu",
    dtype: str = "auto",
    threads: int | None = None,
    file_name: str | None = None,
):
    """Load an OpenVINO IR folder (or convert a PyTorch folder in memory) with Optimum-Intel, on CPU.

    ``dtype``: ``"auto"`` (bf16 where the CPU has native bf16, else fp32), ``"bf16"`` or ``"fp32"``.
    """
    ov_cls = _require_openvino()
    if device not in (None, "auto", "cpu"):
        raise QAError(f"the OpenVINO backend runs on CPU here; got device={device!r} (use device='cpu')")
    kwargs: dict[str, Any] = {"ov_config": openvino_config(dtype, threads), "compile": False}
    if is_openvino_dir(path):
        if file_name:
            kwargs["file_name"] = file_name
    else:
        kwargs["export"] = True  # a PyTorch folder or hub id: convert in memory
    try:
        return ov_cls.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError, RuntimeError) as err:
        raise QAError(f"OpenVINO could not load {path}: {err}") from err


def load_onnx_model(
    path: str | Path, device: str | None = "cpu", file_name: str | None = None, threads: int | None = None
):
    """Load an exported model folder with Optimum on the provider matching ``device``.

    ``threads``: intra-op threads (one inter-op thread), as a benchmark gives torch; ``None`` keeps ONNX
    Runtime's default (what the handler and :func:`load_backend` use).
    """
    import onnxruntime

    ort_cls = _require_onnx()
    available = onnxruntime.get_available_providers()
    if device in (None, "auto"):
        device = "cuda" if "CUDAExecutionProvider" in available else "cpu"
    device = str(device)
    provider = "CUDAExecutionProvider" if device.startswith("cuda") else "CPUExecutionProvider"
    if provider not in available:
        raise QAError(
            f"{provider} is not available in this onnxruntime (available: {available}); "
            "install onnxruntime-gpu (pip install 'qa-serving[gpu]') or use device='cpu'"
        )
    if file_name is None:
        names = sorted(p.name for p in Path(path).glob("*.onnx"))
        # Prefer the most processed model in a folder holding several (quantized > optimized > plain).
        for pref in ("quantized", "optimized"):
            picked = [n for n in names if pref in n]
            if picked:
                file_name = picked[0]
                break
        else:
            file_name = names[0] if names else None
    kwargs: dict[str, Any] = {"provider": provider, "file_name": file_name}
    if threads is not None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        kwargs["session_options"] = options
    if provider == "CUDAExecutionProvider" and ":" in device:
        kwargs["provider_options"] = {"device_id": int(device.split(":")[1])}
    return ort_cls.from_pretrained(str(path), **kwargs)


def load_model(path: str | Path, backend: str = "auto", device: str | None = None, **kwargs):
    """A span model from a local folder or hub id: ``torch`` (transformers), ``onnx`` (Optimum ONNX
    Runtime) or ``openvino`` (Optimum-Intel). ``auto``: OpenVINO for a folder with ``openvino_model.xml``,
    ONNX Runtime for one with a ``.onnx`` file, else PyTorch. OpenVINO takes ``dtype``/``threads`` kwargs.
    """
    if backend not in BACKENDS:
        raise QAError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    local = Path(path)
    if backend == "openvino" or (backend == "auto" and is_openvino_dir(local)):
        return load_openvino_model(
            local if local.exists() else str(path),
            device=device,
            dtype=kwargs.get("dtype") or "auto",
            threads=kwargs.get("threads"),
            file_name=kwargs.get("file_name"),
        )
    if backend == "onnx" or (backend == "auto" and is_onnx_dir(local)):
        if not is_onnx_dir(local):
            raise QAError(f"{path} holds no .onnx model; export one with `qa-serving export`")
        return load_onnx_model(local, device=device, file_name=kwargs.get("file_name"))
    from transformers import AutoModelForQuestionAnswering

    from qa_serving.training import heads  # noqa: F401  (registers the frozen-encoder head with the Auto classes)

    # A path that is surely local (./x, /x, or runs/x where runs/ is a local folder) is not sent to the hub,
    # whose retries take a minute offline before saying "couldn't connect".
    surely_local = str(path).startswith((".", "/")) or (len(local.parts) > 1 and local.parent.is_dir())
    if surely_local and not local.exists():
        raise QAError(f"model path {path} does not exist")
    if local.is_file():
        raise QAError(f"model path {path} is a file; give the model's folder (or a hub id)")
    if local.is_dir() and not (local / "config.json").is_file():
        raise QAError(f"{path} has no config.json: not a saved model folder")
    try:
        return AutoModelForQuestionAnswering.from_pretrained(str(path))
    except (OSError, ValueError) as err:  # ValueError: a malformed hub id, an unknown model type
        missing = "" if local.exists() else f" (and there is no local folder {path!r})"
        raise QAError(f"could not load a question-answering model from {path!r}{missing}: {err}") from err


def model_dtype(model) -> str:
    """``"fp32"``, ``"bf16"`` or ``"fp16"``: what a loaded model computes in (ONNX Runtime models: fp32).

    So a model the caller already cast (``dtype=torch.bfloat16`` in ``pipeline()``) is not cast back.
    """
    if hasattr(model, "session"):
        return "fp32"
    if is_openvino_model(model):
        return openvino_dtype(model)
    try:
        name = str(next(model.parameters()).dtype)
    except (StopIteration, AttributeError):
        return "fp32"
    return {"torch.bfloat16": "bf16", "torch.float16": "fp16"}.get(name, "fp32")


def make_backend(model, device: str | None = None, dtype: str | None = "fp32", compile: bool = False):
    """Wrap a loaded model (torch module, Optimum ORT or OpenVINO model) as a backend callable.

    ``dtype=None`` keeps the model's own dtype (:func:`model_dtype`); ``"auto"`` picks bf16 where the
    hardware runs it natively (logged), except on ONNX Runtime, which runs the exported fp32 graph.
    ``compile``: ``torch.compile`` with shape buckets (torch backend only).
    """
    if dtype is None:
        dtype = model_dtype(model)
    if hasattr(model, "session") and hasattr(model.session, "get_providers"):
        if dtype == "auto":
            logger.info("precision auto -> fp32 (ONNX Runtime runs the exported fp32 graph)")
            dtype = "fp32"
        if dtype != "fp32":
            raise QAError(
                "dtype applies to the torch and OpenVINO backends; export with --optimize O4 for fp16 ONNX"
            )
        return OrtBackend(model)
    if is_openvino_model(model):
        return OVBackend(model, dtype=dtype)
    return TorchBackend(model, device=device, dtype=dtype, compile=compile)


def load_backend(
    path: str | Path,
    backend: str = "auto",
    device: str | None = None,
    dtype: str = "fp32",
    compile: bool = False,
):
    """Load a model folder and wrap it: the one-liner used by the CLI, evaluation and the handler.

    ``dtype``: ``fp32`` (default, as the stock pipeline), ``bf16``, ``fp16`` (GPU) or ``auto``.
    """
    on_ov = backend == "openvino" or (backend == "auto" and is_openvino_dir(path))
    model = load_model(path, backend=backend, device=device, **({"dtype": dtype} if on_ov else {}))
    if hasattr(model, "session") or on_ov:
        device = None
    return make_backend(model, device=device, dtype=dtype, compile=compile)
