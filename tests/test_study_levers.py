"""pyinfer study levers: the trace is fixed by its seed, every lever runs in order with its
prediction, quality is n/a on random weights and measured on the real stories260K, the JSON is strict
and the waterfall plot is written and non-empty."""
from __future__ import annotations

import argparse
import json

import pytest

from pyinfer.api import load
from pyinfer.study.levers import NA_RANDOM, add_lever_args, build_trace, check_args, run_levers, summary_json
from pyinfer.study.levers_report import format_table
from study_support import FAKE

LEVERS = 7


def _args(*extra: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_lever_args(p)
    p.add_argument("--preset")
    return p.parse_args(["--num-requests", "4", "--prompt-len", "uniform:2:6", "--output-len", "uniform:3:5",
                         "--system-prompt-len", "16", "--max-num-seqs", "3", "--chunk", "8", "--spec-k", "2",
                         "--quality-tokens", "24", "--rate", "1000", *extra])


def test_trace_is_fixed_by_its_seed_and_shares_a_system_prompt():
    a, b = build_trace(_args(), 512, 256), build_trace(_args(), 512, 256)
    assert a == b
    other = build_trace(_args("--seed", "5"), 512, 256)
    assert other != a
    everyone = build_trace(_args("--shared-fraction", "1"), 512, 256)
    system = everyone[0].prompt_ids[1:17]
    assert all(r.prompt_ids[1:17] == system and r.prompt_ids[0] == 1 for r in everyone)
    nobody = build_trace(_args("--shared-fraction", "0"), 512, 256)
    assert all(len(r.prompt_ids) <= 6 for r in nobody)


@pytest.mark.parametrize("flag,value", [("--shared-fraction", "1.5"), ("--num-requests", "0"),
                                        ("--spec-k", "0"), ("--watts", "-3"), ("--system-prompt-len", "-1")])
def test_bad_options_are_refused_by_name(flag, value):
    with pytest.raises(ValueError, match=flag):
        check_args(_args(flag, value))


def test_trace_longer_than_the_context_is_refused():
    with pytest.raises(ValueError, match="context"):
        build_trace(_args("--output-len", "300"), 512, 256)


def _run(gen, args, tmp_path):
    pytest.importorskip("matplotlib")
    from pyinfer.analysis.plots import levers_waterfall_plot
    res = run_levers(gen, args, log=lambda *_: None)
    data = summary_json(gen, args, res, FAKE, FAKE, "m", None)
    json.dumps(data, allow_nan=False)
    path = levers_waterfall_plot(data, tmp_path / "w.png")
    assert path.stat().st_size > 10_000
    return res, data


def test_levers_on_random_weights(tmp_path):
    args = _args("--usd-per-hour", "0.5", "--watts", "100", "--shared-fraction", "1")
    args.preset = "toy"
    gen = load(preset="toy", backend="numpy", threads=1)
    res, data = _run(gen, args, tmp_path)
    rows = data["levers"]
    assert len(rows) == LEVERS
    assert [r["weights"] for r in rows[:3]] == ["float32", "int8-g32", "int4-g32-a8"]
    out_tokens = sum(r.max_tokens for r in res["trace"])
    for r in rows:
        assert r["output_tokens"] == out_tokens                   # ignore-EOS: every lever emits the same count
        assert r["output_tokens_per_s"] > 0 and r["predicted_tokens_per_s"] > 0
        assert r["usd_per_m_output_tokens"] == pytest.approx(0.5 / 3600 / r["output_tokens_per_s"] * 1e6)
        assert r["joules_per_output_token"] == pytest.approx(100 / r["output_tokens_per_s"])
        assert r["mean_kl_vs_f32"] == NA_RANDOM and r["top1_agreement_vs_f32"] == NA_RANDOM
    assert rows[5]["spec"]["acceptance_rate"] == NA_RANDOM
    # greedy speculative decoding emits the target's own tokens; so do batching, prefix caching, chunking
    assert len({r["outputs_sha256"] for r in rows[2:]}) == 1
    # 4 requests share a 17-token prefix over 3 slots: the 4th is admitted after the others' prefill
    assert rows[3]["prefix_cached_prompt_tokens"] == 0 and rows[4]["prefix_cached_prompt_tokens"] >= 16
    assert data["answer"].startswith("2-10x?")
    assert "n/a (random weights)" in format_table(data)


def test_levers_on_the_real_model_measure_quality(stories260k, tmp_path):
    args = _args()
    args.preset = None
    gen = load(str(stories260k["model"]), tokenizer=str(stories260k["tokenizer"]), backend="numpy", threads=1)
    _, data = _run(gen, args, tmp_path)
    rows = data["levers"]
    assert rows[0]["mean_kl_vs_f32"] == 0.0 and rows[0]["top1_agreement_vs_f32"] == 1.0
    for r in rows[1:3]:
        assert r["mean_kl_vs_f32"] > 0 and 0 <= r["top1_agreement_vs_f32"] <= 1
    assert rows[1]["mean_kl_vs_f32"] < rows[2]["mean_kl_vs_f32"]      # int8 closer to float32 than int4
    assert 0 <= rows[5]["spec"]["acceptance_rate"] <= 1
    assert data["price"]["note"] is not None                         # no price given, none in FAKE
