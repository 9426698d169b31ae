"""this-cpu's price and power: the per-vCPU table (pyinfer.analysis.catalog_cpu), CPU identification
from /proc/cpuinfo's format, and the figures a Device gets from them."""
from __future__ import annotations

import pytest

from pyinfer.analysis import hardware
from pyinfer.analysis.catalog_cpu import GENERATIONS, cpu_identity, cpu_pricing, generation_of

CPUINFO = """processor\t: 0
vendor_id\t: {vendor}
cpu family\t: {family}
model\t\t: {model}
model name\t: Some CPU

processor\t: 1
vendor_id\t: OtherVendor
cpu family\t: 99
model\t\t: 99
"""


def test_every_generation_is_consistent_and_sourced():
    seen = set()
    for g in GENERATIONS:
        assert 0 < g.min_w_per_vcpu < g.max_w_per_vcpu < 50, g.name
        assert 0 < g.usd_per_vcpu_hour < 1 and g.price_source and g.models, g.name
        for m in g.models:                                   # one generation per (vendor, family, model)
            assert (g.vendor, g.family, m) not in seen, (g.name, m)
            seen.add((g.vendor, g.family, m))


@pytest.mark.parametrize("g", GENERATIONS, ids=lambda g: g.name)
def test_cpuinfo_identifies_each_generation(g, tmp_path, rng):
    model = int(rng.choice(g.models))
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(vendor=g.vendor, family=g.family, model=model))
    ident = cpu_identity(str(path))
    assert ident == (g.vendor, g.family, model)          # cpu0's block, not the next processor's
    assert generation_of(ident) is g
    usable = int(rng.integers(1, 9))
    busy = int(rng.integers(1, usable + 1))
    p = cpu_pricing(ident, usable, busy)
    assert p.usd_per_hour == pytest.approx(usable * g.usd_per_vcpu_hour)
    assert p.watts == pytest.approx(busy * g.max_w_per_vcpu + (usable - busy) * g.min_w_per_vcpu)
    assert g.name in p.basis and "estimate" in p.basis and "CPU only" in p.source
    assert cpu_pricing(ident, usable, usable + 5).watts == pytest.approx(usable * g.max_w_per_vcpu)   # capped


def test_unknown_or_unreadable_cpus_have_no_price(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(vendor="GenuineIntel", family=6, model=1))      # a Pentium Pro
    assert generation_of(cpu_identity(str(path))) is None and cpu_pricing(cpu_identity(str(path)), 2, 1) is None
    path.write_text("processor\t: 0\nmodel name\t: no vendor line\n")
    assert cpu_identity(str(path)) is None and cpu_identity(str(tmp_path / "missing")) is None
    assert cpu_pricing(None, 2, 2) is None


def _measured():
    return {"read_bw": 2e10, "triad_bw": 1.5e10, "cache_read_bw": 2e11, "fp32": 1e11, "int8": 2e11,
            "llc_bytes": 1 << 25, "cpu_model": "x", "memory_bytes": 1 << 34, "threads": 1, "method": "test",
            "date": "2025-01-01"}


def test_this_cpu_device_carries_the_pricing_or_says_it_has_none():
    g = GENERATIONS[0]
    p = cpu_pricing((g.vendor, g.family, g.models[0]), 2, 1)
    d = hardware.cpu_device(_measured(), "test", p)
    assert (d.price_per_hour, d.power_w, d.price_basis) == (p.usd_per_hour, p.watts, p.basis)
    assert p.source in d.source
    bare = hardware.cpu_device(_measured(), "test")
    assert bare.price_per_hour is None and bare.power_w is None and "not in" in bare.source
