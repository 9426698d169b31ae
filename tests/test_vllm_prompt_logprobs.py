"""SamplingParams.prompt_logprobs with vLLM's meaning (vllm/outputs.py RequestOutput.prompt_logprobs):
None for the first prompt token, then for each later one a {token: Logprob} holding it (its logprob
under the raw logits of the position before, its rank) and the N most likely (-1: all). Checked
against log_softmax, in float64 numpy, of the logits of one whole-prompt reference forward
(all_logits=True on a fresh cache), under chunked prefill on and off, n > 1, block sizes 1..16,
prefix caching, preemption and a failed step; and that a request without it costs no all_logits pass."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pyinfer import SamplingParams
from pyinfer.config import ModelConfig
from pyinfer.engine import Engine, EngineConfig
from pyinfer.engine.scheduler import Scheduler
from pyinfer.model import Model
from pyinfer.weights import random_weights

from conftest import SHARED_MODELS

CFG = ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=64, vocab_size=96, max_seq_len=64)
TOL = 2e-5          # engine logits (batched, chunked, paged) against the one-pass reference: float32 sums


@pytest.fixture(scope="module")
def model():
    return Model(random_weights(CFG, seed=5))


def reference_logprobs(model: Model, prompt: list[int]) -> np.ndarray:
    """(P, V) float64 log_softmax of the reference forward's logits at every prompt position."""
    cache = model.new_cache(num_blocks=(len(prompt) + 15) // 16, block_size=16)
    logits = np.asarray(model.forward(cache.prepare([0], [np.asarray(prompt, np.int64)]), cache, all_logits=True),
                        np.float64)                                                  # (P, V)
    m = logits.max(axis=1, keepdims=True)
    return logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))


def check_against_reference(got, prompt: list[int], num: int, ref: np.ndarray) -> None:
    """``got``: RequestOutput.prompt_logprobs; ref: (P, V) reference log-probabilities."""
    V = ref.shape[1]
    assert got is not None and len(got) == len(prompt) and got[0] is None
    want_n = V if num == -1 else num
    for j in range(1, len(prompt)):
        row, entry, token = ref[j - 1], got[j], prompt[j]
        order = np.argsort(-row, kind="stable")
        assert token in entry and entry[token].decoded_token is None          # no tokenizer here
        for t, lp in entry.items():
            assert abs(lp.logprob - row[t]) <= TOL, (j, t, lp.logprob, row[t])
            lo, hi = int((row > row[t] + TOL).sum()) + 1, int((row > row[t] - TOL).sum()) + 1
            assert lo <= lp.rank <= hi, (j, t, lp.rank, lo, hi)                # rank 1: most likely
        top = set(int(t) for t in order[:want_n])
        tie = want_n < V and 0 < want_n and row[order[want_n - 1]] - row[order[want_n]] <= 2 * TOL
        if not tie:
            assert set(entry) == top | {token}, (j, sorted(entry), sorted(top | {token}))
        assert len(entry) in (want_n, want_n + 1)


def random_prompts(rng, count: int, shared: int = 0) -> list[list[int]]:
    head = [1] + [int(t) for t in rng.integers(3, CFG.vocab_size, shared)]
    return [head + [int(t) for t in rng.integers(3, CFG.vocab_size, int(rng.integers(0, 24)))]
            for _ in range(count)]


