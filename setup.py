"""Only what pyproject.toml cannot say: build csrc/ into pyinfer._C with cffi (API mode)."""
from setuptools import setup

setup(cffi_modules=["csrc/build_ffi.py:ffibuilder"])
