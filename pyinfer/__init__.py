"""pyinfer: a small, fast and honest LLM inference core.

Importing pyinfer imports numpy only: torch, triton and numba load when a backend asks for them.
"""
import os as _os

# Installed, setuptools maps the top-level kernels/ folder to pyinfer.kernels. Run from a bare
# checkout (PYTHONPATH=., as on the GPU machine), let the package path reach that folder too.
_root = _os.path.dirname(_os.path.dirname(_os.path.realpath(__file__)))
if (not _os.path.isdir(_os.path.join(_os.path.dirname(_os.path.realpath(__file__)), "kernels"))
        and _os.path.isfile(_os.path.join(_root, "kernels", "reference.py"))):
    __path__.append(_root)  # noqa: F821 - the package's own __path__

from .threads import init_env as _init_env  # noqa: E402

_init_env()      # OpenMP's idle threads spin briefly, then sleep (set before any OpenMP runtime loads): pyinfer.threads

from .config import PRESETS, CacheConfig, ModelConfig, SamplingParams, get_preset  # noqa: E402

__version__ = "0.1.0"
__all__ = ["LLM", "PRESETS", "CacheConfig", "CompletionOutput", "ModelConfig", "RequestOutput", "SamplingParams",
           "get_preset", "__version__"]


def __getattr__(name):
    """vLLM's names, ``from pyinfer import LLM, SamplingParams``: the engine loads on first use."""
    if name in ("LLM", "RequestOutput", "CompletionOutput"):
        from . import engine
        return getattr(engine, name)
    raise AttributeError(f"module 'pyinfer' has no attribute {name!r}")
