"""The repository's top-level kernels/ folder must not shadow Hugging Face's `kernels` package:
transformers' hub-kernels integration imports it when it is installed. pyinfer's own kernels are
reached only as `pyinfer.kernels`. (Run from a checkout where PYTHONPATH holds the repository root
itself, `import kernels` finds the folder: that setup is exactly what this test refuses.)"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_hf_kernels_package_is_the_real_one():
    repo_on_path = [p for p in sys.path if p and Path(p).resolve() == REPO]
    assert not repo_on_path, f"the repository root {REPO} is on sys.path: its kernels/ shadows HF's"
    kernels = importlib.import_module("kernels")
    assert Path(kernels.__file__).resolve().parent != (REPO / "kernels").resolve(), kernels.__file__
    assert hasattr(kernels, "CUDAProperties") and hasattr(kernels, "get_kernel")
    hub = importlib.import_module("transformers.integrations.hub_kernels")   # imports `kernels`
    assert hub is not None


def test_pyinfer_kernels_is_the_repository_folder():
    from pyinfer.kernels import reference
    assert Path(reference.__file__).resolve().parent.name == "kernels"
    assert hasattr(reference, "rope") and hasattr(reference, "plain_inv_freq")
