"""The study: measured sweeps and lever waterfalls on this machine, beside the analytic model.

    roofline_sweep   decode at batch 1, 2, 4, ... and prefill at 1 .. context tokens: per step and per op
                     class (weight matmuls, attention, the rest) time, FLOPs, bytes, GFLOP/s, GB/s; the
                     measured and predicted memory-to-compute crossing
    levers           one seeded request trace through the engine with each software lever switched on in
                     turn: throughput, latency, $ and J per token, quality, prediction beside each
"""
from .timing import OP_CLASSES, OpClassTimer, op_class

__all__ = ["OP_CLASSES", "OpClassTimer", "op_class"]
