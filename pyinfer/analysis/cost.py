"""The unit of accounting: what one op call computes and the fewest bytes it must move."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Cost:
    flops: int = 0
    bytes_weights: int = 0
    bytes_activations: int = 0
    bytes_kv: int = 0

    @property
    def bytes_total(self) -> int:
        return self.bytes_weights + self.bytes_activations + self.bytes_kv

    @property
    def intensity(self) -> float:
        """Arithmetic intensity, FLOPs per byte moved."""
        return self.flops / self.bytes_total if self.bytes_total else float("inf")

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(Cost)))

    def scaled(self, factor: float) -> "Cost":
        """Per-unit figures (e.g. per token): every field divided by ``1 / factor``, as floats."""
        return Cost(*(getattr(self, f.name) * factor for f in fields(Cost)))


class CostCounter:
    """Sums the Cost of every op call, keyed by (phase, op name). One per run, never global.
    With ``trace=True`` it also keeps every call in order as (phase, op, Cost), so a run can be
    split per layer and compared call by call with pyinfer.analysis.estimate."""

    def __init__(self, trace: bool = False):
        self.by_key: dict[tuple[str, str], Cost] = defaultdict(Cost)
        self.calls: dict[tuple[str, str], int] = defaultdict(int)
        self.phase = "prefill"
        self.trace: list[tuple[str, str, Cost]] | None = [] if trace else None

    def add(self, op: str, cost: Cost) -> None:
        key = (self.phase, op)
        self.by_key[key] = self.by_key[key] + cost
        self.calls[key] += 1
        if self.trace is not None:
            self.trace.append((self.phase, op, cost))

    def total(self, phase: str | None = None) -> Cost:
        total = Cost()
        for (ph, _), cost in self.by_key.items():
            if phase is None or ph == phase:
                total = total + cost
        return total

    def by_op(self, phase: str | None = None) -> dict[str, Cost]:
        out: dict[str, Cost] = defaultdict(Cost)
        for (ph, op), cost in self.by_key.items():
            if phase is None or ph == phase:
                out[op] = out[op] + cost
        return dict(out)
