"""cffi API-mode build of csrc/ into the extension module pyinfer._C (run by setup.py at install).

Set PYINFER_SANITIZE=1 to build with AddressSanitizer and UndefinedBehaviorSanitizer.
"""
import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
SOURCES = sorted(str(p.relative_to(HERE.parent)) for p in HERE.glob("*.c"))

compile_args = ["-O3", "-std=c11", "-fno-math-errno"]
link_args = []
if os.environ.get("PYINFER_SANITIZE"):
    compile_args = ["-O1", "-g", "-std=c11", "-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    link_args = ["-fsanitize=address,undefined"]

ffibuilder = FFI()
ffibuilder.cdef("\n".join(line for line in (HERE / "pyinfer_api.h").read_text().splitlines()
                          if not line.startswith("#")))
ffibuilder.set_source("pyinfer._C", '#include "pyinfer_api.h"', sources=SOURCES,
                      include_dirs=[str(HERE)], extra_compile_args=compile_args,
                      extra_link_args=link_args)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