@pytest.mark.parametrize("block_size", [1, 4, 16])
@pytest.mark.parametrize("chunked", [False, True])
def test_prompt_logprobs_equal_log_softmax_of_the_full_forward(model, rng, block_size, chunked):
    """Mixed batches: requests with prompt_logprobs 0, 3, -1 and without, n 1 and 3, prompts of 1..30
    tokens sharing a prefix (so the prefix cache is offered), prefill whole or cut in chunks of 7."""
    budget = 7 if chunked else 256
    engine = Engine(model, config=EngineConfig(max_num_seqs=6, block_size=block_size, max_num_batched_tokens=budget),
                    seed=1)
    prompts = random_prompts(rng, 6, shared=5) + [[1]]
    asks = []
    for i, prompt in enumerate(prompts):
        num = [0, 3, -1, None][i % 4]
        params = SamplingParams(n=1 + 2 * (i % 2), temperature=0.8, max_tokens=3, prompt_logprobs=num)
        asks.append((engine.add_request(prompt, params), prompt, num))
    outs = {o.request_id: o for o in engine.run_until_done()}
    if chunked:
        assert engine.stats()["cut_prefill_chunks"] > 0
    for rid, prompt, num in asks:
        if num is None:
            assert outs[rid].prompt_logprobs is None
        else:
            check_against_reference(outs[rid].prompt_logprobs, prompt, num, reference_logprobs(model, prompt))


def test_a_cached_prefix_never_skips_a_prompt_logprob(model, rng):
    """The same prompt three times with the prefix cache on: a plain request reuses the cached
    blocks, a prompt_logprobs request computes every position anyway (vLLM skips the cache for it)."""
    engine = Engine(model, config=EngineConfig(block_size=4, max_num_batched_tokens=64, enable_prefix_caching=True))
    prompt = random_prompts(rng, 1, shared=20)[0]
    engine.add_request(prompt, SamplingParams(max_tokens=2))
    engine.run_until_done()
    hits = engine.stats()["prefix_hit_tokens"]
    rid = engine.add_request(prompt, SamplingParams(max_tokens=2, prompt_logprobs=2))
    (out,) = engine.run_until_done()
    assert engine.stats()["prefix_hit_tokens"] == hits and out.metrics.num_cached_tokens == 0
    check_against_reference(out.prompt_logprobs, prompt, 2, reference_logprobs(model, prompt))
    engine.add_request(prompt, SamplingParams(max_tokens=2))
    engine.run_until_done()
    assert engine.stats()["prefix_hit_tokens"] > hits                   # the plain one did hit
    assert rid not in engine.requests


def test_preemption_mid_prefill_keeps_every_prompt_logprob_exact(model, rng, monkeypatch):
    """A pool too small for everyone (56 slots; these lengths make two sequences lose their blocks
    mid-prefill): they are recomputed, taking back their own cached blocks only as far as their
    logprobs are done."""
    mid_prefill = []
    preempt = Scheduler._preempt

    def recording(self, seq):
        mid_prefill.append(seq.collects_prompt_logprobs)
        preempt(self, seq)

    monkeypatch.setattr(Scheduler, "_preempt", recording)
    engine = Engine(model, config=EngineConfig(block_size=4, num_blocks=14, max_num_seqs=4, max_num_batched_tokens=6,
                                               enable_prefix_caching=True))
    prompts = [[1] + [int(t) for t in rng.integers(3, CFG.vocab_size, n - 1)] for n in (20, 26, 23, 29)]
    ids = [engine.add_request(p, SamplingParams(max_tokens=24, ignore_eos=True, temperature=0, prompt_logprobs=1))
           for p in prompts]
    outs = {o.request_id: o for o in engine.run_until_done()}
    assert any(mid_prefill), f"no preemption mid-prefill ({mid_prefill}): the scheduler changed, retune the lengths"
    for rid, prompt in zip(ids, prompts):
        check_against_reference(outs[rid].prompt_logprobs, prompt, 1, reference_logprobs(model, prompt))


