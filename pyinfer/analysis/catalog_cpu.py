"""Price and power of ``this-cpu``, which is measured, not bought: per vCPU, by server CPU generation
(told by /proc/cpuinfo's vendor, family and model), times the vCPUs this process may use.

Power: Cloud Carbon Footprint's per-vCPU coefficients, derived from SPECpower results
(github.com/cloud-carbon-footprint/ccf-coefficients, output/coefficients-aws-use.csv, commit b0032d9,
read 2026-12-05): Min Watts at idle, Max Watts at full load, per vCPU. A run's power is the busy
threads at Max plus the other usable vCPUs at Min; memory (CCF: 0.392 W per GB), the rest of the
server and the data centre's PUE are left out, so J/token is the CPU's share only.

Price: the AWS on-demand list price (us-east-1, Linux) of the ``.large`` size (2 vCPUs) of the
compute-optimised instance family built on that generation, per vCPU. These prices were not read
from a stored price page in this project (none was available when they were entered, 2026-12-05):
they are estimates from AWS's published list and the entries say so. Pass ``--usd-per-hour`` (and
``--watts``) to price a machine yourself; a CPU not in this table has no price or power (None), and
the study says which options give them.
"""
from __future__ import annotations

from dataclasses import dataclass

_CCF = ("Cloud Carbon Footprint coefficients (github.com/cloud-carbon-footprint/ccf-coefficients, "
        "output/coefficients-aws-use.csv, read 2026-12-05)")


@dataclass(frozen=True)
class CpuGeneration:
    name: str                       # CCF's architecture name
    vendor: str                     # /proc/cpuinfo vendor_id
    family: int                     # cpu family
    models: tuple[int, ...]         # model numbers of this generation's server parts
    min_w_per_vcpu: float           # idle
    max_w_per_vcpu: float           # full load
    usd_per_vcpu_hour: float
    price_source: str


GENERATIONS = (
    CpuGeneration("EPYC 2nd Gen (Zen 2, Rome)", "AuthenticAMD", 0x17, (0x31,), 0.4742621527777777,
                  1.6929615162037035, 0.077 / 2,
                  "AWS c5a.large on-demand, us-east-1 Linux, $0.077/h for 2 vCPUs (estimate, not read here)"),
    CpuGeneration("EPYC 3rd Gen (Zen 3, Milan)", "AuthenticAMD", 0x19, tuple(range(0x00, 0x10)),
                  0.45562453497023814, 1.957333519345238, 0.0765 / 2,
                  "AWS c6a.large on-demand, us-east-1 Linux, $0.0765/h for 2 vCPUs (estimate, not read here)"),
    CpuGeneration("EPYC 4th Gen (Zen 4, Genoa)", "AuthenticAMD", 0x19, tuple(range(0x10, 0x20)),
                  0.7391482469512195, 2.282155106707317, 0.10264 / 2,
                  "AWS c7a.large on-demand, us-east-1 Linux, $0.10264/h for 2 vCPUs (estimate, not read here)"),
    CpuGeneration("Ice Lake", "GenuineIntel", 6, (0x6A, 0x6C), 0.766796875, 3.7582031249999996, 0.085 / 2,
                  "AWS c6i.large on-demand, us-east-1 Linux, $0.085/h for 2 vCPUs (estimate, not read here)"),
    CpuGeneration("Sapphire Rapids", "GenuineIntel", 6, (0x8F,), 1.0362861003136936, 4.160476336606656,
                  0.0893 / 2,
                  "AWS c7i.large on-demand, us-east-1 Linux, $0.0893/h for 2 vCPUs (estimate, not read here)"),
)


def cpu_identity(path: str = "/proc/cpuinfo") -> tuple[str, int, int] | None:
    """(vendor_id, cpu family, model) of cpu0, or None where /proc/cpuinfo does not say."""
    fields: dict[str, str] = {}
    try:
        with open(path) as f:
            for line in f:
                if not line.strip():
                    break                                   # cpu0's block ends
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
        return fields["vendor_id"], int(fields["cpu family"]), int(fields["model"])
    except (OSError, KeyError, ValueError):
        return None


def generation_of(identity: tuple[str, int, int] | None) -> CpuGeneration | None:
    if identity is None:
        return None
    vendor, family, model = identity
    return next((g for g in GENERATIONS if g.vendor == vendor and g.family == family and model in g.models), None)


@dataclass(frozen=True)
class CpuPricing:
    usd_per_hour: float
    watts: float
    basis: str
    source: str


def cpu_pricing(identity: tuple[str, int, int] | None, usable_vcpus: int, busy_threads: int) -> CpuPricing | None:
    """This machine's price (every usable vCPU: a VM is billed whole) and power (busy threads at full
    load, the rest idle), or None for a CPU generation the table does not know."""
    g = generation_of(identity)
    if g is None or usable_vcpus < 1:
        return None
    busy = min(max(busy_threads, 1), usable_vcpus)
    watts = busy * g.max_w_per_vcpu + (usable_vcpus - busy) * g.min_w_per_vcpu
    return CpuPricing(
        usd_per_hour=usable_vcpus * g.usd_per_vcpu_hour, watts=watts,
        basis=f"cloud on-demand per vCPU x {usable_vcpus} vCPUs ({g.name}; estimate)",
        source=(f"price: {g.price_source}, per vCPU x {usable_vcpus}; power: {_CCF}, {g.name}: {busy} busy vCPU(s) "
                f"x {g.max_w_per_vcpu:.3f} W + {usable_vcpus - busy} idle x {g.min_w_per_vcpu:.3f} W "
                "(CPU only: memory, platform and PUE excluded)"))
