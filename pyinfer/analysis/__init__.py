"""The economics layer: FLOPs and bytes per op (cost, estimate), a hardware catalog (hardware,
catalog, microbench), the roofline, cost and energy per token (economics), predicted against
measured (calibrate) and pictures (plots, needing matplotlib).

    from pyinfer.analysis import estimate, get_device, predict, token_economics
    est = estimate(PRESETS["llama-7b"], batch=1, context=512, dtype="float16")
    prefill, decode = predict(est.prefill, get_device("h100")), predict(est.decode, get_device("h100"))

Only cost is imported by pyinfer.ops; the modules below import no GPU library and no matplotlib.
"""
from .cost import Cost, CostCounter
from .estimate import Estimate, OpCost, PhaseCost, count, estimate, step_cost
from .hardware import Device, get_device, get_devices, load_device_file, this_cpu
from .roofline import Efficiency, OpPoint, PhaseRoofline, achieved_fraction, predict, predict_estimate, where_run_sits
from .economics import DoesNotFit, TokenEconomics, kv_bytes_per_token, plan, token_economics, weight_bytes
from .speculative import SpecEconomics, expected_tokens_per_step, speculative_economics, speculative_speedup

__all__ = ["Cost", "CostCounter", "Estimate", "OpCost", "PhaseCost", "count", "estimate", "step_cost", "Device",
           "get_device", "get_devices", "load_device_file", "this_cpu", "Efficiency", "OpPoint", "PhaseRoofline",
           "achieved_fraction", "predict", "predict_estimate", "where_run_sits", "TokenEconomics",
           "kv_bytes_per_token", "plan", "token_economics", "weight_bytes", "DoesNotFit", "SpecEconomics",
           "expected_tokens_per_step", "speculative_economics", "speculative_speedup"]
