"""Devices: peak FLOP/s per dtype, memory bandwidth and capacity, SRAM, interconnect, power and
price, each with its source and date. The built-in table is pyinfer/analysis/catalog.py;
``this-cpu`` is measured on first use and cached; users add devices from TOML or JSON files:

    [devices.rtx-4090]                      # JSON: {"devices": {"rtx-4090": {...}}}
    full_name = "NVIDIA GeForce RTX 4090"
    peak_tflops = { fp32 = 82.6, fp16 = 165.2, int8 = 660.6 }
    memory_bw_gbs = 1008                    # GB/s
    memory_gb = 24
    sram_mb = 72                            # optional, like every field below
    interconnect_gbs = 32                   # per direction
    power_w = 450
    price_per_hour = 0.35
    price_basis = "amortised purchase (list price, 3 years)"
    source = "NVIDIA Ada whitepaper"
    date = "2023-01"
"""
from __future__ import annotations

import difflib
import json
import math
import os
from dataclasses import dataclass, field
from datetime import date as _date
from pathlib import Path
from types import MappingProxyType
from typing import Iterable, Mapping

PEAK_KEYS = ("fp32", "tf32", "fp16", "bf16", "fp8", "int8", "int4", "fp4")
_SAME_RATE = {"bf16": "fp16", "fp16": "bf16"}      # a chip that lists one runs the other at the same rate
CACHE_VERSION = 3       # 2: this-cpu carries its read bandwidth curve; 3: peaks include our own kernels,
                        # keyed by CPU flags, cache sizes and usable cores


@dataclass(frozen=True)
class Device:
    name: str
    full_name: str
    kind: str                           # gpu, tpu, npu, lpu, soc, cpu
    peak_flops: Mapping[str, float]     # peak key (fp32, fp16, bf16, fp8, int8, ...) -> FLOP/s, dense
    memory_bw: float                    # bytes/s from the device's main memory
    memory_bytes: float                 # capacity
    sram_bytes: float | None            # on-chip SRAM (caches, shared memory), None when not published
    interconnect_bw: float | None       # bytes/s per direction to a peer device, None when it has none
    power_w: float | None               # board / package power, None when not published
    price_per_hour: float | None        # USD per device-hour
    price_basis: str                    # "cloud on-demand" or "amortised purchase (...)" or "unknown"
    source: str
    date: str
    notes: str = ""
    extra: Mapping[str, float] = field(default_factory=dict)   # e.g. measured triad_bw, cache_read_bw
    # measured read bandwidth by working-set size, ((bytes, bytes/s), ...) ascending in size; empty when
    # unmeasured (catalog devices: a model's weights never fit their caches, memory_bw applies)
    bw_curve: tuple[tuple[float, float], ...] = ()

    def __post_init__(self):
        where = f"device {self.name!r}"
        if not self.name or not isinstance(self.name, str):
            raise ValueError("a device needs a non-empty name")
        if not self.peak_flops:
            raise ValueError(f"{where}: peak_flops lists no dtype")
        for key, value in self.peak_flops.items():
            if key not in PEAK_KEYS:
                raise ValueError(f"{where}: peak dtype {key!r} is not one of {', '.join(PEAK_KEYS)}")
            _positive(f"{where}: peak {key}", value)
        _positive(f"{where}: memory_bw", self.memory_bw)
        _positive(f"{where}: memory_bytes", self.memory_bytes)
        for name in ("sram_bytes", "interconnect_bw", "power_w", "price_per_hour"):
            if getattr(self, name) is not None:
                _positive(f"{where}: {name}", getattr(self, name), allow_zero=name == "price_per_hour")
        if not self.source or not self.date:
            raise ValueError(f"{where}: every entry needs its source and date")
        object.__setattr__(self, "peak_flops", MappingProxyType(dict(self.peak_flops)))
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))
        curve = tuple((float(n), float(bw)) for n, bw in self.bw_curve)
        for n, bw in curve:
            _positive(f"{where}: bw_curve size", n)
            _positive(f"{where}: bw_curve bandwidth", bw)
        if any(b[0] <= a[0] for a, b in zip(curve, curve[1:])):
            raise ValueError(f"{where}: bw_curve sizes must be strictly ascending")
        object.__setattr__(self, "bw_curve", curve)

    def peak(self, key: str) -> float:
        """Peak FLOP/s for a peak key (fp32, fp16, bf16, fp8, int8, ...)."""
        if key in self.peak_flops:
            return self.peak_flops[key]
        if _SAME_RATE.get(key) in self.peak_flops:
            return self.peak_flops[_SAME_RATE[key]]
        raise ValueError(f"{self.name} lists no {key} peak (it has {', '.join(self.peak_flops)}); "
                         f"pick a dtype or format it runs")

    def bandwidth(self, working_set: float | None = None) -> float:
        """Bytes/s when the data re-read each step (e.g. a decode step's weights and KV) is
        ``working_set`` bytes: the measured curve, interpolated in log size, where there is one (a
        working set that fits a cache streams faster); memory_bw past its end or without one."""
        curve = self.bw_curve
        if not curve or working_set is None or working_set >= curve[-1][0]:
            return self.memory_bw
        if working_set <= curve[0][0]:
            return curve[0][1]
        for (n0, b0), (n1, b1) in zip(curve, curve[1:]):
            if working_set <= n1:
                f = math.log(working_set / n0) / math.log(n1 / n0)
                return b0 + f * (b1 - b0)
        return self.memory_bw                   # not reached: the last point bounds working_set

    def ridge(self, key: str) -> float:
        """Ridge point: the arithmetic intensity (FLOP/byte) where compute and memory time are equal."""
        return self.peak(key) / self.memory_bw


