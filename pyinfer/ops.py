"""The one registry: op name -> numpy reference, cost function, and implementation per backend.

A backend is a module exposing ``load() -> dict[op name, callable]`` (raising ImportError or
OSError when its toolchain or device is missing). Adding a backend is one module plus one line in
BACKENDS; adding a kernel is one entry in that backend's dict. Ops the backend lacks run the
numpy reference, and ``Ops.fallbacks`` says which, so a report never claims a kernel it did not run.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable

import numpy as np

from . import op_costs
from .analysis.cost import Cost, CostCounter


@dataclass(frozen=True)
class OpSpec:
    name: str
    reference: Callable
    cost: Callable[..., Cost]


def _build_registry() -> MappingProxyType:
    from .kernels import reference as ref
    names = ["embedding", "rmsnorm", "rope", "matmul", "silu_mul", "add", "bias_add", "kv_cache_write",
             "attention_prefill", "paged_prefill_attention", "paged_decode_attention",
             "argmax", "softmax", "matmul_w8a16", "matmul_w8a8", "matmul_w4a16", "matmul_w4a8"]
    from .kernels import fused_reference as fused
    registry = {n: OpSpec(n, getattr(ref, n), getattr(op_costs, n)) for n in names}
    # A whole decode step in one call; the model uses it only where a backend has it natively.
    registry["decode_step"] = OpSpec("decode_step", fused.decode_step, fused.decode_step_cost)
    return MappingProxyType(registry)


# Ops that always run on host (numpy) arrays: sampling reads the logits the model returns.
HOST_OPS = frozenset({"argmax", "softmax"})
# Ops a model calls only when the backend has them natively, so they are never a "fallback".
NATIVE_ONLY_OPS = frozenset({"decode_step"})


REGISTRY = _build_registry()

# backend name -> module implementing it (None: the numpy reference itself)
BACKENDS = MappingProxyType({
    "numpy": None,
    "c": "pyinfer.kernels.c_cpu",
    "numba": "pyinfer.kernels.numba_cpu",
    "triton": "pyinfer.kernels.triton_gpu",
    "triton-fp16": "pyinfer.kernels.triton_gpu.fp16",
})


class NumpyArrays:
    """How the model allocates and moves arrays. A backend whose kernels take other arrays (torch
    CUDA tensors for Triton) exposes ``arrays()`` returning an object with these methods."""

    is_numpy = True

    @staticmethod
    def empty(shape, dtype=np.float32):
        return np.empty(shape, dtype)

    @staticmethod
    def zeros(shape, dtype=np.float32):
        return np.zeros(shape, dtype)

    @staticmethod
    def from_numpy(a):
        return a

    @staticmethod
    def to_numpy(a):
        return a


# The default backend: the first of these that loads here (the numpy reference always does).
DEFAULT_ORDER = ("c", "numba", "numpy")


def default_backend() -> str:
    """The fastest backend that loads here: c, else numba, else numpy (the reference)."""
    for name in DEFAULT_ORDER:
        try:
            load_backend(name)
            return name
        except BackendUnavailable:
            continue
    return "numpy"


def resolve_backend(name: str | None) -> str:
    """``name``, or the default backend when it is None, "" or "auto"."""
    return default_backend() if name in (None, "", "auto") else name


class BackendUnavailable(RuntimeError):
    """A backend could not load here (no compiler output, no GPU, missing package)."""


def load_backend(name: str) -> dict[str, Callable]:
    """The backend's native kernels by op name; raises BackendUnavailable with the reason."""
    return _load(name)[0]


def _load(name: str):
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(BACKENDS)}")
    module_name = BACKENDS[name]
    if module_name is None:
        return {}, NumpyArrays
    try:
        module = importlib.import_module(module_name)
        impls = module.load()
        arrays = module.arrays() if hasattr(module, "arrays") else NumpyArrays
    except Exception as e:  # noqa: BLE001 - any failure to load a toolchain means "unavailable", reported
        raise BackendUnavailable(f"backend {name!r} is unavailable here: {type(e).__name__}: {e}") from e
    unknown = set(impls) - set(REGISTRY)
    if unknown:
        raise RuntimeError(f"backend {name!r} registers unknown ops {sorted(unknown)}")
    from .threads import apply
    apply()                         # a pool this backend brought in takes the process's thread count
    return impls, arrays


def available_backends() -> dict[str, str | None]:
    """backend name -> None when it loads here, else the reason it does not."""
    status = {}
    for name in BACKENDS:
        try:
            load_backend(name)
            status[name] = None
        except BackendUnavailable as e:
            status[name] = str(e.__cause__ or e)
    return status


class Ops:
    """Facade the model calls: ``ops.rmsnorm(out, x, w, eps)``. With a CostCounter every call
    also adds its Cost to it (an instrumented run); without one, calls go straight to the kernel.
    ``execute=False`` (with a counter) only counts: a dry run that replays a run's shapes to
    account for it without timing the accounting."""

    def __init__(self, backend: str = "numpy", counter: CostCounter | None = None, execute: bool = True):
        if not execute and counter is None:
            raise ValueError("a dry run (execute=False) needs a CostCounter")
        impls, self.arrays = _load(backend)
        self.backend = backend
        self.counter = counter
        self.native = tuple(sorted(impls))
        self.fallbacks = tuple(sorted(set(REGISTRY) - set(impls) - NATIVE_ONLY_OPS)) if backend != "numpy" else ()
        for name, spec in REGISTRY.items():
            fn = impls.get(name, spec.reference)
            if name not in impls and name not in HOST_OPS and not self.arrays.is_numpy and execute:
                fn = _missing_on_device(name, backend)
            if counter is not None:
                fn = _counted(name, fn if execute else _returns_out, spec.cost, counter)
            setattr(self, name, fn)

    def describe(self) -> str:
        if self.backend == "numpy":
            return "backend numpy (the reference)"
        if not self.fallbacks:
            return f"backend {self.backend}: every op native"
        return (f"backend {self.backend}: native {', '.join(self.native) or 'none'}; "
                f"numpy reference for {', '.join(self.fallbacks)}")


def _missing_on_device(name: str, backend: str) -> Callable:
    """The numpy reference cannot run on a device backend's tensors: say so when it is needed."""
    def call(*args):
        raise NotImplementedError(
            f"op {name} has no {backend} kernel and its numpy reference cannot take {backend} tensors; "
            f"use a format with a {backend} kernel (e.g. int8 or int4-gG rather than W8A8/W4A8)")
    call.__name__ = name
    return call


def _returns_out(out, *args):
    return out


def _counted(name: str, fn: Callable, cost: Callable[..., Cost], counter: CostCounter) -> Callable:
    def call(*args):
        counter.add(name, cost(*args))
        return fn(*args)
    call.__name__ = name
    return call
