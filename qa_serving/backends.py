"""Model backends: padded numpy batch in, ``(start_logits, end_logits)`` numpy float32 out.

The choice (PyTorch or ONNX Runtime, CPU or CUDA, fp32/fp16/bf16) happens once, at load time; the
callers (pipeline, evaluation, handler, exporter parity check) only call the backend.
Optional dependencies (optimum, onnxruntime) are imported lazily with an actionable error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import QAError

DTYPES = ("fp32", "fp16", "bf16")


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


def resolve_device(device: str | int | None) -> str:
    """``"auto"``/``None`` -> ``"cuda"`` when torch sees a GPU, else ``"cpu"``; ints are CUDA ordinals."""
    import torch

    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if isinstance(device, int):
        return "cpu" if device < 0 else f"cuda:{device}"
    device = str(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise QAError(f"device {device!r} requested but torch sees no CUDA GPU; use device='cpu'")
    return device


class TorchBackend:
    """A ``transformers`` span model (or any module returning start/end logits) on one device."""

    def __init__(self, model, device: str | None = None, dtype: str = "fp32") -> None:
        import torch

        if dtype not in DTYPES:
            raise QAError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        self.device = torch.device(resolve_device(device) if device is not None else _module_device(model))
        if dtype == "fp16" and self.device.type == "cpu":
            raise QAError("fp16 inference needs a GPU; on CPU use dtype='bf16' or 'fp32'")
        self.dtype = dtype
        torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
        self.model = model.to(device=self.device, dtype=torch_dtype).eval()
        self.input_names = _accepted_inputs(model)

    def __call__(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        import torch

        feed = {k: torch.from_numpy(v).to(self.device) for k, v in inputs.items() if k in self.input_names}
        with torch.inference_mode():
            out = self.model(**feed)
        start, end = (out["start_logits"], out["end_logits"]) if isinstance(out, dict) else out[:2]
        return start.float().cpu().numpy(), end.float().cpu().numpy()


def _module_device(model) -> str:
    try:
        return str(next(model.parameters()).device)
    except (StopIteration, AttributeError):
        return "cpu"


def _accepted_inputs(model) -> set[str]:
    import inspect

    params = inspect.signature(model.forward).parameters
    return {name for name in ("input_ids", "attention_mask", "token_type_ids") if name in params}


class OrtBackend:
    """An ONNX Runtime session (from an Optimum export); CUDA runs through Optimum's IO binding."""

    def __init__(self, ort_model) -> None:
        self.ort_model = ort_model
        self.session = ort_model.session
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.providers = self.session.get_providers()
        self.on_cuda = self.providers[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider")

    def __call__(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        if self.on_cuda:
            import torch

            feed = {
                k: torch.from_numpy(v).to(self.ort_model.device) for k, v in inputs.items() if k in self.input_names
            }
            out = self.ort_model(**feed)
            return out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()
        feed = {k: v for k, v in inputs.items() if k in self.input_names}
        start, end = self.session.run(["start_logits", "end_logits"], feed)
        return start.astype(np.float32, copy=False), end.astype(np.float32, copy=False)


def load_onnx_model(path: str | Path, device: str | None = "cpu", file_name: str | None = None):
    """Load an exported model folder with Optimum on the provider matching ``device``."""
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
    if provider == "CUDAExecutionProvider" and ":" in device:
        kwargs["provider_options"] = {"device_id": int(device.split(":")[1])}
    return ort_cls.from_pretrained(str(path), **kwargs)


def load_model(path: str | Path, backend: str = "auto", device: str | None = None, **kwargs):
    """A span model from a local folder or hub id: ``torch`` (transformers) or ``onnx`` (Optimum)."""
    if backend not in ("auto", "torch", "onnx"):
        raise QAError(f"backend must be 'auto', 'torch' or 'onnx', got {backend!r}")
    local = Path(path)
    if backend == "onnx" or (backend == "auto" and is_onnx_dir(local)):
        if not is_onnx_dir(local):
            raise QAError(f"{path} holds no .onnx model; export one with `qa-serving export`")
        return load_onnx_model(local, device=device, file_name=kwargs.get("file_name"))
    from transformers import AutoModelForQuestionAnswering

    from . import heads  # noqa: F401  (registers the frozen-encoder head with the Auto classes)

    if str(path).startswith((".", "/")) and not local.exists():
        raise QAError(f"model path {path} does not exist")
    try:
        return AutoModelForQuestionAnswering.from_pretrained(str(path))
    except OSError as err:
        raise QAError(f"could not load a question-answering model from {path!r}: {err}") from err


def model_dtype(model) -> str:
    """``"fp32"``, ``"bf16"`` or ``"fp16"``: what a loaded model computes in (ONNX Runtime models: fp32).

    So a model the caller already cast (``dtype=torch.bfloat16`` in ``pipeline()``) is not cast back.
    """
    if hasattr(model, "session"):
        return "fp32"
    try:
        name = str(next(model.parameters()).dtype)
    except (StopIteration, AttributeError):
        return "fp32"
    return {"torch.bfloat16": "bf16", "torch.float16": "fp16"}.get(name, "fp32")


def make_backend(model, device: str | None = None, dtype: str | None = "fp32"):
    """Wrap a loaded model (torch module or Optimum ORT model) as a backend callable.

    ``dtype=None`` keeps the model's own dtype (:func:`model_dtype`).
    """
    if dtype is None:
        dtype = model_dtype(model)
    if hasattr(model, "session") and hasattr(model.session, "get_providers"):
        if dtype != "fp32":
            raise QAError("dtype applies to the torch backend; export with --optimize O4 for fp16 ONNX")
        return OrtBackend(model)
    return TorchBackend(model, device=device, dtype=dtype)


def load_backend(path: str | Path, backend: str = "auto", device: str | None = None, dtype: str = "fp32"):
    """Load a model folder and wrap it: the one-liner used by the CLI, evaluation and the handler."""
    model = load_model(path, backend=backend, device=device)
    return make_backend(model, device=None if hasattr(model, "session") else device, dtype=dtype)
