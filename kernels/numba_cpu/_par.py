"""When an op is worth a parallel launch (a prange region costs microseconds, and milliseconds when the
other core is busy): enough work, and more than one Numba thread in the calling thread."""
from __future__ import annotations

import numba


def use_threads(work: int, threshold: int) -> bool:
    return work >= threshold and numba.get_num_threads() > 1


def n_threads() -> int:
    return numba.get_num_threads()
