"""What this machine can do: CPU model and flags, usable CPUs, and the precision that pays on it.

One copy for the library, the handler, the trainer and bench/, so a benchmark table and a serving
worker read the same facts. Pure functions over ``/proc`` and ``/sys`` text (paths are parameters so
tests can hand in fixtures); nothing is cached, nothing is global.
"""

from __future__ import annotations

import logging
import math
import os
import platform
from pathlib import Path

from qa_serving.errors import QAError

logger = logging.getLogger(__name__)

#: Flags that decide precision and int8 kernels (the ones a benchmark table names).
KEY_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # the one precision vocabulary (pipeline, CLI, handler, train)


def _cpuinfo(path: str | Path = "/proc/cpuinfo") -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's marketing name, e.g. ``"Intel(R) Xeon(R) Platinum 8480+"`` (``platform`` elsewhere)."""
    for line in _cpuinfo(cpuinfo).splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags of the first core (empty where ``/proc/cpuinfo`` is absent)."""
    for line in _cpuinfo(cpuinfo).splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def key_flags(flags: frozenset[str] | None = None) -> str:
    """The flags of :data:`KEY_FLAGS` this CPU has, space-separated, for benchmark tables and logs."""
    flags = cpu_flags() if flags is None else flags
    return " ".join(f for f in KEY_FLAGS if f in flags) or "none of avx2/avx512/amx"


def has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """True where bf16 matmuls run in hardware (avx512_bf16 or AMX); elsewhere torch emulates them,
    about 10x slower than fp32 for a training step."""
    flags = cpu_flags() if flags is None else flags
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def available_cpus(cgroup: str | Path = "/sys/fs/cgroup") -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup CPU quota (``docker --cpus``, a
    Kubernetes CPU limit), which ``os.cpu_count()`` ignores; so that workers x threads <= CPUs there too.

    Example: 16 CPUs and ``cpu.max`` = ``"200000 100000"`` (2 CPUs' worth of time) -> 2.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    cpus = min(cpus, os.cpu_count() or cpus)
    root = Path(cgroup)
    for quota_file, period_file in (("cpu.max", None), ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")):
        try:
            fields = (root / quota_file).read_text().split()
            quota, period = fields[0], fields[1] if period_file is None else (root / period_file).read_text()
            if quota not in ("max", "-1"):
                cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
            break
        except (OSError, ValueError, IndexError):
            continue
    return max(1, cpus)


def resolve_precision(
    precision: str = "auto", device: str = "cpu", flags: frozenset[str] | None = None, log: bool = True
) -> str:
    """``"auto"`` -> ``"bf16"`` on a CPU with native bf16 (avx512_bf16/AMX) or a CUDA GPU that supports
    it, else ``"fp32"``; explicit values pass through (checked). The choice is logged, with the reason.

    Example: ``resolve_precision("auto", "cpu", frozenset({"avx512_bf16"}))`` -> ``"bf16"``.
    """
    if precision not in PRECISIONS:
        raise QAError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    if precision != "auto":
        return precision
    if str(device).startswith("cuda"):
        import torch

        chosen = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
        reason = f"GPU {'supports' if chosen == 'bf16' else 'lacks'} bf16"
    else:
        native = has_native_bf16(flags)
        chosen = "bf16" if native else "fp32"
        reason = "CPU has avx512_bf16/AMX" if native else "CPU has no native bf16 (avx512_bf16/AMX)"
    if log:
        logger.info("precision auto -> %s (%s)", chosen, reason)
    return chosen
