"""The roofline study's report: JSON, the table and the memory-level sentence, from a SweepResult."""
from __future__ import annotations

import datetime
from dataclasses import asdict

from ..analysis.calibrate import efficiency_json
from ..analysis.hardware import Device
from .roofline_sweep import SweepResult, crossing_measured, crossing_predicted
from .timing import OP_CLASSES


def memory_level(weight_bytes: float, device: Device) -> dict:
    """Which level a step's weights stream from: the weights against the last-level cache, and the
    bandwidth this-cpu's measured curve gives that working set against its DRAM and cache figures."""
    llc = device.sram_bytes
    bw = device.bandwidth(weight_bytes)
    cache_bw = device.extra.get("cache_read_bw")
    if llc is None:
        level = "unknown (no cache size measured)"
    elif weight_bytes <= 0.5 * llc:
        level = "last-level cache"
    elif weight_bytes < 2 * llc:
        level = "partly last-level cache, partly DRAM (the weights are within 2x of the cache)"
    else:
        level = "DRAM"
    return {"weight_bytes": weight_bytes, "llc_bytes": llc, "level": level,
            "curve_gb_per_s_at_weights": bw / 1e9, "dram_read_gb_per_s": device.memory_bw / 1e9,
            "cache_read_gb_per_s": None if cache_bw is None else cache_bw / 1e9}


def build_json(sweep: SweepResult, model_name: str, source: str, backend: str, threads: int, device: Device,
               context: int, weight_bytes: float, busy_warning: str | None) -> dict:
    config_eff = sweep.efficiency
    meas = crossing_measured(sweep.decode)
    pred_cal = crossing_predicted(sweep.config, sweep.weights, context, device, config_eff)
    pred_nom = crossing_predicted(sweep.config, sweep.weights, context, device, None)
    ratio = None
    if meas.get("interpolated_batch") and pred_cal:
        ratio = meas["interpolated_batch"] / pred_cal
    mem = memory_level(weight_bytes, device)
    d1 = sweep.decode[0]
    mem["measured_batch1_weight_gb_per_s"] = d1.bytes["weights"] / d1.step_s / 1e9
    return {
        "study": "roofline", "model": model_name, "source": source, "backend": backend, "weights": sweep.weights,
        "threads": threads, "date": datetime.date.today().isoformat(), "machine": device.full_name,
        "device": {"name": device.name, "read_gb_per_s": device.memory_bw / 1e9,
                   "peak_gflop_per_s": {k: v / 1e9 for k, v in device.peak_flops.items()},
                   "llc_bytes": device.sram_bytes, "bw_curve": [list(p) for p in device.bw_curve]},
        "config": asdict(sweep.config), "context": context, "stopped": sweep.stopped, "busy_warning": busy_warning,
        "op_class_timing": "measured: every op timed through a wrapper on the op-by-op path; the decode "
                           "step_s is the production step (the C fused decode step where the backend has it)",
        "calibration": {"how": sweep.calibration_how,
                        "largest_decode_compute_fraction": sweep.decode[-1].compute_fraction,
                        "longest_prefill_compute_fraction": sweep.prefill[-1].compute_fraction if sweep.prefill else None,
                        "efficiency": efficiency_json(config_eff)},
        "crossing": {"definition": "smallest batch whose decode step takes >= 2x the batch-1 step",
                     "measured": meas, "predicted_calibrated": pred_cal, "predicted_nominal": pred_nom,
                     "measured_over_predicted": ratio},
        "memory_level": mem,
        "decode": [p.to_dict() for p in sweep.decode], "prefill": [p.to_dict() for p in sweep.prefill]}


def _g(x, fmt=".1f") -> str:
    return "-" if x is None else format(x, fmt)


def format_table(data: dict) -> str:
    lines = [f"study roofline: {data['model']} {data['weights']}, backend {data['backend']}, "
             f"{data['threads']} thread(s), {data['machine']}, {data['date']}",
             f"this-cpu: read {data['device']['read_gb_per_s']:.1f} GB/s, peaks " +
             ", ".join(f"{k} {v:.1f}" for k, v in data["device"]["peak_gflop_per_s"].items()) + " GFLOP/s"]
    head = (f"{'phase':<8}{'batch':>6}{'tokens':>7}{'step ms':>10}{'pred ms':>9}{'nom ms':>9}{'x b1':>6}"
            f"{'GFLOP/s':>9}{'GB/s':>7}  " + "  ".join(f"{c + ' ms/GF/s/GB/s':>24}" for c in OP_CLASSES) +
            f"{'untimed ms':>11}")
    lines.append(head)
    t1 = data["decode"][0]["step_s"]
    for phase in ("decode", "prefill"):
        for p in data[phase]:
            r = p["rates"]
            cls = "  ".join(f"{1e3 * p['class_s'].get(c, 0):>8.2f}/{_g(r[c]['gflop_per_s']):>7}/"
                            f"{_g(r[c]['gb_per_s']):>7}" for c in OP_CLASSES)
            lines.append(f"{phase:<8}{p['batch']:>6}{p['tokens']:>7}{1e3 * p['step_s']:>10.2f}"
                         f"{1e3 * p['calibrated_s']:>9.2f}{1e3 * p['nominal_s']:>9.2f}"
                         f"{(p['step_s'] / t1 if phase == 'decode' else float('nan')):>6.2f}"
                         f"{r['step']['gflop_per_s']:>9.1f}{r['step']['gb_per_s']:>7.1f}  {cls}"
                         f"{1e3 * p['class_s'].get('untimed', 0):>11.2f}")
    x = data["crossing"]
    m = x["measured"]
    lines.append(f"crossing (decode step >= 2x batch 1): measured at batch {m.get('first_batch_at_2x')} "
                 f"(interpolated {_g(m.get('interpolated_batch'))}), predicted {x['predicted_calibrated']} "
                 f"calibrated / {x['predicted_nominal']} nominal; measured/predicted "
                 f"{_g(x['measured_over_predicted'], '.2f')}")
    mem = data["memory_level"]
    cal = data["calibration"]
    lines.append(f"calibrated: memory efficiency {cal['efficiency']['memory']:.2f}, compute efficiency "
                 f"{cal['efficiency']['compute']:.2f} ({cal['how']}); measured share of the peak: largest decode batch "
                 f"{100 * cal['largest_decode_compute_fraction']:.0f}%, longest prefill "
                 f"{_g(None if cal['longest_prefill_compute_fraction'] is None else 100 * cal['longest_prefill_compute_fraction'], '.0f')}%")
    lines.append(f"weights {mem['weight_bytes'] / 1e6:.0f} MB vs last-level cache "
                 f"{_g(None if mem['llc_bytes'] is None else mem['llc_bytes'] / 1e6, '.0f')} MB: they stream from "
                 f"{mem['level']}; batch 1 read them at {mem['measured_batch1_weight_gb_per_s']:.1f} GB/s "
                 f"(this-cpu DRAM {mem['dram_read_gb_per_s']:.1f}, cache {_g(mem['cache_read_gb_per_s'])} GB/s)")
    lines.append("columns: step = production step (fused C decode where native); pred = calibrated roofline; "
                 "nom = nominal roofline; per class: op-by-op ms / GFLOP/s / GB/s (FLOPs and bytes analytic)")
    if data.get("busy_warning"):
        lines.append(f"warning: {data['busy_warning']}")
    lines.append(f"stopped: {data['stopped']}")
    return "\n".join(lines)