def test_without_prompt_logprobs_no_forward_asks_for_every_row(model, rng, monkeypatch):
    """prompt_logprobs=None costs nothing: every forward pass computes last-row logits only; with
    it, exactly the rows of that prompt's positions are asked for, and no other row."""
    calls = []                                          # (logits rows computed, sequences in the batch)
    forward = Model.forward

    def recording(self, batch, cache, all_logits=False, logit_rows=None):
        out = forward(self, batch, cache, all_logits=all_logits, logit_rows=logit_rows)
        calls.append((len(out), len(batch.seq_ids)))
        return out

    monkeypatch.setattr(Model, "forward", recording)
    engine = Engine(model, config=EngineConfig(block_size=4, max_num_batched_tokens=5), seed=0)
    for prompt in random_prompts(rng, 3, shared=8):
        engine.add_request(prompt, SamplingParams(max_tokens=4, n=2))
    engine.run_until_done()
    assert calls and all(rows == seqs for rows, seqs in calls)
    calls.clear()
    prompt = [1] + [int(t) for t in rng.integers(3, CFG.vocab_size, 12)]       # 13 tokens: 3 chunks of 5
    engine.add_request(prompt, SamplingParams(max_tokens=4, ignore_eos=True, prompt_logprobs=0))
    engine.run_until_done()
    assert calls == [(5, 1), (5, 1), (3, 1), (1, 1), (1, 1), (1, 1)]             # then 3 decodes


def test_a_failed_step_leaves_prompt_logprobs_as_before(model, rng, monkeypatch):
    """The step that completes the prompt raises after its prompt logprobs were taken (in the
    sampler): the rollback drops them, the retried step computes them once."""
    engine = Engine(model, config=EngineConfig(block_size=4, max_num_batched_tokens=6))
    prompt = [1] + [int(t) for t in rng.integers(3, CFG.vocab_size, 10)]
    engine.add_request(prompt, SamplingParams(max_tokens=3, temperature=0, prompt_logprobs=2))
    sample = Engine._sample

    def failing(self, *args):
        raise KeyboardInterrupt("injected")

    engine.step()                                                 # positions 0..5
    seq = engine.requests[0][1][0]
    before = seq.prompt_logprobs
    assert len(before) == 6
    monkeypatch.setattr(Engine, "_sample", failing)
    with pytest.raises(KeyboardInterrupt):
        engine.step()                                             # positions 6..10, then the sampler fails
    assert seq.prompt_logprobs is before and seq.num_computed_tokens == 6
    monkeypatch.setattr(Engine, "_sample", sample)
    (out,) = engine.run_until_done()
    check_against_reference(out.prompt_logprobs, prompt, 2, reference_logprobs(model, prompt))


def test_nan_logits_in_the_prompt_end_that_request_alone_with_error_naming_the_position():
    """Token 63's embedding is NaN (untied, so the output matrix is clean): the request holding it
    ends with "error" naming its prompt position; its batch mate goes on."""
    w = random_weights(dataclasses.replace(CFG, tied_embeddings=False), seed=7)
    w.tok_embeddings[63] = np.nan
    engine = Engine(Model(w), config=EngineConfig(block_size=4))
    rid = engine.add_request([1, 5, 63, 7], SamplingParams(max_tokens=3, prompt_logprobs=1))
    ok = engine.add_request([1, 5, 9, 7], SamplingParams(max_tokens=3, ignore_eos=True, prompt_logprobs=1))
    outs = {o.request_id: o for o in engine.run_until_done()}
    assert outs[rid].finish_reason == "error" and outs[rid].prompt_logprobs is None
    assert "prompt position" in outs[rid].error and "NaN" in outs[rid].error
    assert outs[ok].finish_reason == "length" and len(outs[ok].prompt_logprobs) == 4


def test_bad_prompt_logprobs_are_refused_by_name(model):
    engine = Engine(model)
    for bad in (-2, 1.5, "3"):
        with pytest.raises(ValueError, match="prompt_logprobs"):
            SamplingParams(prompt_logprobs=bad)
    with pytest.raises(ValueError, match="prompt_logprobs"):
        engine.add_request([1, 5], SamplingParams(prompt_logprobs=CFG.vocab_size + 1))
    assert not engine.has_unfinished()


