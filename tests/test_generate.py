"""Generation counts steps as llama2.c's run.c does, stops on stop tokens, and samples reproducibly."""
from __future__ import annotations

import numpy as np
import pytest

from pyinfer.api import load
from pyinfer.config import SamplingParams
from pyinfer.generate import count_costs, generate


@pytest.fixture(scope="module")
def gen(stories260k):
    return load(str(stories260k["model"]), tokenizer=str(stories260k["tokenizer"]))


@pytest.mark.parametrize("steps", [1, 3, 4, 5, 6, 40])
def test_steps_are_forward_positions_and_outputs_are_prefixes(gen, steps):
    prompt = gen.tokenizer.encode("Once upon a time")                  # BOS + 4 tokens
    greedy = SamplingParams(temperature=0)
    full = generate(gen.model, prompt, 64, greedy).output_ids
    res = generate(gen.model, prompt, steps, greedy)
    assert res.output_ids == full[:steps]                               # run.c prints `steps` tokens
    assert res.n_generated == max(0, steps - (len(prompt) - 1))
    assert sum(res.step_q_lens) == steps                               # forward positions run


def test_stop_token_ends_generation(gen):
    prompt = gen.tokenizer.encode("Once upon a time")
    full = generate(gen.model, prompt, 40, SamplingParams(temperature=0)).output_ids
    stop = full[10]                                                     # a token greedy decoding emits
    res = generate(gen.model, prompt, 40, SamplingParams(temperature=0, stop_token_ids=(stop,)))
    assert res.stop_reason == f"stop token {stop}"
    assert res.output_ids == full[:full.index(stop)]


def test_sampling_with_seed_is_reproducible_and_top_k_1_is_greedy(gen):
    prompt = gen.tokenizer.encode("Once upon a time")
    p = SamplingParams(temperature=0.9, top_p=0.8, seed=123)
    a, b = (generate(gen.model, prompt, 50, p).output_ids for _ in range(2))
    assert a == b
    greedy = generate(gen.model, prompt, 50, SamplingParams(temperature=0)).output_ids
    assert generate(gen.model, prompt, 50, SamplingParams(temperature=1.3, top_k=1, seed=5)).output_ids == greedy


def test_cost_replay_counts_every_forward(gen):
    prompt = gen.tokenizer.encode("Once upon a time")
    res = generate(gen.model, prompt, 30, SamplingParams(temperature=0))
    counter = count_costs(gen.model, res)
    c = gen.model.config
    n_decode = len(res.step_q_lens) - 1
    matmul_calls = counter.calls[("decode", "matmul")]
    assert matmul_calls == n_decode * (7 * c.n_layers + 1)              # 7 linears per layer + head
    # every decode step reads each weight once: the linear weights and the head (tied: the embedding)
    linear = c.n_layers * (c.layer_params() - 2 * c.dim) * 4 + c.vocab_size * c.dim * 4
    assert counter.by_op("decode")["matmul"].bytes_weights == n_decode * linear
    with pytest.raises(ValueError, match="longer than the model's context of 512"):
        generate(gen.model, [1] * 513, 10, SamplingParams())
    assert np.isfinite(res.ttft_s)


def test_one_sequence_generate_refuses_what_it_does_not_model_and_applies_penalties():
    """load(...).generate runs one sequence: n, stop strings and logprobs are refused by name (they
    were ignored), while penalties and min_tokens read the tokens so far as the engine's sampler does."""
    from pyinfer.api import load
    from pyinfer.engine import LLM
    gen = load(preset="toy", backend="numpy")
    for bad in (dict(n=2, temperature=0.8), dict(stop=["x"]), dict(logprobs=1), dict(prompt_logprobs=1)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            gen.generate("hi", steps=8, params=SamplingParams(**bad))
    params = SamplingParams(temperature=0, repetition_penalty=1.5, max_tokens=12, ignore_eos=True)
    ids = gen.tokenizer.encode("hi", bos=True)
    alone = gen.generate("hi", steps=len(ids) + 12, params=params).result.output_ids[len(ids) - 1:][:12]
    llm = LLM(gen.model, tokenizer=gen.tokenizer)
    assert alone == llm.generate("hi", params, use_tqdm=False)[0].outputs[0].token_ids
