"""vLLM's offline API: the quickstart with only the import and the model changed, SamplingParams'
fields and defaults (vllm/sampling_params.py), the sampler's penalties / min_p / min_tokens against a
plain-Python rendering of vLLM's formulas, stop strings and tokens, logprobs against the model's own
logits, n samples, LLM(seed=), prompt forms, refusals, and the engine's streaming outputs."""
from __future__ import annotations

import ast
import contextlib
import io
import math

import numpy as np
import pytest

from pyinfer import SamplingParams
from pyinfer.config import ModelConfig
from pyinfer.engine import Engine, EngineConfig
from pyinfer.model import Model
from pyinfer.sampling import Sampler
from pyinfer.weights import random_weights

from conftest import SHARED_MODELS

STORIES260K, TOK512 = SHARED_MODELS / "stories260K.bin", SHARED_MODELS / "tok512.bin"

QUICKSTART = '''
from pyinfer import LLM, SamplingParams

prompts = [
    "Hello, my name is",
    "The president of the United States is",
    "The capital of France is",
    "The future of AI is",
]
sampling_params = SamplingParams(temperature=0.8, top_p=0.95)

llm = LLM(model=MODEL)

outputs = llm.generate(prompts, sampling_params)

for output in outputs:
    prompt = output.prompt
    generated_text = output.outputs[0].text
    print(f"Prompt: {prompt!r}, Generated text: {generated_text!r}")
'''


def run_quickstart(model: str) -> list[str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(QUICKSTART.replace("MODEL", repr(model)), {})
    return out.getvalue().splitlines()


@pytest.mark.parametrize("model", [str(STORIES260K), "toy"])
def test_vllm_quickstart_runs_with_the_import_and_model_changed(model):
    lines = run_quickstart(model)
    assert len(lines) == 4
    for line, prompt in zip(lines, ["Hello, my name is", "The president of the United States is",
                                    "The capital of France is", "The future of AI is"]):
        head = f"Prompt: {prompt!r}, Generated text: "
        assert line.startswith(head) and isinstance(ast.literal_eval(line[len(head):]), str)
    assert run_quickstart(model) == lines                 # LLM(seed=0), vLLM's default: reproducible


def test_sampling_params_defaults_and_fields_are_vllms():
    p = SamplingParams()
    assert (p.n, p.temperature, p.top_p, p.top_k, p.min_p, p.seed, p.max_tokens, p.min_tokens) == \
        (1, 1.0, 1.0, 0, 0.0, None, 16, 0)
    assert (p.presence_penalty, p.frequency_penalty, p.repetition_penalty) == (0.0, 0.0, 1.0)
    assert (p.stop, p.stop_token_ids, p.ignore_eos, p.logprobs, p.prompt_logprobs, p.skip_special_tokens) == \
        ((), (), False, None, None, True)
    assert SamplingParams(top_k=-1).top_k == 0 and SamplingParams(stop="x").stop == ("x",)
    assert SamplingParams(logprobs=True).logprobs == 1


@pytest.mark.parametrize("field,value", [("n", 0), ("presence_penalty", 2.5), ("frequency_penalty", -3.0),
                                         ("repetition_penalty", 0.0), ("top_k", -2), ("min_p", 1.5),
                                         ("min_tokens", 20), ("logprobs", -2), ("stop", [""]), ("stop", 5),
                                         ("ignore_eos", 1), ("max_tokens", 0), ("temperature", "1")])
def test_sampling_params_refuse_bad_values_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**{field: value})


def test_n_above_one_needs_sampling():
    with pytest.raises(ValueError, match="greedy"):
        SamplingParams(n=2, temperature=0)


def vllm_reference(logits, params, prompt, output, rng_value):
    """vLLM's sampler written out element by element: min_tokens mask, repetition then frequency and
    presence penalties, greedy argmax, or temperature, min_p, top_k, top_p and a CDF draw."""
    x = [float(v) for v in logits]
    V = len(x)
    if len(output) < params.min_tokens:
        for t in params.stop_token_ids:
            x[t] = -math.inf
    seen = set(prompt) | set(output)
    for t in range(V):
        if t in seen and params.repetition_penalty != 1.0:
            x[t] = x[t] / params.repetition_penalty if x[t] > 0 else x[t] * params.repetition_penalty
        count = output.count(t)
        x[t] -= params.frequency_penalty * count + params.presence_penalty * (count > 0)
    x = np.float32(x)
    if params.temperature < 1e-5:
        return int(np.argmax(x))
    z = x.astype(np.float64) / params.temperature
    probs = np.exp(z - z.max())
    probs /= probs.sum()
    probs[probs < params.min_p * probs.max()] = 0.0
    if params.top_k > 0:
        kth = np.sort(probs)[-params.top_k]
        probs[probs < kth] = 0.0
    if params.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cum = np.cumsum(probs[order])
        keep = order[:int(np.searchsorted(cum, params.top_p * cum[-1])) + 1]
        probs = np.where(np.isin(np.arange(V), keep), probs, 0.0)
    cdf = np.cumsum(probs)
    return int(min(np.searchsorted(cdf, rng_value * cdf[-1], side="right"), V - 1))


