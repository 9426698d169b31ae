"""Cost accounting: FLOPs and bytes per op, summed per layer, phase and token."""
from .cost import Cost, CostCounter

__all__ = ["Cost", "CostCounter"]
