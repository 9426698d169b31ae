"""`pyinfer study levers`: one seeded request trace through the engine, software levers on in turn.

The chain (each on top of the one before, measured in this process, in this order):
    float32, one request at a time -> int8-g32 weights -> int4-g32-a8 weights -> continuous batching
    -> prefix caching -> speculative decoding (a draft cut from the int4 model: its first layers and its last)
    -> chunked prefill
Every row runs the same Engine (speculative decoding is the engine's own, engine/spec_decode.py, with
continuous batching and prefix caching still on), so each lever stacks on all the ones before it.

Sampling is greedy (temperature 0): the outputs are fixed by the seed (speculative decoding's greedy
output is the target's own), their hashes are in the JSON. Timings are measured.
"""
from __future__ import annotations

import datetime
import hashlib
import math
from dataclasses import replace

import numpy as np

from ..config import SamplingParams
from ..engine import Engine, EngineConfig
from ..engine.metrics import summarize
from ..engine.speculative import layer_draft
from ..engine.trace import LengthDist, TraceRequest, replay, synthetic_trace
from ..model import Model
from ..ops import Ops
from ..quant import quantize_weights
from .levers_model import lever_predictions, quality_vs_f32

NA_RANDOM = "n/a (random weights)"


def add_lever_args(p) -> None:
    p.add_argument("--num-requests", type=int, default=32, help="requests in the trace (32; --quick 8)")
    p.add_argument("--rate", type=float, default=1000.0, help="Poisson arrivals per second (1000: faster than "
                                                               "any lever serves, so throughput is the server's, not the trace's)")
    p.add_argument("--prompt-len", default="uniform:8:40", help="prompt length distribution, system prompt "
                                                                 "excluded (uniform:8:40)")
    p.add_argument("--output-len", default="uniform:32:96", help="output length distribution (uniform:32:96)")
    p.add_argument("--system-prompt-len", type=int, default=48, help="shared system prompt tokens (48)")
    p.add_argument("--shared-fraction", type=float, default=0.5, help="share of requests with it (0.5)")
    p.add_argument("--max-num-seqs", type=int, default=16, help="batch cap of the batching levers (16)")
    p.add_argument("--chunk", type=int, default=32, help="max_num_batched_tokens of the chunked-prefill lever (32; "
                                                          "raised to max-num-seqs x (spec-k + 1) + 1 so every "
                                                          "decode's verification and one prefill token fit)")
    p.add_argument("--spec-k", type=int, default=2, help="draft tokens per speculative round (2)")
    p.add_argument("--draft-layers", type=int, default=0, help="draft = N layers of the int4 model: its first "
                                                               "N - 1 and its last (default: all but the "
                                                               "second-to-last, at least 1)")
    p.add_argument("--seed", type=int, default=0, help="trace seed (arrivals, lengths, tokens)")
    p.add_argument("--repeats", type=int, default=3, help="runs of the trace per lever; the row is the median "
                                                          "run by output tokens/s, every run's figure in the JSON (3)")
    p.add_argument("--usd-per-hour", type=float, default=None, help="price of this machine (default: the "
                                                                     "catalog's this-cpu price: per vCPU by CPU "
                                                                     "generation, pyinfer.analysis.catalog_cpu)")
    p.add_argument("--watts", type=float, default=None, help="power of this machine (default: the "
                                                           "catalog's: busy vCPUs at full load, per CPU generation)")
    p.add_argument("--hw", default="h100", help="device to predict the same levers on (h100)")
    p.add_argument("--quality-tokens", type=int, default=128, help="teacher-forced tokens for KL / top-1 (128)")
    p.add_argument("--plot", default=None, help="PNG path (default study-levers-<model>-<date>.png)")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--quick", action="store_true", help="8 requests, short outputs, 1 repeat: under a minute on toy")