def _positive(what: str, value, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ValueError(f"{what} must be a number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero) or value == float("inf"):
        raise ValueError(f"{what} must be positive and finite, got {value!r}")


# ---- user device files -------------------------------------------------------------------------

_FILE_FIELDS = {"full_name", "kind", "peak_tflops", "memory_bw_gbs", "memory_gb", "sram_mb", "interconnect_gbs",
                "power_w", "price_per_hour", "price_basis", "source", "date", "notes"}
_REQUIRED = ("peak_tflops", "memory_bw_gbs", "memory_gb", "source", "date")


def load_device_file(path: str | os.PathLike) -> dict[str, Device]:
    """Devices from a TOML or JSON file (see the module docstring); ValueError naming file and field."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as e:
        raise ValueError(f"device file {path}: cannot read it ({e.strerror or e})") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        elif path.suffix.lower() == ".toml":
            try:
                import tomllib
            except ImportError:
                raise ValueError(f"device file {path}: TOML needs Python 3.11+ (tomllib); use JSON") from None
            data = tomllib.loads(text.decode("utf-8"))
        else:
            raise ValueError(f"device file {path}: expected a .toml or .json file")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"device file {path} is not valid JSON: {e}") from None
    except Exception as e:
        if type(e).__name__ == "TOMLDecodeError":
            raise ValueError(f"device file {path} is not valid TOML: {e}") from None
        raise
    devices = data.get("devices") if isinstance(data, dict) else None
    if not isinstance(devices, dict) or not devices:
        raise ValueError(f"device file {path}: expected a table [devices.NAME] (JSON: {{\"devices\": "
                         f"{{\"NAME\": {{...}}}}}}) with at least one device")
    return {name: _device_from_table(path, name, table) for name, table in devices.items()}


def _device_from_table(path: Path, name: str, t) -> Device:
    where = f"device file {path}, device {name!r}"
    if not isinstance(t, dict):
        raise ValueError(f"{where}: expected a table of fields")
    unknown = sorted(set(t) - _FILE_FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; known: {sorted(_FILE_FIELDS)}")
    missing = [k for k in _REQUIRED if k not in t]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}")
    peaks = t["peak_tflops"]
    if not isinstance(peaks, dict) or not peaks:
        raise ValueError(f"{where}: peak_tflops must be a table like {{ fp16 = 100, int8 = 200 }}")

    def num(key, scale):
        value = t.get(key)
        if value is None:
            return None
        _positive(f"{where}: {key}", value, allow_zero=key == "price_per_hour")
        return value * scale

    for key, value in peaks.items():
        _positive(f"{where}: peak_tflops.{key}", value)
    try:
        return Device(name=name, full_name=str(t.get("full_name", name)), kind=str(t.get("kind", "custom")),
                      peak_flops={k: v * 1e12 for k, v in peaks.items()}, memory_bw=num("memory_bw_gbs", 1e9),
                      memory_bytes=num("memory_gb", 1e9), sram_bytes=num("sram_mb", 1e6),
                      interconnect_bw=num("interconnect_gbs", 1e9), power_w=num("power_w", 1),
                      price_per_hour=num("price_per_hour", 1), price_basis=str(t.get("price_basis", "unknown")),
                      source=str(t["source"]), date=str(t["date"]), notes=str(t.get("notes", "")))
    except ValueError as e:
        raise ValueError(f"device file {path}: {e}") from None


# ---- lookup ------------------------------------------------------------------------------------

def device_names() -> list[str]:
    from .catalog import CATALOG
    return [*CATALOG, "this-cpu"]


def get_device(name: str, files: Iterable[str | os.PathLike] = (), cache_dir: str | os.PathLike | None = None,
               refresh: bool = False) -> Device:
    """A device by name: user files first (then $PYINFER_HARDWARE, paths joined by os.pathsep), then the
    catalog, then ``this-cpu`` (measured once, cached). ValueError names close matches."""
    from .catalog import ALIASES, CATALOG

    env = os.environ.get("PYINFER_HARDWARE", "")
    user: dict[str, Device] = {}
    for f in [*files, *(p for p in env.split(os.pathsep) if p)]:
        user.update(load_device_file(f))
    key = name.strip().lower()
    if key in user or name in user:
        return user.get(name) or user[key]
    key = ALIASES.get(key, key)
    if key in CATALOG:
        return CATALOG[key]
    if key == "this-cpu":
        return this_cpu(cache_dir=cache_dir, refresh=refresh)
    known = [*user, *CATALOG, "this-cpu"]
    close = difflib.get_close_matches(key, known + list(ALIASES), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown device {name!r}{hint} known devices: {', '.join(known)} "
                     f"(add your own with a TOML/JSON device file)")


def get_devices(names: str | Iterable[str], files: Iterable[str | os.PathLike] = (), **kw) -> list[Device]:
    names = [n for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    if not names:
        raise ValueError("no device named; e.g. --hw h100,mi300x,this-cpu")
    return [get_device(n, files, **kw) for n in names]


# ---- this-cpu ----------------------------------------------------------------------------------

def default_cache_dir() -> Path:
    from ..fetch import default_cache_dir as d
    return d()


def this_cpu(cache_dir: str | os.PathLike | None = None, refresh: bool = False, quick: bool = False,
             threads: int | None = None) -> Device:
    """This machine's CPU, measured by microbenchmarks on first use (~20 s, announced on stderr) with
    ``threads`` threads in every pool (default: the count in force, pyinfer.threads), and cached in
    <cache>/hardware/this-cpu-<key>-<threads>t.json. The key is what decides the figures: the CPU model,
    its feature flags, its cache sizes, the cores this process may use and the thread count (machines
    that share a model name can differ in L3 size)."""
    import hashlib
    import sys

    from ..threads import current, pools, usable_cores
    from .microbench import cache_sizes, cpu_flags, cpu_model, measure

    threads = threads or current()
    key = {"cpu_model": cpu_model(), "cpu_flags": cpu_flags(), "cache_sizes": cache_sizes(),
           "usable_cores": usable_cores(), "threads": threads, "version": CACHE_VERSION}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "hardware" / \
        f"this-cpu-{digest}-{threads}t.json"
    m = None
    if path.exists() and not refresh:
        try:
            cached = json.loads(path.read_text())
            if all(cached.get(k) == v for k, v in key.items()):
                m = cached
        except (OSError, ValueError):
            m = None
    if m is None:
        print(f"measuring this CPU's ceilings ({threads} thread{'s' * (threads > 1)}: bandwidth by working set, "
              f"fp32 and int8 peaks; {'~10' if quick else '~20-30'} s, once; cached in {path})",
              file=sys.stderr, flush=True)
        with pools(threads):
            m = {**measure(quick=quick), **key, "date": _date.today().isoformat()}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(m, indent=1))
            tmp.replace(path)
        except OSError:
            pass                                # a read-only cache only costs a remeasure next time
    from .catalog_cpu import cpu_identity, cpu_pricing
    return cpu_device(m, str(path), cpu_pricing(cpu_identity(), key["usable_cores"], threads))


def consistency_problems(d: Device, cpu_flags: Iterable[str] | None = None) -> list[str]:
    """What is inconsistent in a device entry (empty when nothing): a peak or bandwidth that cannot be
    a ceiling beside the others. int8 at least fp32 where the CPU has an int8 dot-product unit (VNNI,
    AMX); a cache at least as fast as memory; the bandwidth curve non-increasing and ending at memory_bw;
    triad not far above read (same memory system)."""
    out = []
    int8, fp32 = d.peak_flops.get("int8"), d.peak_flops.get("fp32")
    has_dot = d.kind != "cpu" if cpu_flags is None else bool(set(cpu_flags) & {"avx512_vnni", "avx_vnni", "amx_int8"})
    if int8 and fp32 and has_dot and int8 < fp32:
        out.append(f"int8 peak {int8:.3g} below fp32 peak {fp32:.3g} though it has an int8 dot-product unit")
    for key in ("fp16", "bf16"):
        if d.peak_flops.get(key) and fp32 and d.peak_flops[key] < fp32 and d.kind != "cpu":
            out.append(f"{key} peak below fp32 peak")
    curve = d.bw_curve
    if any(b[1] > a[1] * 1.0001 for a, b in zip(curve, curve[1:])):
        out.append("read bandwidth rises with working-set size (a larger set cannot stream faster)")
    if curve and abs(curve[-1][1] - d.memory_bw) > 1e-6 * d.memory_bw:
        out.append(f"bandwidth curve ends at {curve[-1][1]:.3g} B/s, not memory_bw {d.memory_bw:.3g}")
    cache_bw = d.extra.get("cache_read_bw")
    if cache_bw is not None and cache_bw < d.memory_bw * 0.999:
        out.append(f"cache read bandwidth {cache_bw:.3g} below memory bandwidth {d.memory_bw:.3g}")
    return out


def cpu_device(m: dict, where: str = "measured", pricing=None) -> Device:
    """A Device from measure()'s dict; ``pricing``: catalog_cpu.CpuPricing of this CPU generation, or
    None (no price or power)."""
    return Device(
        name="this-cpu", full_name=f"{m['cpu_model']} ({m['threads']} threads)", kind="cpu",
        peak_flops={"fp32": m["fp32"], "int8": m["int8"], "fp16": m["fp32"]},
        memory_bw=m["read_bw"], memory_bytes=m["memory_bytes"] or 1.0, sram_bytes=m["llc_bytes"] or None,
        interconnect_bw=None, power_w=pricing.watts if pricing else None,
        price_per_hour=pricing.usd_per_hour if pricing else None,
        price_basis=pricing.basis if pricing else "unknown",
        source=f"measured here by pyinfer.analysis.microbench ({m['method']}); cached in {where}"
               + (f"; {pricing.source}" if pricing else "; price and power: CPU generation not in "
                  "pyinfer.analysis.catalog_cpu"),
        date=m["date"], notes="fp16 arithmetic assumed at the fp32 rate (the engine computes in float32)",
        extra={"triad_bw": m["triad_bw"], "cache_read_bw": m["cache_read_bw"], "threads": m["threads"]},
        bw_curve=tuple((n, bw) for n, bw in m.get("read_bw_curve", ())))
