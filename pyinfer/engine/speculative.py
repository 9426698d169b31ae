"""Speculative decoding: a cheap draft model proposes k tokens, the target checks them all in one
forward pass, and the standard rejection rule keeps exactly the target's distribution.

For draft tokens x_1..x_k drawn from the draft's distributions q_1..q_k, and the target's
distributions p_1..p_{k+1} from one verification pass: x_j is accepted with probability
min(1, p_j(x_j) / q_j(x_j)); at the first rejection the next token is drawn from
norm(max(0, p_j - q_j)) and the round ends; if all k are accepted a bonus token is drawn from
p_{k+1}. Each round therefore emits between 1 and k + 1 tokens, all distributed as the target
alone would emit them (Leviathan et al. 2023, Chen et al. 2023). At temperature 0 p and q are
one-hot, so a draft token is kept exactly when it is the target's argmax: the output is the
target's greedy output.

If each draft token is accepted independently with probability a, a round emits on average
(1 - a^(k+1)) / (1 - a) tokens (``expected_tokens_per_step``); the measured mean sits beside it.

The draft is any ``Model`` with the target's vocabulary: a smaller preset, the target with some
layers skipped (``layer_draft``) or truncated (``truncated_draft``), or a quantized copy.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..config import SamplingParams
from ..kv_cache import PagedKVCache
from ..model import Model
from ..sampling import is_greedy
from ..tokenization import with_stop_ids
from ..weights import ModelWeights
from .model_runner import batch_invariant_model, make_cache
from .probs import sample_from, sampling_probs
from .sequence import check_params, check_prompt_ids


def expected_tokens_per_step(acceptance_rate: float, k: int) -> float:
    """(1 - a^(k+1)) / (1 - a): tokens per verification round if each draft token is accepted
    independently with probability a (k + 1 when a = 1)."""
    a = acceptance_rate
    return float(k + 1) if a >= 1.0 else (1.0 - a ** (k + 1)) / (1.0 - a)


def verify_draft(draft_tokens: list[int], q: np.ndarray, p, rng: np.random.Generator,
                 greedy: bool) -> tuple[int, int]:
    """The rejection rule. draft_tokens: k ids; q: (k, V) draft probabilities they were drawn from;
    p: (k + 1, V) target probabilities, or a function j -> p[j] (read lazily: only the rows the rule
    reaches, so whatever it raises for a row comes out after the drafts before that row were accepted).
    Returns (number accepted m, the token that follows them)."""
    row = p if callable(p) else p.__getitem__
    for j, x in enumerate(draft_tokens):
        pj = row(j)                                           # (V,)
        if greedy:
            ok = pj[x] == 1.0
        else:
            ok = rng.random() * q[j][x] < pj[x]               # probability min(1, p/q)
        if not ok:
            residual = np.maximum(pj - q[j], 0.0)             # (V,)
            return j, sample_from(residual if residual.sum() > 0 else pj, rng)
    k = len(draft_tokens)
    return k, sample_from(row(k), rng)


def layer_draft(model: Model, layers) -> Model:
    """A free draft from the target's own weights: only the listed layers, in order, with the
    embeddings, final norm and head shared (self-speculative decoding by layer skipping)."""
    c, w = model.config, model.weights
    layers = [int(i) for i in layers]
    if not layers or sorted(set(layers)) != layers or layers[0] < 0 or layers[-1] >= c.n_layers:
        raise ValueError(f"draft layers must be increasing, distinct and within 0..{c.n_layers - 1}, got {layers}")
    name = f"{c.name}[layers {','.join(map(str, layers))}]"
    weights = ModelWeights(c.with_(n_layers=len(layers), name=name), w.tok_embeddings,
                           [w.layers[i] for i in layers], w.norm, w.output)
    return Model(weights, model.ops)


def truncated_draft(model: Model, n_layers: int) -> Model:
    """The target's first n_layers (early exit) as a draft."""
    if not 1 <= n_layers <= model.config.n_layers:
        raise ValueError(f"a truncated draft needs 1..{model.config.n_layers} layers, got {n_layers}")
    return layer_draft(model, range(n_layers))


