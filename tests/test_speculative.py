"""Speculative decoding: greedy output equals the target's exactly; at temperature > 0 the
rejection rule keeps the target's distribution (chi-square on a tiny vocabulary)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pyinfer.api import load
from pyinfer.config import ModelConfig, SamplingParams
from pyinfer.engine import Engine, EngineConfig
from pyinfer.engine.probs import sampling_probs
from pyinfer.engine.speculative import (SpeculativeDecoder, expected_tokens_per_step, layer_draft,
                                        truncated_draft, verify_draft)
from pyinfer.model import Model
from pyinfer.weights import random_weights

ALPHA = 1e-6        # a correct implementation fails a chi-square check once in a million runs


def chi2_pvalue(observed, expected) -> float:
    """Upper tail of Pearson's chi-square (Wilson-Hilferty normal approximation), over cells with
    expected > 0; any count in a cell of expected 0 is an outright failure (p = 0)."""
    observed, expected = np.asarray(observed, float), np.asarray(expected, float)
    if observed[expected == 0].sum() > 0:
        return 0.0
    o, e = observed[expected > 0], expected[expected > 0]
    stat, df = float(((o - e) ** 2 / e).sum()), len(e) - 1
    z = ((stat / df) ** (1 / 3) - (1 - 2 / (9 * df))) / math.sqrt(2 / (9 * df))
    return 0.5 * math.erfc(z / math.sqrt(2))


def test_expected_tokens_per_step():
    assert expected_tokens_per_step(0.0, 4) == 1.0
    assert expected_tokens_per_step(1.0, 4) == 5.0
    assert expected_tokens_per_step(0.5, 2) == pytest.approx(1.75)


def test_rejection_rule_emits_the_target_distribution_at_every_position(rng):
    """Context-free toy: position j has target p_j and draft q_j. Whatever the draft, the token
    emitted at position j (when the round gets that far) is distributed as p_j, and position j
    accepts with probability sum(min(p_j, q_j))."""
    V, k, N = 6, 3, 20000
    p = rng.dirichlet(np.ones(V), k + 1)                  # (k + 1, V)
    q = rng.dirichlet(np.ones(V), k)                      # (k, V)
    p[0, 2], q[1, 4] = 0.0, 0.0                           # zeros on either side are legal
    p /= p.sum(1, keepdims=True)
    q /= q.sum(1, keepdims=True)
    counts = np.zeros((k + 1, V))
    accepted = np.zeros(k)
    reached = np.zeros(k)
    drafts = np.stack([(rng.random((N, 1)) >= np.cumsum(q[j])[None, :-1]).sum(1) for j in range(k)], 1)  # (N, k)
    for row in drafts:
        draft = [int(t) for t in row]
        m, nxt = verify_draft(draft, q, p, rng, greedy=False)
        for j, t in enumerate(draft[:m] + [nxt]):
            counts[j, t] += 1
        reached[:min(m + 1, k)] += 1
        accepted[:m] += 1
    for j in range(k + 1):
        n = counts[j].sum()
        assert chi2_pvalue(counts[j], n * p[j]) > ALPHA, f"position {j}: {counts[j] / n} vs {p[j]}"
    for j in range(k):
        a = np.minimum(p[j], q[j]).sum()
        assert abs(accepted[j] / reached[j] - a) < 5 * math.sqrt(a * (1 - a) / reached[j]) + 1e-9


V8 = ModelConfig(dim=16, n_layers=1, n_heads=2, n_kv_heads=1, hidden_dim=24, vocab_size=8, max_seq_len=32,
                 name="v8")
V8_PROMPT = [1, 5]


def v8_target_and_draft() -> tuple[Model, Model]:
    """A vocab-8 target and an unrelated draft of the same shape."""
    return Model(random_weights(V8, seed=1)), Model(random_weights(V8, seed=2))


def law_of_tokens_2_and_3(model: Model, params: SamplingParams) -> np.ndarray:
    """(64,) P(t2, t3) = sum_t1 P(t1) P(t2 | t1) P(t3 | t1, t2) after V8_PROMPT, under params' sampling rule."""
    def probs(ctx):
        cache = model.new_cache(num_blocks=8, block_size=4)
        return sampling_probs(model.forward(cache.prepare([0], [np.array(ctx)]), cache)[0], params, model.ops)
    p1, joint = probs(V8_PROMPT), np.zeros((8, 8))
    for t1 in np.flatnonzero(p1):
        p2 = probs(V8_PROMPT + [int(t1)])
        for t2 in np.flatnonzero(p2):
            joint[t2] += p1[t1] * p2[t2] * probs(V8_PROMPT + [int(t1), int(t2)])
    return joint.ravel()


