"""`pyinfer run`'s report: one-time costs kept out, --repeat spread, nulls (never NaN) for what was
not measured, ceilings from this-cpu, --json to stdout alone; and this-cpu's ceilings themselves."""
from __future__ import annotations

import json
import math

import pytest

from pyinfer.analysis import hardware, microbench
from pyinfer.api import load
from pyinfer.cli import main
from pyinfer.config import SamplingParams
from pyinfer.report import format_report, measure_run, run_summary

FIELDS = ("backend", "threads", "prompt_tokens", "generated_tokens", "ttft_s", "prefill_tokens_per_s",
          "decode_tokens_per_s", "flops_per_token", "bytes_per_token", "bound", "pct_of_bandwidth",
          "pct_of_peak", "compile_s", "busy_warning")


def fake_cpu(threads: int = 1):
    curve = [[256 << 10, 2e11], [8 << 20, 1e11], [64 << 20, 2e10]]
    return hardware.cpu_device({"read_bw": 2e10, "triad_bw": 1.5e10, "cache_read_bw": 2e11, "fp32": 1e11,
                                "int8": 2e11, "llc_bytes": 1 << 25, "memory_bytes": 1 << 34, "cpu_model": "x",
                                "threads": threads, "method": "test", "date": "2025-01-01",
                                "read_bw_curve": curve})


@pytest.fixture
def gen():
    return load(preset="toy", threads=1)


def test_json_to_stdout_is_the_whole_stdout(capsys):
    code = main(["run", "--steps", "20", "--seed", "3", "--json", "--no-ceilings", "--threads", "1"])
    out, err = capsys.readouterr()
    assert code == 0
    d = json.loads(out)                                   # nothing but the JSON object on stdout
    for key in FIELDS:
        assert key in d, key
    assert d["threads"] == 1 and d["prompt_tokens"] >= 1 and "time to first token" in err


def test_repeat_gives_median_min_max(gen, monkeypatch):
    monkeypatch.setattr(hardware, "this_cpu", lambda threads=None, **kw: fake_cpu(threads or 1))
    params = SamplingParams(temperature=0.0, seed=1, ignore_eos=True)
    _, m = measure_run(gen, "hello", 24, params, repeat=3)
    d = run_summary(gen, m, params)
    assert len(m.results) == 3 and d["repeat"] == 3 and d["compile_s"] >= 0 and d["warmup_s"] > 0
    for key in ("ttft_s", "prefill_tokens_per_s", "decode_tokens_per_s"):
        assert d[f"{key}_min"] <= d[key] <= d[f"{key}_max"], key
    # the ceilings: the same per-token bytes and FLOPs over this CPU's bandwidth and peak
    assert d["bound"] in ("memory", "compute")
    bw = fake_cpu().bandwidth(d["bytes_per_token"])
    assert d["pct_of_bandwidth"] == pytest.approx(100 * d["bytes_per_token"] * d["decode_tokens_per_s"] / bw, rel=1e-6)
    assert d["pct_of_peak"] == pytest.approx(100 * d["flops_per_token"] * d["decode_tokens_per_s"] / 1e11, rel=1e-6)
    assert "ceilings" in format_report(gen, d)


@pytest.mark.parametrize("case", ["first token stops", "one token"])
def test_unmeasured_figures_are_null_and_the_report_still_reports(gen, case):
    prompt = "hello"
    n_prompt = len(gen.tokenizer.encode(prompt, bos=True))
    greedy = SamplingParams(temperature=0.0, seed=1, ignore_eos=True)
    first = gen.generate(prompt, steps=n_prompt + 1, params=greedy).result.output_ids[-1]
    if case == "first token stops":                  # what made test_console_script_runs_default_job flaky
        params, steps = SamplingParams(temperature=0.0, seed=1, stop_token_ids=(first,)), 24
    else:
        params, steps = greedy, n_prompt             # exactly one token sampled: no decode step to time
    _, m = measure_run(gen, prompt, steps, params, repeat=2)
    d = run_summary(gen, m, params)
    assert d["generated_tokens"] == (0 if case == "first token stops" else 1)
    assert d["decode_tokens_per_s"] is None and d["decode_tokens_per_s_min"] is None and d["bound"] is None
    assert d["prefill_tokens_per_s"] > 0 and d["ttft_s"] > 0
    assert not any(isinstance(v, float) and math.isnan(v) for v in d.values())
    text = format_report(gen, d)
    assert "tokens/s" in text and "nan" not in text.lower() and "not measured" in text


def test_help_says_what_zero_steps_and_seed_mean(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "0 or below: the whole context" in text and "0 or below (the default): a random seed" in text


def test_seed_zero_or_below_is_random(capsys):
    seeds = []
    for s in ("0", "-5"):
        assert main(["run", "--steps", "6", "--seed", s, "--json", "--no-ceilings", "--threads", "1"]) == 0
        seeds.append(json.loads(capsys.readouterr().out)["seed"])
    assert all(s > 0 for s in seeds) and seeds[0] != seeds[1]


def test_catalog_entries_are_consistent():
    from pyinfer.analysis.catalog import CATALOG
    for name, device in CATALOG.items():
        assert hardware.consistency_problems(device) == [], name


def test_inconsistent_entries_are_caught():
    bad = hardware.cpu_device({"read_bw": 2e10, "triad_bw": 1e10, "cache_read_bw": 1e10, "fp32": 1e11, "int8": 5e10,
                               "llc_bytes": 1 << 25, "memory_bytes": 1 << 34, "cpu_model": "x", "threads": 1,
                               "method": "t", "date": "2025-01-01",
                               "read_bw_curve": [[1 << 20, 1e10], [1 << 26, 3e10]]})
    problems = " ".join(hardware.consistency_problems(bad, cpu_flags=["avx512_vnni"]))
    assert "int8 peak" in problems and "rises" in problems and "cache read bandwidth" in problems


def test_this_cpu_ceilings_are_measured_with_our_kernels_and_consistent(tmp_path, capsys):
    d = hardware.this_cpu(cache_dir=tmp_path, quick=True, threads=1)
    assert "measuring this CPU's ceilings" in capsys.readouterr().err       # the first use says so
    assert hardware.consistency_problems(d, microbench.cpu_flags()) == []
    assert "C matmul" in d.source                    # our own kernels were among the peak contenders
    cached = json.loads(next((tmp_path / "hardware").glob("this-cpu-*-1t.json")).read_text())
    assert cached["cpu_flags"] == microbench.cpu_flags() and cached["cache_sizes"] == microbench.cache_sizes()
    assert set(cached["peak_contenders"]) == {"fp32", "int8"}


def test_steps_ending_inside_the_prompt_count_only_the_positions_run(gen):
    params = SamplingParams(temperature=0.0, seed=1)
    _, m = measure_run(gen, "a longer prompt", 3, params)
    d = run_summary(gen, m, params, ceilings=False)
    assert d["prefill_tokens"] == 3 < d["prompt_tokens"] and d["generated_tokens"] == 0
    assert d["prefill_tokens_per_s"] == pytest.approx(3 / d["ttft_s"])