@dataclass
class SpecStats:
    k: int
    target_passes: int = 0      # target forward passes (the prompt prefill included)
    draft_passes: int = 0
    rounds: int = 0             # verification rounds, summed over sequences
    proposed: int = 0           # draft tokens proposed
    evaluated: int = 0          # draft tokens the rule looked at (those after a rejection are not)
    accepted: int = 0
    emitted: int = 0            # tokens produced by verification rounds (accepted + 1 per round)
    full_rounds: int = 0        # rounds that proposed all k tokens (not cut short by max_tokens)
    full_round_tokens: int = 0
    generated: int = 0          # all output tokens, the one sampled after the prefill included
    sequences: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.evaluated if self.evaluated else float("nan")

    @property
    def mean_tokens_per_step(self) -> float:
        return self.full_round_tokens / self.full_rounds if self.full_rounds else float("nan")

    @property
    def target_steps_per_token(self) -> float:
        """Target forward positions per generated token, per sequence: plain decoding needs 1."""
        return (self.rounds + self.sequences) / self.generated if self.generated else float("nan")

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(acceptance_rate=self.acceptance_rate, mean_tokens_per_step=self.mean_tokens_per_step,
                 expected_tokens_per_step=expected_tokens_per_step(self.acceptance_rate, self.k),
                 target_steps_per_token=self.target_steps_per_token,
                 decode_step_savings=1.0 - self.target_steps_per_token)
        return d


@dataclass
class _SpecSeq:
    sid: int
    tokens: list[int]
    prompt_len: int
    params: SamplingParams
    rng: np.random.Generator
    draft_computed: int = 0
    finish_reason: str | None = None
    draft_tokens: list[int] = field(default_factory=list)
    q: list[np.ndarray] = field(default_factory=list)

    @property
    def n_out(self) -> int:
        return len(self.tokens) - self.prompt_len


@dataclass
class SpecOutput:
    output_ids: list[int]
    finish_reason: str


