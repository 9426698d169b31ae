"""Every option of `pyinfer roofline` and `pyinfer cost` honoured or refused with a clear message."""
from __future__ import annotations

import json
import re

import pytest

from pyinfer import cli


@pytest.fixture
def run_cli(monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMANDS", tuple(dict.fromkeys((*cli.COMMANDS, "roofline", "cost"))))

    def run(*argv):
        try:
            code = cli.main(list(argv))
        except SystemExit as e:                     # argparse refusals
            code = e.code
        out = capsys.readouterr()
        return code, out.out, out.err
    return run


@pytest.mark.parametrize("argv, message", [
    (("cost", "--dtype", "int3"), "unknown activation dtype 'int3'"),
    (("roofline", "--dtype", "fp64"), "unknown activation dtype 'fp64'"),
    (("cost", "--weights", ",,,"), "empty item"),
    (("cost", "--weights", "float16,,int8"), "empty item"),
    (("cost", "--hw", "h100,"), "empty item"),
    (("cost", "--batch", "1,,8"), "empty item"),
    (("cost", "--batch", "0"), ">= 1"),
    (("cost", "--hw", "h100,bogus"), "unknown device 'bogus'"),
    (("cost", "--weights", "int3"), "unknown quantization format"),
    (("roofline", "--backend", "bogus"), "invalid choice: 'bogus'"),
    (("cost", "--memory-fraction", "nan"), "in (0, 1]"),
    (("cost", "--acceptance", "nan", "--draft", "llama-7b"), "in [0, 1]"),
    (("cost", "--spec-k", "4"), "need --draft"),
    (("cost", "--devices", "1,2"), "--devices takes auto or one"),
    (("cost", "--cuda-graphs", "maybe"), "expected on or off"),
    (("cost", "--kv-dtype", "int2", "--hw", "h100"), "KV format 'int2'"),
    (("cost", "--weights", "float16", "--dtype", "float32", "--hw", "h100"), "conflicts"),
    (("cost", "--model", "llama-7b", "--preset", "llama-7b"), "not both"),
    (("bench", "serve", "--ttft-target-ms", "nan"), "finite number of milliseconds"),
    (("bench", "serve", "--tpot-target-ms", "-1"), "finite number of milliseconds"),
])
def test_options_are_refused_by_name(run_cli, argv, message):
    code, out, err = run_cli(*argv)
    assert code == 2 and message in err, err
    assert out == ""


def test_context_past_the_model_is_refused_before_anything_prints(run_cli):
    code, out, err = run_cli("cost", "--preset", "llama-7b", "--hw", "h100", "--context", "4096")
    assert code == 2 and out == "" and "max_seq_len=4096" in err


def test_huge_batches_answer_at_once(run_cli):
    import time
    t0 = time.perf_counter()
    code, out, err = run_cli("roofline", "--hw", "h100", "--batch", str(10 ** 18), "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert {r["batch"] for r in rows} == {10 ** 18} and not any(r["fits"] for r in rows)
    code, out, err = run_cli("cost", "--hw", "h100", "--batch", str(10 ** 18), "--weights", "int4")
    assert code == 0 and "does not fit: needs" in out, err
    assert time.perf_counter() - t0 < 10                            # closed form: no allocation per sequence


def test_dtype_changes_activation_bytes(run_cli):
    rows = {}
    for dtype in ("float16", "float32"):
        code, out, err = run_cli("roofline", "--hw", "h100", "--batch", "64", "--weights", "int8", "--dtype", dtype,
                                 "--json")
        assert code == 0, err
        rows[dtype] = [r for r in json.loads(out) if r["phase"] == "decode"][0]
    assert rows["float32"]["bytes"] > rows["float16"]["bytes"]
    assert rows["float32"]["dtype"] == "float32"


def test_cost_json_rows_and_rows_that_do_not_fit(run_cli):
    code, out, err = run_cli("cost", "--preset", "llama-7b", "--hw", "h100,snapdragon-x-elite", "--batch",
                             "1,1000,1000000000000000000", "--weights", "float16,int4", "--json")
    assert code == 0, err
    rows = json.loads(out)                                          # stdout holds the JSON only
    assert len(rows) == 2 * 3 * 2
    keys = {"device", "n_devices", "parallel", "weights", "kv_dtype", "batch", "context", "prompt", "tokens_per_s",
            "tpot_s", "ttft_s", "usd_per_m_output", "j_per_token", "bound", "fits", "roofline_tokens_per_s"}
    for r in rows:
        assert keys <= set(r), keys - set(r)
        assert r["weights"] in ("float16", "int4")                  # the name exactly as given
        if not r["fits"]:
            assert r["tokens_per_s"] is None and r["tpot_s"] is None and "does not fit: needs" in r["note"]
    h1 = next(r for r in rows if r["device"] == "h100" and r["batch"] == 1 and r["weights"] == "float16")
    assert h1["n_devices"] == 1 and h1["parallel"] == "tp1" and h1["fits"]
    assert h1["tokens_per_s"] < h1["roofline_tokens_per_s"] and h1["usd_per_m_output"] > 0
    big = next(r for r in rows if r["device"] == "h100" and r["batch"] == 1000 and r["weights"] == "float16")
    assert big["n_devices"] > 1 and big["fits"]                     # sized per row, not for the largest batch
    assert "does not fit: needs" in err                             # the human table went to stderr


def test_columns_never_run_together(run_cli):
    code, out, err = run_cli("cost", "--preset", "llama-70b", "--hw", "h100,tpu-v5e", "--batch", "1,4096",
                             "--context", "4000", "--weights", "float16")
    assert code == 0, err
    for line in out.splitlines():
        assert not re.search(r"ms\d|\ds \d|\dms\d|kB\d", line), line
        assert not re.search(r"\d\.\d+\.\d", line), line           # two numbers glued


def test_speculative_rows(run_cli):
    code, out, err = run_cli("cost", "--preset", "llama-70b", "--hw", "a100", "--batch", "1", "--weights",
                             "int4-g32", "--draft", "llama-7b", "--spec-k", "4", "--acceptance", "0.8", "--json")
    assert code == 0, err
    row = json.loads(out)[0]
    s = row["speculative"]
    assert s["draft"] == "llama-7b" and s["k"] == 4 and s["speedup"] > 1
    assert row["tokens_per_s"] == pytest.approx(s["plain_tokens_per_s"] * s["speedup"])


def test_any_model_hf_config_and_checkpoint(run_cli, tmp_path, stories260k):
    hf = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
          "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
          "vocab_size": 128256, "max_position_embeddings": 131072, "rope_theta": 500000.0, "rms_norm_eps": 1e-05,
          "tie_word_embeddings": False, "hidden_act": "silu", "torch_dtype": "bfloat16",
          "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": 8192, "rope_type": "llama3"}}
    (tmp_path / "config.json").write_text(json.dumps(hf))
    got = {}
    for spec in (str(tmp_path), str(tmp_path / "config.json"), "llama-3.1-8b"):
        code, out, err = run_cli("cost", "--model", spec, "--hw", "a100", "--batch", "1", "--weights", "bf16",
                                 "--json")
        assert code == 0, err
        got[spec] = json.loads(out)[0]["tokens_per_s"]
    assert len(set(got.values())) == 1                              # the HF config is the preset's shape
    code, out, err = run_cli("roofline", "--model", str(stories260k["model"]), "--hw", "h100", "--batch", "1",
                             "--context", "100", "--weights", "float32")
    assert code == 0 and "0.00B params" in out, err
    code, _, err = run_cli("roofline", "--model", str(tmp_path / "nope.json"), "--hw", "h100")
    assert code == 2 and "nope.json" in err
