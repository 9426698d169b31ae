"""The command line under interruption and bad options (issue #12 D12, D21, D22; issue #13 point 7):
Ctrl-C ends any command with exit status 130 and one line, no traceback; output piped into a reader
that stops early ends quietly; bench options are validated, never clamped."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyinfer.cli import main

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYINFER_DEBUG": ""}


def _pyinfer(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "pyinfer.cli", *args], cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_ctrl_c_exits_130_with_one_line():
    """A real SIGINT while bench serve waits for the next arrival (2 requests at 0.1/s)."""
    proc = _pyinfer("bench", "serve", "--num-requests", "2", "--rate", "0.1", "--no-progress")
    time.sleep(5.0)                                    # imports done, the first request served, waiting
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, err)
    assert "Traceback" not in err and err.strip().splitlines() == ["pyinfer bench: interrupted"], err


@pytest.mark.parametrize("command", [["generate", "--steps", "64"], ["run", "--steps", "64"]])
def test_ctrl_c_anywhere_exits_130(command, monkeypatch, capsys):
    """KeyboardInterrupt raised inside any command (here: at the first model forward)."""
    import pyinfer.model

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(pyinfer.model.Model, "forward", interrupted)
    assert main(command) == 130
    err = capsys.readouterr().err
    assert err.strip() == f"pyinfer {command[0]}: interrupted", err


def test_output_piped_into_head_ends_quietly():
    proc = _pyinfer("run", "--steps", "512", "--temperature", "0")
    proc.stdout.readline()
    proc.stdout.close()                                 # the reader goes away, as `| head -1` does
    err = proc.stderr.read()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode in (0, 141), (proc.returncode, err)


@pytest.mark.parametrize("option", [["--prompt-len", "-5"], ["--prompt-len", "0"], ["--output-len", "0"],
                                    ["--prompt-len", "100000"], ["--prompt-len", "uniform:4:100000"],
                                    ["--output-len", "fixed:2.5"], ["--prompt-len", "nan"]])
def test_bench_serve_refuses_lengths_it_would_clamp(option, capsys):
    assert main(["bench", "serve", "--num-requests", "2", "--no-progress", *option]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and ("length" in err or "context" in err), err


def test_bench_kernels_refuses_a_bad_regex(capsys):
    assert main(["bench", "kernels", "--only", "("]) == 2
    assert "regular expression" in capsys.readouterr().err