def check_tokens_2_and_3(outs, target: Model, draft: Model, params: SamplingParams) -> None:
    """The observed (t2, t3) counts follow the target's law and not the draft's (the check has teeth)."""
    observed = np.bincount([8 * o.output_ids[1] + o.output_ids[2] for o in outs], minlength=64)
    assert chi2_pvalue(observed, len(outs) * law_of_tokens_2_and_3(target, params)) > ALPHA
    assert chi2_pvalue(observed, len(outs) * law_of_tokens_2_and_3(draft, params)) < ALPHA


def test_speculative_sampling_keeps_the_target_distribution_end_to_end(seed):
    """Tiny target and an unrelated draft (vocab 8): the joint law of the 2nd and 3rd generated
    tokens over 3000 seeded requests matches the target's exact law; it does not match the draft's."""
    target, draft = v8_target_and_draft()
    params = [SamplingParams(temperature=1.0, top_k=6, seed=seed + i, max_tokens=4, ignore_eos=True)
              for i in range(3000)]
    outs, stats = SpeculativeDecoder(target, draft, num_speculative_tokens=2, block_size=4).generate(
        [V8_PROMPT] * len(params), params)
    print(stats.to_dict())
    assert all(len(o.output_ids) == 4 for o in outs) and 0.2 < stats.acceptance_rate < 0.95
    check_tokens_2_and_3(outs, target, draft, params[0])


@pytest.fixture(scope="module")
def gen260k(stories260k):
    return load(stories260k["model"], tokenizer=stories260k["tokenizer"])


def test_greedy_speculative_output_is_the_targets_greedy_output(gen260k):
    tok, target = gen260k.tokenizer, gen260k.model
    prompts = [tok.encode(t) for t in ("Once upon a time", "The little dog", "Lily and Tom went")]
    params = SamplingParams(temperature=0.0, max_tokens=80)
    engine = Engine(target, config=EngineConfig(max_num_seqs=1, batch_invariant=True))
    want = []
    for p in prompts:
        engine.add_request(p, params)
        want.append(engine.run_until_done()[0].output_ids)
    for draft, k in ((layer_draft(target, [0, 1, 2, 4]), 4), (truncated_draft(target, 2), 2)):
        outs, stats = SpeculativeDecoder(target, draft, k, batch_invariant=True).generate(prompts, params)
        print(draft.config.name, k, stats.to_dict())
        assert [o.output_ids for o in outs] == want
        assert 0 < stats.acceptance_rate < 1 and stats.target_steps_per_token < 1
        assert stats.accepted + stats.rounds == stats.emitted


def test_identical_draft_is_always_accepted(gen260k):
    target = gen260k.model
    k = 3
    outs, stats = SpeculativeDecoder(target, layer_draft(target, range(5)), k).generate(
        [[1, 403, 407]], SamplingParams(temperature=0.0, max_tokens=41, ignore_eos=True))
    assert stats.acceptance_rate == 1.0 and stats.mean_tokens_per_step == k + 1
    assert stats.rounds == 10 and stats.target_passes == 11 and len(outs[0].output_ids) == 41


def test_bad_speculative_setups_are_refused(gen260k):
    target = gen260k.model
    other = Model(random_weights(target.config.with_(vocab_size=300, name="v300"), seed=0))
    with pytest.raises(ValueError, match="draft vocab 300 differs from the target's 512"):
        SpeculativeDecoder(target, other)
    with pytest.raises(ValueError, match="num_speculative_tokens=0"):
        SpeculativeDecoder(target, target, 0)
    with pytest.raises(ValueError, match="draft layers must be increasing"):
        layer_draft(target, [2, 1])
    with pytest.raises(ValueError, match="1..5 layers"):
        truncated_draft(target, 6)
    with pytest.raises(ValueError, match="empty prompt"):
        SpeculativeDecoder(target, target).generate([[]], SamplingParams())
