"""End to end: the real stories260K reproduces llama2.c's greedy text, formats and backends agree,
the CLI runs and refuses bad input with a clear message."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pyinfer.cli import main
from pyinfer.config import SamplingParams
from pyinfer.loaders import load_checkpoint, save_checkpoint
from pyinfer.model import Model
from pyinfer.ops import Ops


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_greedy_text_equals_llama2c(capsys, stories260k):
    code, out, err = cli(capsys, "generate", "--model", str(stories260k["model"]), "--tokenizer",
                         str(stories260k["tokenizer"]), "--temperature", "0", "--steps", "256",
                         "--prompt", "Once upon a time")
    assert code == 0, err
    assert out.rstrip() == stories260k["greedy"].read_text().rstrip()


@pytest.mark.parametrize("backend", ["c"])
def test_backend_logits_match_reference(stories260k, rng, backend):
    weights = load_checkpoint(stories260k["model"])
    ref_model, model = Model(weights, Ops("numpy")), Model(weights, Ops(backend))
    tokens = rng.integers(0, 512, 40)
    got, want = [], []
    for m, logits in ((model, got), (ref_model, want)):
        cache = m.new_cache(block_size=16)
        logits.append(m.forward(cache.prepare([0], [tokens[:30]]), cache, all_logits=True))
        for t in tokens[30:]:
            logits.append(m.forward(cache.prepare([0], [np.array([t])]), cache))
    np.testing.assert_allclose(np.concatenate(got), np.concatenate(want), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fmt", ["hf", "v1", "npz", "legacy"])
def test_saved_and_reloaded_checkpoint_gives_same_logits(tmp_path, stories260k, rng, fmt):
    weights = load_checkpoint(stories260k["model"])
    path = tmp_path / ("model.npz" if fmt == "npz" else "hf" if fmt == "hf" else "model.bin")
    save_checkpoint(weights, path, fmt)
    tokens = rng.integers(0, 512, 64)
    logits = []
    for w in (weights, load_checkpoint(path)):
        m = Model(w)
        cache = m.new_cache()
        logits.append(m.forward(cache.prepare([0], [tokens]), cache, all_logits=True))
    rel = np.abs(logits[1] - logits[0]).max() / np.abs(logits[0]).max()
    assert rel < 1e-5, f"{fmt}: relative error {rel:.2e}"


def test_run_prints_text_and_report(capsys):
    code, out, err = cli(capsys, "run", "--steps", "40", "--seed", "7")
    assert code == 0, err
    for field in ("time to first token", "tokens/s", "per token", "FLOP", "KV cache", "blocks of 16 tokens"):
        assert field in out, f"report lacks {field!r}:\n{out}"


def test_sampling_is_seeded(capsys, stories260k):
    args = ["generate", "--model", str(stories260k["model"]), "--tokenizer", str(stories260k["tokenizer"]),
            "--temperature", "1.0", "--top-p", "0.9", "--steps", "60"]
    a, b, c = (cli(capsys, *args, "--seed", s)[1] for s in ("1", "1", "2"))
    assert a == b and a != c


@pytest.mark.parametrize("argv,message", [
    (["run", "--preset", "nope"], "invalid choice: 'nope'"),
    (["run", "--prompt", "x" * 600], "longer than the model's context of 512"),
    (["run", "--backend", "cuda"], "unknown backend 'cuda'"),
    (["run", "--top-p", "1.5"], "top_p=1.5 must be in (0, 1]"),
    (["run", "--temperature", "-1"], "temperature=-1.0 must be >= 0"),
    (["run", "--model", "no/such/file.bin"], "no such file or known model"),
    (["run", "--preset", "llama-70b"], "need 257.0 GiB"),
])
def test_cli_refuses_bad_input_clearly(capsys, argv, message):
    try:
        code, out, err = cli(capsys, *argv)
    except SystemExit as e:                     # argparse's own refusal
        code, err = e.code, capsys.readouterr().err
    assert code == 2
    assert message in err, err


def test_tokenizer_vocab_mismatch_is_refused(capsys, stories260k, tmp_path):
    code, _, err = cli(capsys, "generate", "--preset", "stories15M", "--tokenizer", str(stories260k["tokenizer"]))
    assert code == 2 and "512" in err and "32000" in err, err


def test_import_pulls_no_gpu_or_jit_library():
    code = "import sys, pyinfer, pyinfer.api, pyinfer.cli, pyinfer.ops; " \
           "print(sorted(m for m in ('torch', 'triton', 'numba') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_console_script_runs_default_job():
    proc = subprocess.run(["pyinfer", "run", "--steps", "24"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "decode" in proc.stdout and "tokens/s" in proc.stdout


def test_generate_api_streams_the_same_text(stories260k):
    from pyinfer.api import load
    gen = load(str(stories260k["model"]), tokenizer=str(stories260k["tokenizer"]))
    streamed: list[str] = []
    done = gen.generate("Once upon a time", steps=40, params=SamplingParams(temperature=0), on_text=streamed.append)
    assert "".join(streamed) == done.text and done.text.startswith("Once upon a time")
    assert len(done.result.output_ids) == 40
