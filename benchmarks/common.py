"""What every benchmark records about where it ran, so a figure is never separated from its machine."""
from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path

from pyinfer.analysis.microbench import cpu_model

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    return {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "python": platform.python_version(),
            "date": datetime.date.today().isoformat()}


def write_json(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    return path
