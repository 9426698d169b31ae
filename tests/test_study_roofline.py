"""pyinfer study roofline: the op-class timer leaves results bit-identical, crossings follow their
definition, the sweep's JSON is strict and complete, the plot is written and non-empty."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pyinfer.config import get_preset
from pyinfer.model import Model
from pyinfer.ops import Ops
from pyinfer.study.roofline_report import build_json, format_table, memory_level
from pyinfer.study.roofline_sweep import (Point, crossing_measured, crossing_predicted, opbyop_model,
                                          predicted_s, run_sweep)
from pyinfer.weights import random_weights
from study_support import FAKE

def _point(batch: int, t: float) -> Point:
    z = {"weights": 1, "attention": 1, "rest": 1, "total": 3}
    return Point("decode", batch, batch, 16, t, t, {}, z, z)


def test_timer_keeps_logits_bit_identical_and_splits_time(seed):
    config = get_preset("toy")
    model = Model(random_weights(config, seed=seed), Ops("numpy"))
    timed, timer = opbyop_model(model)
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(3, config.vocab_size, n) for n in (5, 1, 17)]          # ragged
    outs = []
    for m in (model, timed):
        cache = m.new_cache(block_size=16, num_blocks=8)
        outs.append(m.forward(cache.prepare([0, 1, 2], prompts), cache))
    assert np.array_equal(outs[0], outs[1])
    assert timer.seconds["weights"] > 0 and timer.seconds["attention"] > 0 and timer.seconds["rest"] > 0
    assert timer.calls["weights"] == 7 * config.n_layers + 1
    before = dict(timer.calls)
    cache = model.new_cache(block_size=16, num_blocks=8)
    model.forward(cache.prepare([0], prompts[:1]), cache)       # the original model's ops are not wrapped
    assert timer.calls == before


def test_crossing_measured_follows_its_definition():
    pts = [_point(1, 1.0), _point(2, 1.1), _point(4, 1.5), _point(8, 2.5), _point(16, 5.0)]
    c = crossing_measured(pts)
    assert c["first_batch_at_2x"] == 8
    assert 4 < c["interpolated_batch"] < 8
    flat = crossing_measured([_point(1, 1.0), _point(2, 1.2)])
    assert flat["first_batch_at_2x"] is None and "no measured batch" in flat["note"]


@pytest.mark.parametrize("weights", ["float32", "int8-g32"])
def test_crossing_predicted_is_the_smallest_batch_at_twice_batch_one(weights):
    config = get_preset("toy")
    b = crossing_predicted(config, weights, 16, FAKE, None, limit=4096)
    t1 = predicted_s(config, weights, 1, 1, 16, FAKE)
    assert b is not None and b > 1
    assert predicted_s(config, weights, b, 1, 16, FAKE) >= 2 * t1
    assert predicted_s(config, weights, b - 1, 1, 16, FAKE) < 2 * t1


def test_memory_level_names_dram_for_weights_past_the_cache():
    assert memory_level(440e6, FAKE)["level"] == "DRAM"
    assert memory_level(1e6, FAKE)["level"] == "last-level cache"


def test_sweep_json_table_and_plot(tmp_path, seed):
    pytest.importorskip("matplotlib")
    from pyinfer.analysis.plots import study_roofline_plot
    config = get_preset("toy")
    model = Model(random_weights(config, seed=seed), Ops("numpy"))
    sweep = run_sweep(model, "float32", FAKE, context=8, steps=1, max_batch=4, hard_limit=4, prefill_max=6,
                      prefill_repeats=1, log=lambda *_: None)
    assert [p.batch for p in sweep.decode] == [1, 2, 4]
    assert [p.tokens for p in sweep.prefill] == [1, 2, 4, 6]
    for p in sweep.decode + sweep.prefill:
        assert p.step_s > 0 and p.flops["total"] > 0 and p.bytes["total"] > 0
        assert p.calibrated_s > 0 and p.nominal_s > 0
        assert math.isclose(sum(p.class_s.values()), p.opbyop_s, rel_tol=1e-9)
    data = build_json(sweep, "toy", "preset", "numpy", 1, FAKE, 8, float(model.weights.nbytes()), None)
    text = json.dumps(data, allow_nan=False)            # strict JSON: no NaN anywhere
    assert "crossing" in json.loads(text)
    table = format_table(data)
    assert "crossing (decode step >= 2x batch 1)" in table and "stream from" in table
    path = study_roofline_plot(data, tmp_path / "roof.png")
    assert path.exists() and path.stat().st_size > 10_000


def test_cli_quick_json(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    import pyinfer.analysis.hardware as hw
    from pyinfer.cli import main
    monkeypatch.setattr(hw, "this_cpu", lambda **kw: FAKE)
    png = tmp_path / "r.png"
    rc = main(["study", "roofline", "--preset", "toy", "--backend", "numpy", "--threads", "1", "--quick",
               "--max-batch", "2", "--prefill-max", "4", "--steps", "1", "--plot", str(png), "--json"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["study"] == "roofline" and data["weights"] == "float32" and png.stat().st_size > 0
    assert [p["batch"] for p in data["decode"]] == [1, 2]
    saved = tmp_path / "r.json"
    saved.write_text(json.dumps(data))
    assert main(["study", "roofline", "--from-json", str(saved), "--no-plot", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert [p["step_s"] for p in again["decode"]] == [p["step_s"] for p in data["decode"]]   # measured: kept
    assert again["crossing"] == data["crossing"]                   # same points, same device: same answer


def test_cli_refuses_bad_values(capsys):
    from pyinfer.cli import main
    with pytest.raises(SystemExit):
        main(["study", "roofline", "--preset", "toy", "--steps", "0"])
    assert main(["study", "roofline", "--preset", "toy", "--quant", "int3-nope", "--no-plot"]) == 2
    assert "int3-nope" in capsys.readouterr().err
