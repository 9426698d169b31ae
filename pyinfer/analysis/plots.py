"""Pictures (matplotlib, Agg backend, imported only when a plot is asked for): the roofline of each
device with every op placed on it per phase and batch, and throughput / latency / cost curves over
batch size. Install with `pip install pyinfer[plot]`."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .economics import TokenEconomics
from .hardware import Device
from .roofline import PhaseRoofline

# roles drawn as one family (same intensity in every layer)
FAMILY = {"wq": "qkv", "wk": "qkv", "wv": "qkv", "wo": "wo", "w1": "mlp", "w3": "mlp", "w2": "mlp",
          "lm_head": "head", "attention": "attn", "attn_norm": "norm", "ffn_norm": "norm", "final_norm": "norm",
          "rope_q": "rope", "rope_k": "rope", "kv_write": "kv write", "silu_mul": "silu", "residual": "add",
          "embedding": "embed"}


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("plots need matplotlib: pip install 'pyinfer[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _families(r: PhaseRoofline) -> list[tuple[str, float, float]]:
    """(family, intensity, attainable FLOP/s) per op family of a step."""
    groups: dict[str, list] = {}
    for p in r.by_role():
        groups.setdefault(FAMILY.get(p.role, p.role), []).append(p)
    out = []
    for fam, ps in groups.items():
        flops = sum(p.cost.flops for p in ps)
        nbytes = sum(p.cost.bytes_total for p in ps)
        t = sum(p.time_s for p in ps)
        if flops > 0 and nbytes > 0:
            out.append((fam, flops / nbytes, flops / t))
    return out


def _clusters(points: list[tuple[str, float, float]], tol: float = 2.0) -> list[tuple[str, float, float]]:
    """Points within a factor ``tol`` of each other on both axes share one label listing their families."""
    out: list[list] = []
    for fam, x, y in sorted(points, key=lambda p: p[1]):
        for c in out:
            if c[1] / tol <= x <= c[1] * tol and c[2] / tol <= y <= c[2] * tol:
                if fam not in c[0]:
                    c[0].append(fam)
                break
        else:
            out.append([[fam], x, y])
    return [(", ".join(c[0]), c[1], c[2]) for c in out]


def roofline_plot(panels: Sequence[tuple[Device, Sequence[tuple[str, PhaseRoofline]]]], path: str | Path,
                  title: str = "") -> Path:
    """roofline_figure saved as a PNG at ``path``."""
    return _save(roofline_figure(panels, title), path)


def roofline_figure(panels: Sequence[tuple[Device, Sequence[tuple[str, PhaseRoofline]]]], title: str = ""):
    """One log-log roofline per device: memory slope and compute roofs of the peak keys its ops use,
    the ridge points, and each op family placed at (intensity, attainable FLOP/s), one marker per phase
    and colour per label (e.g. batch size)."""
    plt = _pyplot()
    n = len(panels)
    if n == 0:
        raise ValueError("nothing to plot")
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 5.0 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (device, steps) in zip(axes.flat, panels):
        keys = sorted({p.compute for _, r in steps for p in r.ops}, key=lambda k: -device.peak(k))
        points = [pt for _, r in steps for pt in _families(r)]
        lo = min([pt[1] for pt in points] + [0.05]) / 3
        hi = max([pt[1] for pt in points] + [device.ridge(k) for k in keys]) * 5
        bw = device.memory_bw
        for i, key in enumerate(keys):
            peak, ridge = device.peak(key), device.ridge(key)
            ax.plot([lo, ridge, hi], [lo * bw, peak, peak], color="0.25", lw=1.6 - 0.4 * min(i, 2),
                    ls="-" if i == 0 else "--")
            ax.axvline(ridge, color="0.6", ls=":", lw=0.8)
            ax.annotate(f"{key} peak {peak / 1e12:.3g} TFLOP/s, ridge {ridge:.3g} FLOP/B", (ridge, peak),
                        textcoords="offset points", xytext=(-4, 5 + 11 * i), fontsize=7.5, color="0.2", ha="right")
        ax.annotate(f"{bw / 1e9:.4g} GB/s", (lo * 1.5, lo * 1.5 * bw), textcoords="offset points",
                    xytext=(2, 8), fontsize=7.5, color="0.2", rotation=35)
        if device.bw_curve:                             # measured: the fastest cache level's slope too
            n0, cache_bw = device.bw_curve[0]
            top = device.peak(keys[0]) / cache_bw
            ax.plot([lo, top], [lo * cache_bw, top * cache_bw], color="0.45", lw=0.9, ls="-.")
            ax.annotate(f"{cache_bw / 1e9:.4g} GB/s (working set {n0 / 2 ** 20:.3g} MiB, in cache)",
                        (lo * 1.5, lo * 1.5 * cache_bw), textcoords="offset points", xytext=(2, 8), fontsize=7,
                        color="0.35", rotation=35)
        placed = []
        for j, (label, r) in enumerate(steps):
            marker = "o" if r.phase == "decode" else "s"
            fams = _families(r)
            color = colors[j % len(colors)]
            if r.phase == "decode":                      # filled circles on top
                style = dict(s=30, color=color, edgecolor="black", linewidth=0.4, zorder=4 + j)
            else:                                        # hollow squares beneath, so decode points show through
                style = dict(s=70, facecolor="none", edgecolor=color, linewidth=1.4, zorder=3)
            ax.scatter([f[1] for f in fams], [f[2] for f in fams], marker=marker, label=f"{r.phase} {label}",
                       **style)
            placed += fams
        level, last_x = 0, None
        for names, x, y in _clusters(placed):              # neighbours' labels step further down
            level = level + 1 if last_x is not None and x < last_x * 15 else 0
            last_x = x
            ax.annotate(names, (x, y), textcoords="offset points", xytext=(10, -14 - 13 * level), fontsize=7,
                        color="0.1", arrowprops=dict(arrowstyle="-", color="0.5", lw=0.5))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_xlabel("arithmetic intensity (FLOP / byte)")
        ax.set_ylabel("attainable performance (FLOP/s)")
        ax.set_title(f"{device.full_name}", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def curves_plot(series: dict[str, Sequence[TokenEconomics]], path: str | Path, title: str = "") -> Path:
    """curves_figure saved as a PNG at ``path``."""
    return _save(curves_figure(series, title), path)


def curves_figure(series: dict[str, Sequence[TokenEconomics]], title: str = ""):
    """Decode throughput, time per output token and $ per million output tokens against batch size,
    one line per series (e.g. device and weight format)."""
    plt = _pyplot()
    from matplotlib import ticker
    if not series:
        raise ValueError("nothing to plot")
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    panels = (("output tokens / s", lambda e: e.tokens_per_s),
              ("time per output token (ms)", lambda e: e.tpot_s * 1e3),
              ("$ per 1M output tokens", lambda e: e.usd_per_m_output))
    for ax, (ylabel, fn) in zip(axes, panels):
        for label, rows in series.items():
            pts = [(e.batch, fn(e)) for e in rows if fn(e) is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3.5, label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("batch size (sequences decoding together)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def _save(fig, path) -> Path:
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


# ---- the study (pyinfer study roofline / levers): plots drawn from the commands' JSON ----------

def study_roofline_plot(data: dict, path: str | Path) -> Path:
    """study_roofline_figure saved as a PNG at ``path``."""
    return _save(study_roofline_figure(data), path)


def study_roofline_figure(data: dict):
    """Left: this machine's measured roofline (DRAM and cache bandwidth, the peak) with every measured
    decode and prefill step on it and the predicted decode curves (calibrated, nominal). Right: decode
    step time against batch, measured and predicted, the 2x-batch-1 line and both crossings."""
    plt = _pyplot()
    from matplotlib import ticker
    dec, pre, dev = data["decode"], data["prefill"], data["device"]
    if not dec:
        raise ValueError("nothing to plot: no decode points")
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(14, 5.6))
    pts = [p["intensity"] for p in dec + pre]
    xs = [min(pts) / 3, max(pts) * 3]
    bw = dev["read_gb_per_s"]
    peak_key = "int8" if data["weights"].endswith("-a8") else "fp32"
    peak = dev["peak_gflop_per_s"][peak_key]
    ax.plot(xs, [min(peak, bw * x) for x in xs], color="black", lw=1.5, label=f"DRAM {bw:.1f} GB/s")
    cache = max((b for _, b in dev.get("bw_curve", [])), default=None)
    if cache:
        cgb = cache / 1e9
        ax.plot(xs, [min(peak, cgb * x) for x in xs], color="gray", lw=1, ls=":", label=f"cache {cgb:.0f} GB/s")
    ax.axhline(peak, color="black", lw=0.8, ls="--")
    ax.text(xs[0] * 1.1, peak * 1.08, f"{peak_key} peak {peak:.0f} GFLOP/s (measured)", fontsize=8)

    def rate(p, key):
        return p["flops"]["total"] / p[key] / 1e9
    ax.plot([p["intensity"] for p in dec], [rate(p, "step_s") for p in dec], "o", color="C0", ms=6,
            label="decode, measured (batch 1, 2, 4, ...)")
    ax.plot([p["intensity"] for p in dec], [rate(p, "calibrated_s") for p in dec], "-", color="C0", lw=1,
            label="decode, predicted (calibrated)")
    ax.plot([p["intensity"] for p in dec], [rate(p, "nominal_s") for p in dec], "--", color="C0", lw=0.8,
            alpha=0.6, label="decode, predicted (nominal)")
    if pre:
        ax.plot([p["intensity"] for p in pre], [rate(p, "step_s") for p in pre], "s", color="C1", ms=5,
                label="prefill, measured (1 .. context tokens)")
        ax.plot([p["intensity"] for p in pre], [rate(p, "calibrated_s") for p in pre], "-", color="C1", lw=1)
    for p in (dec[0], dec[-1]):                          # two labels only: first and last batch
        ax.annotate(f"B={p['batch']}", (p["intensity"], rate(p, "step_s")), textcoords="offset points",
                    xytext=(6, -12), fontsize=8, color="C0")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("arithmetic intensity of the step (FLOP / byte)")
    ax.set_ylabel("achieved GFLOP/s")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")

    b = [p["batch"] for p in dec]
    bx.plot(b, [1e3 * p["step_s"] for p in dec], "o-", color="C0", label="measured")
    bx.plot(b, [1e3 * p["calibrated_s"] for p in dec], "-", color="C2", label="predicted (calibrated)")
    bx.plot(b, [1e3 * p["nominal_s"] for p in dec], "--", color="C3", label="predicted (nominal)")
    bx.axhline(2e3 * dec[0]["step_s"], color="gray", lw=0.8, ls=":", label="2 x measured batch-1 step")
    x = data["crossing"]
    mb = x["measured"].get("interpolated_batch")
    if mb:
        bx.axvline(mb, color="C0", lw=1, ls="-.", label=f"measured crossing B~{mb:.1f}")
    if x.get("predicted_calibrated"):
        bx.axvline(x["predicted_calibrated"], color="C2", lw=1, ls="-.",
                   label=f"predicted crossing B={x['predicted_calibrated']}")
    bx.set_xscale("log", base=2)
    bx.set_yscale("log")
    bx.xaxis.set_major_formatter(plain)
    bx.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    bx.yaxis.set_major_formatter(plain)
    bx.yaxis.set_minor_formatter(ticker.NullFormatter())
    bx.set_xlabel("batch (sequences decoding one token each)")
    bx.set_ylabel("decode step time (ms)")
    bx.grid(True, which="major", alpha=0.3)
    bx.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{data['model']} {data['weights']}, backend {data['backend']}, {data['threads']} thread(s) "
                 f"- {data['machine']} - {data['date']}" + (" (busy machine)" if data.get("busy_warning") else ""),
                 fontsize=11)
    fig.tight_layout()
    return fig


def levers_waterfall_plot(data: dict, path: str | Path) -> Path:
    """levers_waterfall_figure saved as a PNG at ``path``."""
    return _save(levers_waterfall_figure(data), path)


def levers_waterfall_figure(data: dict):
    """Output tokens/s after each lever (cumulative), measured bars with the factor each lever gave,
    the prediction as a marker; right: $ per 1M output tokens (or, without a price, TPOT p50)."""
    plt = _pyplot()
    rows = data["levers"]
    if not rows:
        raise ValueError("nothing to plot: no levers")
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(14, 5.4), sharey=True)
    names = [r["lever"].split(" (")[0] for r in rows]            # the short name; the JSON has the rest
    ys = range(len(rows))[::-1]
    tps = [r["output_tokens_per_s"] for r in rows]
    ax.barh(list(ys), tps, color="C0", alpha=0.8, label="measured")
    pred = [(y, r["predicted_tokens_per_s"]) for y, r in zip(ys, rows) if r.get("predicted_tokens_per_s")]
    if pred:
        ax.plot([p[1] for p in pred], [p[0] for p in pred], "D", color="C3", ms=5, label="predicted")
    pred_at = dict(pred)
    for y, r, t in zip(ys, rows, tps):                  # the label right of both the bar and the marker
        ax.text(max(t, pred_at.get(y, 0)) * 1.02, y, f" measured {t:.0f} ({r['factor_vs_previous']:.2f}x)", va="center",
                fontsize=8)
    ax.set_yticks(list(ys))
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xlabel("output tokens / s (whole trace)")
    ax.set_xlim(0, max(tps + [p[1] for p in pred]) * 1.45)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, axis="x", alpha=0.3)
    usd = [r.get("usd_per_m_output_tokens") for r in rows]
    if all(u is not None for u in usd):
        vals, label = usd, "$ per 1M output tokens"
    else:
        vals, label = [1e3 * (r["tpot_s"]["p50"] or 0) for r in rows], "TPOT p50 (ms)  (no price given)"
    bx.barh(list(ys), vals, color="C1", alpha=0.8)
    for y, v in zip(ys, vals):
        bx.text(v, y, f" {v:.3g}", va="center", fontsize=8)
    bx.set_xlabel(label)
    bx.set_xlim(0, max(vals) * 1.25 if max(vals) > 0 else 1)
    bx.grid(True, axis="x", alpha=0.3)
    fig.suptitle(f"levers on {data['model']}, backend {data['backend']}, {data['threads']} thread(s) - "
                 f"{data['machine']} - {data['date']}" + (" (busy machine)" if data.get("busy_warning") else ""),
                 fontsize=11)
    fig.tight_layout()
    return fig
