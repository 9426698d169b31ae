"""Time a forward pass op by op: every op of an ``Ops`` facade wrapped in a timer that adds the call's
wall time to its op class. Measured, not derived: the sum of the classes plus the Python between the
calls ("untimed") is the step's wall time. Only the op-by-op path can be split this way; the C
backend's fused decode step (one call for every layer) is timed as a whole.

Op classes, in the roofline's terms:
    weights     the linear layers (matmul and its quantized kernels): they read every weight once a step
    attention   paged decode / prefill attention: reads each sequence's own KV cache
    rest        norms, RoPE, residual adds, SiLU, KV writes, embedding, argmax, ...
"""
from __future__ import annotations

import time

from ..ops import REGISTRY, Ops

WEIGHT_OPS = frozenset({"matmul", "matmul_w8a16", "matmul_w8a8", "matmul_w4a16", "matmul_w4a8"})
ATTENTION_OPS = frozenset({"paged_decode_attention", "paged_prefill_attention", "attention_prefill"})
OP_CLASSES = ("weights", "attention", "rest")
# estimate.step_cost's roles of each class (the analytic side of the same split)
WEIGHT_ROLES = frozenset({"wq", "wk", "wv", "wo", "w1", "w2", "w3", "lm_head"})
ATTENTION_ROLES = frozenset({"attention"})


def op_class(op: str) -> str:
    """The class of an ops-registry name."""
    return "weights" if op in WEIGHT_OPS else "attention" if op in ATTENTION_OPS else "rest"


def role_class(role: str) -> str:
    """The class of an estimate role (wq, attention, attn_norm, ...)."""
    return "weights" if role in WEIGHT_ROLES else "attention" if role in ATTENTION_ROLES else "rest"


class OpClassTimer:
    """Wraps every registered op of ``ops`` (in place) so each call's wall time adds to its class.

        timer = OpClassTimer(model.ops); timer.reset(); model.forward(...); timer.seconds["weights"]
    """

    def __init__(self, ops: Ops, clock=time.perf_counter):
        self.seconds = {c: 0.0 for c in OP_CLASSES}
        self.calls = {c: 0 for c in OP_CLASSES}
        self._clock = clock
        for name in REGISTRY:
            fn = getattr(ops, name, None)
            if fn is not None and name != "decode_step":
                setattr(ops, name, self._wrap(fn, op_class(name)))

    def _wrap(self, fn, cls: str):
        clock, seconds, calls = self._clock, self.seconds, self.calls

        def timed(*args):
            t0 = clock()
            try:
                return fn(*args)
            finally:
                seconds[cls] += clock() - t0
                calls[cls] += 1
        timed.__name__ = getattr(fn, "__name__", "op")
        return timed

    def reset(self) -> None:
        for c in OP_CLASSES:
            self.seconds[c] = 0.0
            self.calls[c] = 0

    def snapshot(self) -> dict[str, float]:
        return dict(self.seconds)