def check_args(args) -> None:
    for name in ("num_requests", "max_num_seqs", "chunk", "quality_tokens", "repeats"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.system_prompt_len < 0:
        raise ValueError(f"--system-prompt-len must be >= 0, got {args.system_prompt_len}")
    if not 0 <= args.shared_fraction <= 1:
        raise ValueError(f"--shared-fraction must be in [0, 1], got {args.shared_fraction}")
    if not 1 <= args.spec_k <= 64:
        raise ValueError(f"--spec-k must be in [1, 64], got {args.spec_k}")
    for name in ("usd_per_hour", "watts"):
        v = getattr(args, name)
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ValueError(f"--{name.replace('_', '-')} must be a positive number, got {v}")


def build_trace(args, vocab_size: int, max_seq_len: int) -> list[TraceRequest]:
    """The synthetic trace, a shared system prompt (BOS + fixed tokens) put before a seeded fraction of
    the prompts; a request whose prompt + output would pass the context is refused by name."""
    base = synthetic_trace(args.num_requests, args.rate, LengthDist.parse(args.prompt_len),
                           LengthDist.parse(args.output_len), vocab_size, max_seq_len, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    system = tuple(int(t) for t in rng.integers(3, vocab_size, args.system_prompt_len))
    shared = rng.random(len(base)) < args.shared_fraction
    out = []
    for i, (r, s) in enumerate(zip(base, shared)):
        ids = (r.prompt_ids[0],) + system + r.prompt_ids[1:] if s else r.prompt_ids
        if len(ids) + r.max_tokens > max_seq_len:
            raise ValueError(f"request {i}: prompt {len(ids)} + output {r.max_tokens} tokens passes the model's "
                             f"context of {max_seq_len}; lower --prompt-len/--output-len/--system-prompt-len")
        out.append(replace(r, prompt_ids=ids))
    return out


def outputs_hash(outputs: list[list[int]]) -> str:
    return hashlib.sha256(repr(outputs).encode()).hexdigest()[:16]


def run_engine(model: Model, trace, config: EngineConfig, params: SamplingParams, draft: Model | None = None) -> dict:
    engine = Engine(model, config=config, draft_model=draft)
    outs = replay(engine, trace, params)
    stats = engine.stats()
    return {"summary": summarize([o.metrics for o in outs]), "engine": stats, "spec": stats["speculative"],
            "outputs": [o.output_ids for o in outs]}


def run_levers(gen, args, log=print) -> dict:
    """Every lever's measurement in order; the rows the report prints."""
    check_args(args)
    base = gen.model
    c = base.config
    backend = base.ops.backend
    trace = build_trace(args, c.vocab_size, c.max_seq_len)
    params = SamplingParams(temperature=0.0, seed=args.seed, max_tokens=1)
    max_prompt = max(len(r.prompt_ids) for r in trace)
    M = args.max_num_seqs
    serial = EngineConfig(max_num_seqs=1, max_num_batched_tokens=max_prompt + 1, enable_prefix_caching=False)
    batched = EngineConfig(max_num_seqs=M, max_num_batched_tokens=M * (max_prompt + 1), enable_prefix_caching=False)
    prefix = replace(batched, enable_prefix_caching=True)
    spec = replace(prefix, num_speculative_tokens=args.spec_k)
    chunked = replace(spec, max_num_batched_tokens=max(args.chunk, M * (args.spec_k + 1) + 1))
    models = {"float32": base}
    for fmt in ("int8-g32", "int4-g32-a8"):
        models[fmt] = Model(quantize_weights(base.host_weights, fmt), Ops(backend))
    n_draft = args.draft_layers or max(1, c.n_layers - 1)
    if not 1 <= n_draft <= c.n_layers:
        raise ValueError(f"--draft-layers must be in [1, {c.n_layers}], got {n_draft}")
    draft = layer_draft(models["int4-g32-a8"], [*range(n_draft - 1), c.n_layers - 1])   # the head expects the last
    plan = [("float32, one at a time", "float32", serial),
            ("+ int8-g32 weights", "int8-g32", serial),
            ("+ int4-g32-a8 weights", "int4-g32-a8", serial),
            (f"+ continuous batching ({M})", "int4-g32-a8", batched),
            ("+ prefix caching", "int4-g32-a8", prefix),
            (f"+ speculative (k={args.spec_k}, draft {n_draft}/{c.n_layers} layers int4)", "int4-g32-a8", spec),
            (f"+ chunked prefill ({chunked.max_num_batched_tokens} tokens/step)", "int4-g32-a8", chunked)]
    rows = []
    for name, fmt, cfg in plan:
        log(f"  lever: {name} ...")
        speculative = cfg.num_speculative_tokens > 0
        runs = [run_engine(models[fmt], trace, cfg, params, draft if speculative else None) for _ in range(args.repeats)]
        hashes = sorted({outputs_hash(x["outputs"]) for x in runs})   # more than one: batching changed a rounding
        speeds = [x["summary"]["output_token_throughput_per_s"] for x in runs]
        r = runs[int(np.argsort(speeds)[(len(runs) - 1) // 2])]                  # the median run (lower middle)
        s = r["summary"]
        row = {"lever": name, "weights": fmt, "engine_config": cfg.to_dict(), "speculative": speculative,
               "output_tokens": s["output_tokens"], "duration_s": s["duration_s"],
               "output_tokens_per_s": s["output_token_throughput_per_s"],
               "ttft_s": {k: s["ttft_s"][k] for k in ("p50", "p99")}, "tpot_s": {k: s["tpot_s"][k] for k in ("p50", "p99")},
               "outputs_sha256": outputs_hash(r["outputs"]), "prefix_cached_prompt_tokens": s["prefix_cached_prompt_tokens"],
               "engine_steps": r["engine"]["steps"], "output_tokens_per_s_runs": speeds,
               "outputs_sha256_of_repeats": hashes}
        if r["spec"] is not None:
            row["spec"] = r["spec"]
        rows.append(row)
    for i, row in enumerate(rows):
        prev = None if i == 0 else rows[i - 1]
        row["stacked_on"] = None if prev is None else prev["lever"]
        row["factor_vs_previous"] = 1.0 if prev is None else row["output_tokens_per_s"] / prev["output_tokens_per_s"]
        row["factor_vs_first"] = row["output_tokens_per_s"] / rows[0]["output_tokens_per_s"]
    log("  quality (teacher-forced KL, top-1 vs float32) ...")
    quality = quality_vs_f32(base, models, args.quality_tokens, args.seed)
    return {"trace": trace, "rows": rows, "quality": quality, "models": models, "draft_layers": n_draft,
            "configs": {"serial": serial, "batched": batched, "speculative": spec, "chunked": chunked}}


def summary_json(gen, args, res: dict, device_here, device_hw, name: str, busy: str | None) -> dict:
    random = args.preset is not None
    usd = args.usd_per_hour if args.usd_per_hour is not None else device_here.price_per_hour
    watts = args.watts if args.watts is not None else device_here.power_w
    preds = lever_predictions(gen.model.config, res, args, device_here, device_hw)
    for row, p in zip(res["rows"], preds):
        tps = row["output_tokens_per_s"]
        row["usd_per_m_output_tokens"] = None if usd is None else usd / 3600 / tps * 1e6
        row["joules_per_output_token"] = None if watts is None else watts / tps
        row.update(p)
        q = res["quality"].get(row["weights"])
        if random:
            row["mean_kl_vs_f32"] = row["top1_agreement_vs_f32"] = NA_RANDOM
        else:
            row["mean_kl_vs_f32"], row["top1_agreement_vs_f32"] = q["mean_kl"], q["top1_agreement"]
        if row.get("spec"):
            row["spec"]["acceptance_rate"] = NA_RANDOM if random else row["spec"]["acceptance_rate"]
    rows = res["rows"]
    best = max(rows, key=lambda r: r["output_tokens_per_s"])
    here = best["output_tokens_per_s"] / rows[0]["output_tokens_per_s"]
    hw = max(r["predicted_hw_tokens_per_s"] for r in rows) / rows[0]["predicted_hw_tokens_per_s"]

    def verdict(x):
        return "within" if 2 <= x <= 10 else ("below" if x < 2 else "above")
    sentence = (f"2-10x? On this machine the levers took {name} from {rows[0]['output_tokens_per_s']:.0f} to "
                f"{best['output_tokens_per_s']:.0f} output tokens/s ({here:.1f}x, best row '{best['lever']}'), "
                f"{verdict(here)} the claimed range; the same levers predicted on {device_hw.name} give {hw:.1f}x "
                f"({verdict(hw)}).")
    return {"study": "levers", "model": name, "source": gen.source, "backend": gen.model.ops.backend,
            "threads": gen.threads.count if gen.threads else 0, "machine": device_here.full_name,
            "date": datetime.date.today().isoformat(), "random_weights": random, "seed": args.seed,
            "trace": {"num_requests": args.num_requests, "rate_per_s": args.rate, "prompt_len": args.prompt_len,
                      "output_len": args.output_len, "system_prompt_len": args.system_prompt_len,
                      "shared_fraction": args.shared_fraction,
                      "requests": [{"arrival_s": r.arrival_s, "prompt_len": len(r.prompt_ids),
                                    "max_tokens": r.max_tokens} for r in res["trace"]]},
            "price": {"usd_per_hour": usd, "watts": watts,
                      "usd_per_hour_from": "--usd-per-hour" if args.usd_per_hour is not None else
                      device_here.price_basis,
                      "watts_from": "--watts" if args.watts is not None else
                      "catalog (pyinfer.analysis.catalog_cpu)" if watts is not None else "unknown",
                      "source": device_here.source,
                      "note": None if usd is not None and watts is not None else
                      "this CPU generation has no price or power in pyinfer.analysis.catalog_cpu: pass "
                      "--usd-per-hour and --watts for $ and J per token"},
            "hw": device_hw.name, "busy_warning": busy, "levers": rows, "answer": sentence}
