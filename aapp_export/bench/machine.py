"""The machine a benchmark ran on: CPU, cores, memory, versions, providers, load; this process's
peak and current RSS; the CPU time every process spent busy (to show a noisy measurement)."""

from __future__ import annotations

import os
import platform
import resource
from pathlib import Path
from typing import Any


def proc_status_mb(field: str) -> float:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``, ``RssAnon``...), MB; 0 without /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def peak_rss_mb() -> float:
    """Peak resident set of this process (VmHWM), MB."""
    return proc_status_mb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def busy_jiffies() -> int | None:
    """CPU time all processes spent busy since boot (clock ticks), from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # minus idle and iowait


def package_version(module: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return None


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        return next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                    if l.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def machine_info() -> dict[str, Any]:
    import onnxruntime

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
            "onnxruntime_genai": package_version("onnxruntime-genai"), "torch": package_version("torch"),
            "transformers": package_version("transformers"), "provider": "CPUExecutionProvider",
            "available_providers": onnxruntime.get_available_providers()}
