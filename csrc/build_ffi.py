"""cffi API-mode build of csrc/ into the extension module pyinfer._C (run by setup.py at install).

One build runs on any x86-64: the AVX2, AVX-512 (VNNI) and AMX bodies are compiled with function-level
target attributes and chosen at run time (never -march=native). OpenMP spreads work over the cores.

Set PYINFER_SANITIZE=1 to build with AddressSanitizer and UndefinedBehaviorSanitizer;
PYINFER_BUILD_DIR=path compiles there (tests/test_c_sanitize.py builds such a copy in a temp dir).
"""
import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
SOURCES = sorted(str(p) for p in HERE.glob("*.c"))
if os.environ.get("PYINFER_BUILD_DIR") is None:   # setup.py wants paths relative to the project
    SOURCES = sorted(str(Path(p).relative_to(HERE.parent)) for p in SOURCES)

common = ["-std=c11", "-fopenmp", "-fno-math-errno", "-ffp-contract=fast", "-Wno-psabi"]
compile_args = ["-O3", *common]
link_args = ["-fopenmp"]
if os.environ.get("PYINFER_SANITIZE"):
    compile_args = ["-O1", "-g", *common, "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                    "-fno-omit-frame-pointer"]
    link_args = ["-fopenmp", "-fsanitize=address,undefined"]

ffibuilder = FFI()
ffibuilder.cdef("\n".join(line for line in (HERE / "pyinfer_api.h").read_text().splitlines()
                          if not line.startswith("#")))
ffibuilder.set_source("pyinfer._C", '#include "pyinfer_api.h"', sources=SOURCES,
                      include_dirs=[str(HERE)], extra_compile_args=compile_args,
                      extra_link_args=link_args)

if __name__ == "__main__":
    out = os.environ.get("PYINFER_BUILD_DIR")
    ffibuilder.compile(tmpdir=out or ".", verbose=bool(os.environ.get("PYINFER_VERBOSE")))
