"""What every Triton op file shares: argument checks, the backend context, small jit helpers.

Imported only by ``load()`` (or by tests that set TRITON_INTERPRET=1 first): importing it
imports torch and triton, and Triton decides at decoration time whether a kernel is compiled
for the GPU or run by its interpreter.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import triton
import triton.language as tl


def interpreting() -> bool:
    """True when Triton runs kernels in its interpreter (TRITON_INTERPRET, read as Triton reads it)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on", "y")


FLOAT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
INDEX_DTYPES = (torch.int32, torch.int64)


@dataclass
class Context:
    """One backend instance: where its tensors live, its float dtype, and its per-instance caches
    (made in ``load()``, dropped with the Ops object that holds it; never a module global)."""
    device: torch.device
    float_dtype: torch.dtype = torch.float32
    interpret: bool = False
    sm_count: int = 1                          # streaming multiprocessors (1 under the interpreter)
    weights: object = None                     # layout.WeightCache: GPU layouts of quantized weights


def make_context(device: str | torch.device | None = None, float_dtype: str = "float32") -> Context:
    from .layout import WeightCache
    interpret = interpreting()
    if device is None:
        device = "cpu" if interpret else "cuda"
    device = torch.device(device)
    if float_dtype not in FLOAT_DTYPES:
        raise ValueError(f"float_dtype {float_dtype!r} is not one of {', '.join(FLOAT_DTYPES)}")
    sm_count = 1
    if device.type == "cuda" and not interpret:
        sm_count = torch.cuda.get_device_properties(device).multi_processor_count
    return Context(device, FLOAT_DTYPES[float_dtype], interpret, sm_count, WeightCache())


def device_of(ctx: Context | None, t) -> torch.device:
    return ctx.device if ctx is not None else t.device


# ---- argument checks: ValueError naming the argument, before any kernel sees a pointer ----------

def check_tensor(name: str, t, device: torch.device, ndim: int | None = None, dtypes=None,
                 last_contiguous: bool = True, contiguous: bool = False) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch tensor on {device}, got {type(t).__name__}")
    if t.device.type != device.type or (device.index is not None and t.device.index != device.index):
        raise ValueError(f"{name} is on {t.device}, the triton backend's tensors live on {device}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise ValueError(f"{name} must be one of {names}, got {str(t.dtype).replace('torch.', '')}")
    if contiguous and not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous")
    if last_contiguous and t.dim() and t.shape[-1] > 1 and t.stride(-1) != 1:
        raise ValueError(f"{name} must be contiguous in its last dimension")


def check_shape(name: str, t, shape: tuple) -> None:
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)}")


def check_float(name: str, t, device, ndim=None, contiguous=False) -> None:
    check_tensor(name, t, device, ndim, tuple(FLOAT_DTYPES.values()), contiguous=contiguous)


def check_index(name: str, t, device, ndim=None) -> None:
    check_tensor(name, t, device, ndim, INDEX_DTYPES, contiguous=True)


def pow2(n: int, lo: int = 1) -> int:
    return max(lo, triton.next_power_of_2(max(1, int(n))))


def dot_upcast(dtype: torch.dtype, ctx_interpret: bool) -> bool:
    """Run tl.dot in float32 with IEEE products: always for float32 inputs (TF32 would miss the
    1e-4 tolerance), and for bfloat16 under the interpreter (its bfloat16 dot is wrong)."""
    return dtype == torch.float32 or (ctx_interpret and dtype == torch.bfloat16)


def helper(fn):
    """Decorator for device functions that kernels call: @triton.jit on the GPU; under the
    interpreter the plain function, because Triton's interpreter re-patches triton.language on
    every call of a nested jit function (~0.7 ms each, most of a small kernel's test time).
    Helpers use only tl operations, so both paths run the same code."""
    return fn if interpreting() else triton.jit(fn)


@helper
def mma(a, b, acc, UPCAST: tl.constexpr):
    """acc + a @ b on tensor cores in a's dtype, or in float32 IEEE when UPCAST."""
    if UPCAST:
        res = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        res = tl.dot(a, b.to(a.dtype), acc)
    return res


def launch_opts(cfg: dict) -> tuple[dict, dict]:
    """Split a config dict into constexpr meta-parameters and launch options."""
    meta = {k: v for k, v in cfg.items() if k not in ("num_warps", "num_stages")}
    opts = {k: cfg[k] for k in ("num_warps", "num_stages") if k in cfg}
    return meta, opts
