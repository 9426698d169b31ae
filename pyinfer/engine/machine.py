"""Who measured: the machine, cores and library versions recorded beside every benchmark result."""
from __future__ import annotations

import datetime
import os
import platform

import numpy as np

from ..analysis.microbench import cpu_model


def machine_info() -> dict:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cores_used": cores,
        "cpu_count": os.cpu_count(),
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or "default",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def machine_slug() -> str:
    """The CPU model as a file-name fragment, e.g. intel-r-xeon-r-processor."""
    return "-".join("".join(ch if ch.isalnum() else " " for ch in cpu_model().lower()).split()) or "unknown-cpu"
