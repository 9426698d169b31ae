"""pyinfer.kernels: the numpy reference (the spec) and the per-backend kernels.

Installed as ``pyinfer.kernels``; nothing here imports torch, triton or numba at
import time: each backend module loads its own toolchain when asked for.
"""
