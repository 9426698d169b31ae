"""Shared fixtures: fresh seeded random generators (seed printed, so a failure can be replayed
with PYINFER_SEED=...), the tolerance table, and the real model files in ../shared/models."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

import numpy as np
import pytest

SHARED_MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "models"

# (dtype, backend) -> (rtol, atol) for comparisons against kernels/reference.py
TOLERANCES = {
    ("float32", "numpy"): (1e-6, 1e-6),
    ("float32", "c"): (1e-5, 1e-5),
    ("float32", "numba"): (1e-5, 1e-5),
    ("float32", "triton"): (1e-4, 1e-4),
    ("float16", "triton"): (2e-2, 2e-2),
    ("bfloat16", "triton"): (6e-2, 6e-2),
}


def tolerance(backend: str, dtype: str = "float32") -> dict:
    rtol, atol = TOLERANCES[(dtype, backend)]
    return {"rtol": rtol, "atol": atol}


@pytest.fixture
def seed() -> int:
    value = int(os.environ.get("PYINFER_SEED", secrets.randbits(31)))
    print(f"seed={value} (replay with PYINFER_SEED={value})")
    return value


@pytest.fixture
def rng(seed) -> np.random.Generator:
    return np.random.default_rng(seed)


def poisoned(shape, dtype=np.float32) -> np.ndarray:
    """An output buffer full of NaN, so any element a kernel fails to write shows up."""
    return np.full(shape, np.nan, dtype=dtype)


@pytest.fixture(scope="session")
def stories260k() -> dict[str, Path]:
    files = {"model": SHARED_MODELS / "stories260K.bin", "tokenizer": SHARED_MODELS / "tok512.bin",
             "greedy": SHARED_MODELS / "stories260K.greedy.once-upon-a-time.txt"}
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        pytest.skip(f"real model files missing: {missing} (expected in ../shared/models)")
    return files