class SpeculativeDecoder:
    """Generates a batch of prompts with a target and a draft model, each on its own paged cache.
    ``batch_invariant=True`` runs both through BatchInvariantOps, so the target's verification
    logits are bit-identical to its one-token decodes (see engine/batch_invariant.py)."""

    def __init__(self, target: Model, draft: Model, num_speculative_tokens: int = 4, block_size: int = 16,
                 batch_invariant: bool = False):
        if draft.config.vocab_size != target.config.vocab_size:
            raise ValueError(f"draft vocab {draft.config.vocab_size} differs from the target's "
                             f"{target.config.vocab_size}")
        if not 1 <= num_speculative_tokens <= 64:
            raise ValueError(f"num_speculative_tokens={num_speculative_tokens} must be in [1, 64]")
        if batch_invariant:
            target, draft = batch_invariant_model(target), batch_invariant_model(draft)
        self.target, self.draft, self.k, self.block_size = target, draft, num_speculative_tokens, block_size

    def generate(self, prompts: list, params: SamplingParams | list[SamplingParams]
                 ) -> tuple[list[SpecOutput], SpecStats]:
        """Outputs in prompt order (text or not: token ids) and the run's statistics."""
        c, k = self.target.config, self.k
        params = [params] * len(prompts) if isinstance(params, SamplingParams) else list(params)
        seqs = []
        for i, (prompt, sp) in enumerate(zip(prompts, params)):
            sp = with_stop_ids(sp, None)                 # llama2.c's EOS ids (no tokenizer here)
            check_params(sp, c.vocab_size)
            unmodelled = [name for name, off in (("n", 1), ("presence_penalty", 0.0), ("frequency_penalty", 0.0),
                                                 ("repetition_penalty", 1.0), ("min_p", 0.0), ("min_tokens", 0),
                                                 ("stop", ()), ("logprobs", None), ("prompt_logprobs", None))
                          if getattr(sp, name) != off]
            if unmodelled:
                raise ValueError(f"speculative decoding does not model SamplingParams {', '.join(unmodelled)}: "
                                 "its acceptance rule covers temperature, top_k and top_p only")
            ids = check_prompt_ids(prompt, c.vocab_size, min(c.max_seq_len, self.draft.config.max_seq_len))
            seqs.append(_SpecSeq(i, ids, len(ids), sp, np.random.default_rng(sp.seed)))
        num_blocks = sum(-(-min(len(s.tokens) + s.params.max_tokens + k, c.max_seq_len) // self.block_size) + 1
                         for s in seqs)
        tcache = make_cache(self.target, self.block_size, num_blocks)
        dcache = make_cache(self.draft, self.block_size, num_blocks)
        stats = SpecStats(k=k, sequences=len(seqs))

        logits = self.target.forward(tcache.prepare([s.sid for s in seqs], [s.tokens for s in seqs]), tcache)
        stats.target_passes += 1
        for s, row in zip(seqs, logits):
            self._emit(s, [sample_from(sampling_probs(row, s.params, self.target.ops, f"prefill of sequence {s.sid}"), s.rng)],
                       stats)
        active = [s for s in seqs if s.finish_reason is None]
        while active:
            ks = [min(k, s.params.max_tokens - s.n_out - 1, c.max_seq_len - len(s.tokens)) for s in active]
            self._propose(active, ks, dcache, stats)
            fed = [np.array(s.tokens[-1:] + s.draft_tokens, np.int64) for s in active]   # pending + k_i drafts
            meta = tcache.prepare([s.sid for s in active], fed)
            rows = self.target.forward(meta, tcache, all_logits=True)                        # (T, V)
            stats.target_passes += 1
            for s, k_i, end in zip(active, ks, meta.cu_seqlens_q[1:]):
                p = np.stack([sampling_probs(r, s.params, self.target.ops, f"verification of sequence {s.sid}")
                              for r in rows[end - k_i - 1:end]])
                q = np.stack(s.q) if k_i else np.zeros((0, p.shape[1]))
                m, nxt = verify_draft(s.draft_tokens, q, p, s.rng, is_greedy(s.params.temperature))
                stats.rounds += 1
                stats.evaluated += min(m + 1, k_i)
                stats.accepted += m
                stats.emitted += m + 1
                if k_i == k:
                    stats.full_rounds += 1
                    stats.full_round_tokens += m + 1
                before = len(s.tokens)                                  # pending token included
                tcache.truncate(s.sid, before + m)                      # keep pending + accepted drafts
                s.draft_computed = min(s.draft_computed, before + m)
                dcache.truncate(s.sid, s.draft_computed)
                self._emit(s, s.draft_tokens[:m] + [nxt], stats)
                s.draft_tokens, s.q = [], []
                if s.finish_reason is not None:
                    tcache.free(s.sid)
                    dcache.free(s.sid)
            active = [s for s in active if s.finish_reason is None]
        return [SpecOutput(s.tokens[s.prompt_len:], s.finish_reason) for s in seqs], stats

    def _propose(self, active: list[_SpecSeq], ks: list[int], dcache: PagedKVCache, stats: SpecStats) -> None:
        """k_i draft tokens per sequence, each with the distribution it was drawn from."""
        for j in range(max(ks, default=0)):
            group = [s for s, k_i in zip(active, ks) if j < k_i]
            # first pass: every token the draft has not seen (the pending one at least); then its own last
            fed = [np.array(s.draft_tokens[-1:] if j else s.tokens[s.draft_computed:], np.int64) for s in group]
            logits = self.draft.forward(dcache.prepare([s.sid for s in group], fed), dcache)   # (B_j, V)
            stats.draft_passes += 1
            for s, row, f in zip(group, logits, fed):
                s.draft_computed += len(f)
                q = sampling_probs(row, s.params, self.draft.ops, f"draft of sequence {s.sid}")
                s.q.append(q)
                s.draft_tokens.append(sample_from(q, s.rng))
                stats.proposed += 1

    def _emit(self, s: _SpecSeq, tokens: list[int], stats: SpecStats) -> None:
        """Append tokens in order, stopping at a stop token, max_tokens or the model's context."""
        for t in tokens:
            if t in s.params.stop_token_ids:
                s.finish_reason = "stop"
                return
            s.tokens.append(t)
            stats.generated += 1
            if s.n_out >= s.params.max_tokens:
                s.finish_reason = "length"
            elif len(s.tokens) > self.target.config.max_seq_len:
                s.finish_reason = "context"
            if s.finish_reason:
                return