@pytest.mark.parametrize("case", range(12))
def test_sampler_follows_vllms_order_and_formulas(case, rng):
    V = 64
    params = SamplingParams(
        temperature=float(rng.choice([0.0, 0.7, 1.3])), top_k=int(rng.choice([0, 5, 20])),
        top_p=float(rng.choice([1.0, 0.8])), min_p=float(rng.choice([0.0, 0.05, 0.3])),
        repetition_penalty=float(rng.choice([1.0, 1.3, 0.8])), frequency_penalty=float(rng.uniform(-1, 1)),
        presence_penalty=float(rng.uniform(-1, 1)), min_tokens=int(rng.integers(0, 4)),
        stop_token_ids=tuple(int(t) for t in rng.choice(V, 2, replace=False)), seed=int(rng.integers(1 << 30)))
    prompt = [int(t) for t in rng.integers(0, V, 6)]
    output = [int(t) for t in rng.integers(0, V, int(rng.integers(0, 6)))]
    for _ in range(5):
        logits = (3 * rng.standard_normal(V)).astype(np.float32)
        sampler = Sampler(params, rng=np.random.default_rng(7))
        coin = np.random.default_rng(7).random()
        assert sampler.sample(logits, prompt_ids=prompt, output_ids=output) == \
            vllm_reference(logits, params, prompt, output, coin)


CFG = ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=64, vocab_size=96, max_seq_len=64)


def engine_of(seed=None, **kw):
    return Engine(Model(random_weights(CFG, seed=3)), config=EngineConfig(max_num_seqs=8, **kw), seed=seed)


def drain(engine):
    finals, steps = {}, []
    while engine.has_unfinished():
        outs = engine.step()
        steps.append(outs)
        for o in outs:
            assert o.request_id not in finals, "an output after the request finished"
            if o.finished:
                finals[o.request_id] = o
    return finals, steps


def test_n_samples_are_seeded_seed_plus_index_like_single_requests(rng):
    engine = engine_of()
    prompt = [1] + [int(t) for t in rng.integers(3, 96, 5)]
    rid = engine.add_request(prompt, SamplingParams(n=3, temperature=0.9, seed=11, max_tokens=6, ignore_eos=True))
    singles = [engine.add_request(prompt, SamplingParams(temperature=0.9, seed=11 + i, max_tokens=6, ignore_eos=True))
               for i in range(3)]
    finals, _ = drain(engine)
    assert [c.index for c in finals[rid].outputs] == [0, 1, 2]
    assert [c.token_ids for c in finals[rid].outputs] == [finals[s].outputs[0].token_ids for s in singles]


def test_engine_seed_makes_unseeded_requests_reproducible(rng):
    prompt = [1] + [int(t) for t in rng.integers(3, 96, 4)]
    runs = []
    for seed in (5, 5, 6):
        engine = engine_of(seed=seed)
        ids = [engine.add_request(prompt, SamplingParams(temperature=1.0, max_tokens=12, ignore_eos=True))
               for _ in range(3)]
        finals, _ = drain(engine)
        runs.append([finals[i].outputs[0].token_ids for i in ids])
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_stop_token_ids_are_kept_in_token_ids_and_min_tokens_masks_them(rng):
    prompt = [1] + [int(t) for t in rng.integers(3, 96, 4)]
    engine = engine_of()
    base = engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))
    free = drain(engine)[0][base].outputs[0].token_ids
    stop = free[2]
    first = free.index(stop)
    engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=8, ignore_eos=True, stop_token_ids=[stop]))
    out = next(iter(drain(engine)[0].values())).outputs[0]
    assert out.token_ids == free[:first + 1] and out.finish_reason == "stop" and out.stop_reason == stop
    engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=8, ignore_eos=True, stop_token_ids=[stop],
                                              min_tokens=first + 1))
    out = next(iter(drain(engine)[0].values())).outputs[0]
    assert stop not in out.token_ids[:first + 1]


