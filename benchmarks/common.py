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


def write_dated(prefix: str, result: dict, out: str | None = None) -> Path:
    """result (made JSON-safe) to ``out``, or to results/<prefix>-<machine>-<date>.json; prints the path."""
    from pyinfer.commands.bench_serve import json_safe
    from pyinfer.engine.machine import machine_slug
    path = Path(out) if out else RESULTS / f"{prefix}-{machine_slug()}-{datetime.date.today().isoformat()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(result), indent=2))
    print(f"wrote {path}")
    return path
