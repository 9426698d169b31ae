"""Memory safety: build the C extension once with AddressSanitizer and UndefinedBehaviorSanitizer
(PYINFER_SANITIZE=1) into a temp dir and run the C-kernel tests against that build in a subprocess,
libasan preloaded; any out-of-bounds access, use after free or undefined behaviour aborts the run.
Leak checking is off: CPython keeps allocations alive by design."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# every C kernel test; the stories260K text runs ~1000 steps, slow under ASan and covered by test_c_fused's others
TESTS = ["tests/test_c_backend.py", "tests/test_c_gemm.py", "tests/test_c_quant.py", "tests/test_c_attention.py", "tests/test_c_fused.py",
         "tests/test_c_hypothesis.py"]
# Imports pyinfer, then puts the sanitized build first on pyinfer's path so `pyinfer._C` is that one.
RUNNER = """
import sys, pyinfer
pyinfer.__path__.insert(0, {build!r})
import pyinfer._C
assert pyinfer._C.__file__.startswith({build!r}), pyinfer._C.__file__
import pytest
sys.exit(pytest.main(["-q", "-x", "-p", "no:cacheprovider", "-k", "not stories260k", *{tests!r}]))
"""


def test_c_kernels_are_clean_under_asan_and_ubsan(tmp_path):
    env = {**os.environ, "PYINFER_SANITIZE": "1", "PYINFER_BUILD_DIR": str(tmp_path)}
    build = subprocess.run([sys.executable, str(ROOT / "csrc" / "build_ffi.py")], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    libasan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    assert Path(libasan).is_file(), f"gcc has no libasan.so ({libasan!r})"
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("PYINFER_BUILD")}
    log = tmp_path / "sanitizer"          # pytest's capture would swallow a report printed mid-test
    run_env.update(LD_PRELOAD=libasan, ASAN_OPTIONS=f"detect_leaks=0:abort_on_error=1:log_path={log}",
                   UBSAN_OPTIONS=f"halt_on_error=1:print_stacktrace=1:log_path={log}")
    code = RUNNER.format(build=str(tmp_path / "pyinfer"), tests=TESTS)
    run = subprocess.run([sys.executable, "-c", code], env=run_env, cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    reports = "".join(p.read_text(errors="replace") for p in sorted(tmp_path.glob("sanitizer*")))
    out = reports[:6000] + run.stdout[-3000:] + run.stderr[-3000:]
    assert not reports, out
    assert "AddressSanitizer" not in run.stderr and "runtime error" not in run.stderr, out
    assert run.returncode == 0, out
    assert " passed" in run.stdout, out