def test_too_many_prompt_logprobs_and_logprobs_are_refused():
    engine = engine_of()
    with pytest.raises(ValueError, match="prompt_logprobs"):
        engine.add_request([1, 5], SamplingParams(prompt_logprobs=97))
    with pytest.raises(ValueError, match="logprobs"):
        engine.add_request([1, 5], SamplingParams(logprobs=97))
    assert not engine.has_unfinished()


@pytest.fixture(scope="module")
def llm260k():
    from pyinfer import LLM
    return LLM(model=str(STORIES260K), tokenizer=str(TOK512), backend="numpy")


def test_streamed_deltas_make_the_final_text_and_decode(llm260k):
    engine = llm260k.engine
    tok = engine.tokenizer
    ids = [engine.add_request(p, SamplingParams(temperature=0.8, seed=i, max_tokens=30))
           for i, p in enumerate(["Once upon a time", "The cat", "Lily"])]
    finals, steps = drain(engine)
    for rid in ids:
        deltas = [c.delta_text for outs in steps for o in outs if o.request_id == rid for c in o.outputs]
        final = finals[rid].outputs[0]
        assert "".join(deltas) == final.text
        prompt_ids = finals[rid].prompt_token_ids
        stream = tok.stream(prev_token=prompt_ids[-1])
        assert final.text == "".join(stream.feed(t) for t in finals[rid].output_ids) + stream.flush()
        m = finals[rid].metrics
        assert m.queue_s >= 0 and m.ttft_s >= m.queue_s and m.num_output_tokens == len(final.token_ids)


def test_stop_strings_end_the_text_before_them_and_never_stream_them(llm260k):
    greedy = SamplingParams(temperature=0, max_tokens=40)
    full = llm260k.generate("Once upon a time", greedy, use_tqdm=False)[0].outputs[0].text
    stop = full[12:16]
    cut = full.index(stop)
    out = llm260k.generate("Once upon a time", SamplingParams(temperature=0, max_tokens=40, stop=[stop]),
                           use_tqdm=False)[0].outputs[0]
    assert (out.text, out.finish_reason, out.stop_reason) == (full[:cut], "stop", stop)
    kept = llm260k.generate("Once upon a time", SamplingParams(temperature=0, max_tokens=40, stop=stop,
                                                               include_stop_str_in_output=True), use_tqdm=False)
    assert kept[0].outputs[0].text == full[:cut + len(stop)]
    engine = llm260k.engine
    rid = engine.add_request("Once upon a time", SamplingParams(temperature=0, max_tokens=40, stop=[stop]))
    _, steps = drain(engine)
    streamed = "".join(c.delta_text for outs in steps for o in outs if o.request_id == rid for c in o.outputs)
    assert streamed == full[:cut]


def test_logprobs_are_the_models_raw_log_softmax(llm260k):
    from pyinfer.sampling import log_softmax
    out = llm260k.generate([[1, 403, 407]], SamplingParams(temperature=0.8, seed=3, max_tokens=3, logprobs=3),
                           use_tqdm=False)[0].outputs[0]
    model = llm260k.engine.model
    ids = [1, 403, 407] + out.token_ids
    total = 0.0
    for k, token in enumerate(out.token_ids):
        cache = model.new_cache(block_size=16)
        ref = log_softmax(model.forward(cache.prepare([0], [np.asarray(ids[:3 + k])]), cache)[0])
        entry = out.logprobs[k]
        assert entry[token].logprob == pytest.approx(float(ref[token]), abs=1e-4)
        assert entry[token].rank == int((ref > ref[token]).sum()) + 1
        top = sorted(entry.values(), key=lambda lp: lp.rank)[:3]
        assert [lp.rank for lp in top] == [1, 2, 3]
        assert [lp.logprob for lp in top] == pytest.approx(sorted(ref.tolist(), reverse=True)[:3], abs=1e-4)
        total += entry[token].logprob
    assert out.cumulative_logprob == pytest.approx(total, abs=1e-5)


def test_llm_prompt_forms_and_refusals(llm260k):
    p = SamplingParams(temperature=0, max_tokens=5)
    ids = llm260k.get_tokenizer().encode("The cat", bos=True)
    a, b, c, d = llm260k.generate(["The cat", ids, {"prompt": "The cat"}, {"prompt_token_ids": ids}], p,
                                  use_tqdm=False)
    assert a.outputs[0].token_ids == b.outputs[0].token_ids == c.outputs[0].token_ids == d.outputs[0].token_ids
    assert a.prompt == "The cat" and b.prompt is None and a.prompt_token_ids == ids
    with pytest.raises(ValueError, match="multi_modal_data"):
        llm260k.generate({"prompt": "x", "multi_modal_data": {}}, p)
    with pytest.raises(ValueError, match="no chat template"):
        llm260k.chat([{"role": "user", "content": "hi"}], p)
    from pyinfer import LLM
    for kw, name in (({"tensor_parallel_size": 2}, "tensor_parallel_size"), ({"dtype": "float16"}, "dtype"),
                     ({"gpu_memory_utilization": 0.9}, "gpu_memory_utilization"), ({"bogus": 1}, "bogus"),
                     ({"max_model_len": 4096}, "max_model_len")):
        with pytest.raises(ValueError, match=name):
            LLM(model="toy", **kw)