def test_speculative_decoding_refuses_prompt_logprobs_by_name(model):
    """It never computes them: refused, not returned missing."""
    from pyinfer.engine.speculative import SpeculativeDecoder
    with pytest.raises(ValueError, match="prompt_logprobs"):
        SpeculativeDecoder(model, model, num_speculative_tokens=2).generate([[1, 5, 7]],
                                                                           SamplingParams(prompt_logprobs=1))


def test_an_abort_before_the_prompt_is_done_gives_no_prompt_logprobs(model):
    engine = Engine(model, config=EngineConfig(block_size=4, max_num_batched_tokens=4))
    rid = engine.add_request(list(range(1, 20)), SamplingParams(prompt_logprobs=1))
    engine.step()
    out = engine.abort(rid)
    assert out.prompt_logprobs is None and out.outputs[0].finish_reason == "abort"


def test_llm_generate_gives_vllms_prompt_logprobs_with_decoded_tokens():
    """stories260K through LLM.generate: decoded_token is the tokenizer's text of each id."""
    from pyinfer import LLM
    llm = LLM(model=str(SHARED_MODELS / "stories260K.bin"), tokenizer=str(SHARED_MODELS / "tok512.bin"),
              backend="numpy", max_num_batched_tokens=4)
    (out,) = llm.generate("Once upon a time there was", SamplingParams(max_tokens=2, prompt_logprobs=2),
                          use_tqdm=False)
    prompt = out.prompt_token_ids
    check = out.prompt_logprobs
    assert len(check) == len(prompt) and check[0] is None
    ref = reference_logprobs(llm.engine.model, prompt)
    tok = llm.engine.tokenizer
    for j in range(1, len(prompt)):
        assert prompt[j] in check[j] and len(check[j]) in (2, 3)
        for t, lp in check[j].items():
            assert lp.decoded_token == tok.decode([t]) and abs(lp.logprob - ref[j - 1, t]) <= TOL


def test_served_completions_echo_the_prompt_and_its_logprobs():
    """/v1/completions with echo (vLLM's): the prompt's text before the output's, and with logprobs
    the prompt tokens' (the first one null) before the output's, equal to LLM.generate's; echo with
    stream is refused by name."""
    openai = pytest.importorskip("openai")
    pytest.importorskip("uvicorn")
    from test_serve_openai import start
    from pyinfer import LLM
    llm = LLM(model=str(SHARED_MODELS / "stories260K.bin"), tokenizer=str(SHARED_MODELS / "tok512.bin"),
              backend="numpy")
    server, loop, thread, url = start(llm)
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)
        prompt = "Once upon a time"
        ref = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=5, logprobs=2, prompt_logprobs=2),
                           use_tqdm=False)[0]
        got = client.completions.create(model="m", prompt=prompt, max_tokens=5, temperature=0, echo=True,
                                        logprobs=2).choices[0]
        assert got.text == prompt + ref.outputs[0].text
        P = len(ref.prompt_token_ids)
        lp = got.logprobs
        assert len(lp.tokens) == P + len(ref.outputs[0].token_ids)
        assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None and lp.text_offset[0] == 0
        for j in range(1, P):
            entry = ref.prompt_logprobs[j]
            token = ref.prompt_token_ids[j]
            assert lp.tokens[j] == entry[token].decoded_token
            assert lp.token_logprobs[j] == pytest.approx(entry[token].logprob, abs=1e-5)
            assert len(lp.top_logprobs[j]) <= 2
        for k, (token, entry) in enumerate(zip(ref.outputs[0].token_ids, ref.outputs[0].logprobs)):
            assert lp.token_logprobs[P + k] == pytest.approx(entry[token].logprob, abs=1e-5)
        assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
        plain = client.completions.create(model="m", prompt=prompt, max_tokens=5, temperature=0, echo=True)
        assert plain.choices[0].text == got.text and plain.choices[0].logprobs is None
        with pytest.raises(openai.BadRequestError, match="echo"):
            client.completions.create(model="m", prompt=prompt, max_tokens=5, echo=True, stream=True)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        loop.stop()
