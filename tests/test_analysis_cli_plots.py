"""`pyinfer roofline` and `pyinfer cost` end to end (through pyinfer.cli.main) and the PNGs they draw."""
from __future__ import annotations

import pytest

from pyinfer import cli
from pyinfer.analysis import estimate, get_device, predict_estimate, token_economics
from pyinfer.analysis.plots import curves_figure, curves_plot, roofline_figure
from pyinfer.config import PRESETS

# matplotlib is in the [test] extra: no skip, a missing install fails here loudly


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """pyinfer.cli.main with the analysis commands registered (as COMMANDS lists them once merged)."""
    monkeypatch.setattr(cli, "COMMANDS", tuple(dict.fromkeys((*cli.COMMANDS, "roofline", "cost"))))

    def run(*argv):
        code = cli.main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err
    return run


def test_roofline_command_table_and_plot(run_cli, tmp_path):
    png = tmp_path / "roofline.png"
    code, out, err = run_cli("roofline", "--preset", "llama-7b", "--hw", "h100,mi300x", "--batch", "1,512",
                             "--context", "256", "--plot", str(png))
    assert code == 0, err
    rows = [line.split() for line in out.splitlines() if line.startswith(("h100 ", "mi300x "))]
    decode = {(r[0], r[1]): r for r in rows if len(r) > 2 and r[2] == "decode"}
    assert decode[("h100", "1")][6] == "memory"                     # batch-1 decode is memory-bound
    assert "compute" in decode[("h100", "512")]                     # its matmuls are compute-bound at 512
    assert png.stat().st_size > 10_000


def test_cost_command_and_curves(run_cli, tmp_path):
    png = tmp_path / "curves.png"
    code, out, err = run_cli("cost", "--preset", "llama-70b", "--hw", "h100,tpu-v6e", "--batch", "1,16",
                             "--context", "1024", "--weights", "fp16,int4", "--plot", str(png))
    assert code == 0, err
    assert "$/M out" in out and " int4 " in out
    h100 = [r for r in (line.split() for line in out.splitlines()) if r[:1] == ["h100"] and r[2] == "fp16"]
    assert h100 and all(int(r[1]) >= 2 for r in h100)                 # 138 GB of weights need two H100s
    assert png.stat().st_size > 10_000


@pytest.mark.parametrize("argv, message", [
    (("roofline", "--hw", "h1000"), "unknown device 'h1000'"),
    (("roofline", "--preset", "llama-9b"), "no such file, fetched model or preset"),
    (("roofline", "--weights", "int3"), "unknown quantization format"),
    (("roofline", "--preset", "toy", "--context", "600", "--hw", "h100"), "max_seq_len"),
])
def test_cli_errors_are_clear(run_cli, argv, message):
    code, _, err = run_cli(*argv)
    assert code == 2 and message in err


def test_cli_malformed_device_file(run_cli, tmp_path):
    bad = tmp_path / "mine.toml"
    bad.write_text("[devices.mine]\npeak_tflops = { fp16 = 10 }\n")
    code, _, err = run_cli("roofline", "--hw", "mine", "--hw-file", str(bad))
    assert code == 2 and "missing field" in err and str(bad) in err


def test_list_hw(run_cli):
    code, out, _ = run_cli("roofline", "--list-hw")
    assert code == 0 and "groq-lpu" in out and "this-cpu" in out
    tpu = next(line for line in out.splitlines() if line.startswith("tpu-v5e "))
    assert " - " in tpu                                             # its power is not published: '-', never 0
    groq = next(line for line in out.splitlines() if line.startswith("groq-lpu ")).split()
    assert "0.23" in groq                                           # 230 MB of SRAM in GB, not '0'


def _panels():
    c = PRESETS["llama-7b"]
    panels = []
    for name in ("h100", "tpu-v5e"):
        d = get_device(name)
        steps = []
        for b in (1, 512):
            pre, dec = predict_estimate(estimate(c, b, 256, dtype="float16", prompt_len=64), d)
            steps += [(f"B={b}", dec)] + ([(f"B={b}", pre)] if b == 1 else [])
        panels.append((d, steps))
    return panels


def test_roofline_figure_is_log_log_labelled_and_annotated():
    fig = roofline_figure(_panels(), title="llama-7b")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2
    for ax in axes:
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        assert "intensity" in ax.get_xlabel() and "FLOP/s" in ax.get_ylabel()
        labels = " ".join(t.get_text() for t in ax.texts)
        assert "ridge" in labels and "attn" in labels and "mlp" in labels
        assert {t.get_text() for t in ax.get_legend().get_texts()} >= {"decode B=1", "decode B=512", "prefill B=1"}
    fig.clf()                                   # the PNG itself: test_roofline_command_table_and_plot


def test_curves_figure(tmp_path):
    c = PRESETS["llama-7b"]
    series = {f"h100 {w}": [token_economics(c, get_device("h100"), b, 512, w) for b in (1, 8, 64)]
              for w in ("float16", "int4")}
    fig = curves_figure(series)
    assert [ax.get_xlabel() for ax in fig.axes][0].startswith("batch size")
    assert all(len(ax.get_lines()) == 2 for ax in fig.axes)
    assert curves_plot(series, tmp_path / "c.png").stat().st_size > 10_000