def test_llm_chat_renders_the_template_and_generates_from_it(llm260k):
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    p = SamplingParams(temperature=0, max_tokens=6)
    out = llm260k.chat([{"role": "user", "content": "Once upon a time"}], p, chat_template=template,
                       use_tqdm=False)[0]
    ids = llm260k.get_tokenizer().encode("Once upon a time", bos=False)
    ref = llm260k.generate([ids], p, use_tqdm=False)[0]
    assert out.prompt == "Once upon a time" and out.prompt_token_ids == ids
    assert out.outputs[0].token_ids == ref.outputs[0].token_ids


def test_abort_returns_the_final_output_with_finish_reason_abort(rng):
    engine = engine_of()
    rid = engine.add_request([1] + [int(t) for t in rng.integers(3, 96, 3)],
                             SamplingParams(n=2, temperature=1.0, max_tokens=9, ignore_eos=True))
    engine.step()
    engine.step()
    out = engine.abort(rid)
    assert out.finished and [c.finish_reason for c in out.outputs] == ["abort", "abort"]
    assert [len(c.token_ids) for c in out.outputs] == [2, 2]
    assert engine.abort(rid) is None and not engine.has_unfinished() and engine.cache.blocks_in_use() == 0


def test_a_failed_step_leaves_the_streamed_state_as_it_was(llm260k):
    """Text, offsets, logprobs and stop strings are rebound, never mutated, so the step's rollback
    restores them: a run with a step that raised gives what a run without one gives."""
    engine = llm260k.engine
    params = [SamplingParams(temperature=0.9, seed=4, max_tokens=25, stop=[" the "], logprobs=2, n=2),
              SamplingParams(temperature=0, max_tokens=20, frequency_penalty=0.5)]

    def run(fail_at):
        ids = [engine.add_request(p, sp) for p, sp in zip(["Once upon a time", "The dog"], params)]
        calls = [0]

        def flaky(*args):                      # after a sample has changed its sequence: then raise
            calls[0] += 1
            type(engine)._sample(engine, *args)
            if calls[0] == fail_at:
                raise MemoryError("injected")
        engine._sample = flaky
        streamed, finals = {i: ["", ""] for i in ids}, {}
        try:
            while engine.has_unfinished():
                try:
                    outs = engine.step()
                except MemoryError:
                    continue
                for o in outs:
                    for c in o.outputs:
                        streamed[o.request_id][c.index] += c.delta_text
                    if o.finished:
                        finals[o.request_id] = o
        finally:
            del engine._sample
        return [([c.text for c in finals[i].outputs], [c.token_ids for c in finals[i].outputs],
                 [c.cumulative_logprob for c in finals[i].outputs], streamed[i][:len(finals[i].outputs)])
                for i in ids]

    clean, failed = run(0), run(9)
    assert failed == clean
    for texts, _, _, streams in clean:
        assert streams == texts


def test_text_deltas_hold_back_incomplete_utf8(llm260k):
    """Multi-byte characters arrive as byte tokens: no delta holds half a character (U+FFFD), and
    the deltas join to the tokenizer's decode."""
    from pyinfer.engine.outputs import completion_output, detokenize
    from pyinfer.engine.sequence import Sequence
    tok = llm260k.get_tokenizer()
    prompt = tok.encode("Once", bos=True)
    text = " café 日本 ok"
    out_ids = tok.encode(text, bos=False)
    assert len(out_ids) > len(text.split())                  # byte-fallback pieces among them
    params = SamplingParams(max_tokens=64)
    seq = Sequence(seq_id=0, prompt_ids=prompt, params=params, sampler=Sampler(params), arrival_s=0.0)
    deltas = []
    for k, t in enumerate(out_ids):
        seq.token_ids.append(t)
        last = k == len(out_ids) - 1
        if last:
            seq.finish_reason = "length"
        detokenize(seq, tok, frozenset({1, 2}), final=last)
        deltas.append(completion_output(seq, 0).delta_text)
    assert "" in deltas                                      # a first byte of a character waited
    assert all("\ufffd" not in d for d in deltas) and "".join(deltas) == tok.decode(prompt + out_ids)[len("Once"):]
