"""What the engine hands back, in vLLM's shapes (vllm/outputs.py): a RequestOutput per request that
advanced in a step, holding one CompletionOutput per sample (n of them), cumulative (text and
token_ids so far) with the step's delta beside them; and the text side of a sequence: incremental
detokenization (vLLM's prefix/read offsets, so the text is always what ``tokenizer.decode`` gives
and an incomplete UTF-8 character is held back until it completes) and stop strings.

finish_reason: "stop" (EOS, a stop token or a stop string; ``stop_reason`` names the token id or the
string, None for EOS), "length" (max_tokens, or the model's context full), "abort", "error" (its
logits were not finite; ``error`` says where).
"""
from __future__ import annotations

from dataclasses import dataclass

from .metrics import RequestMetrics


@dataclass(frozen=True)
class Logprob:
    """vLLM's Logprob: a token's log-probability under the model's raw logits, its rank (1: most
    likely) and its text."""
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass(frozen=True)
class CompletionOutput:
    index: int
    text: str                                   # all of this sample's text so far
    token_ids: list[int]                        # all its tokens so far (a final stop token included)
    cumulative_logprob: float | None            # None unless logprobs were asked for
    logprobs: list[dict[int, Logprob]] | None   # one dict per token in token_ids, when asked for
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    delta_text: str = ""                        # what this step added to text
    delta_token_ids: tuple[int, ...] = ()       # what this step added to token_ids
    metrics: RequestMetrics | None = None
    error: str | None = None
    ended_on_token: bool = False                # the last of token_ids is the stop token (EOS or stop_token_ids)

    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(frozen=True)
class RequestOutput:
    """One request after a step: ``finished`` once every sample has finished. ``metrics`` are
    sample 0's (TTFT, TPOT, queue time: pyinfer.engine.metrics)."""
    request_id: int
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    metrics: RequestMetrics
    # vLLM's: None first (the first prompt token has no logits before it), then one {token: Logprob}
    # per prompt token (it and the prompt_logprobs most likely); None when not asked for (or the
    # request ended before its prompt was computed: aborted, or an error)
    prompt_logprobs: list[dict[int, Logprob] | None] | None = None

    # pyinfer's earlier names (sample 0), kept for its callers
    @property
    def prompt_ids(self) -> list[int]:
        return self.prompt_token_ids

    @property
    def output_ids(self) -> list[int]:
        """Sample 0's tokens without a final stop token (what went into the KV cache)."""
        o = self.outputs[0]
        return o.token_ids[:-1] if o.ended_on_token else o.token_ids

    @property
    def text(self) -> str | None:
        return self.outputs[0].text

    @property
    def finish_reason(self) -> str | None:
        return self.outputs[0].finish_reason

    @property
    def error(self) -> str | None:
        return self.outputs[0].error


def holdback(params) -> int:
    """Characters held back while streaming, so a stop string is never sent before it is cut."""
    if not params.stop or params.include_stop_str_in_output:
        return 0
    return max(len(s) for s in params.stop) - 1


def detokenize(seq, tokenizer, special: frozenset, final: bool) -> None:
    """Extend ``seq.text`` with the text of its new tokens: vLLM's incremental detokenizer. The text
    of ids[prefix_offset:] minus that of ids[prefix_offset:read_offset], so a tokenizer's handling
    of a piece's leading space (which depends on the piece before) is the same as a full decode; the
    new text is taken only when it does not end in U+FFFD (an incomplete UTF-8 character) unless the
    sequence is finishing. Special tokens of the output are left out when skip_special_tokens."""
    ids = seq.token_ids
    if seq.stop_token is not None and seq.stop_token not in special:
        ids = ids + [seq.stop_token]           # a stop token that is not special is text (vLLM)
    if seq.read_offset >= len(ids):
        return
    n_prompt = len(seq.prompt_ids)
    skip = special if seq.params.skip_special_tokens else frozenset()

    def text_of(a: int, b: int) -> str:
        return tokenizer.decode([t for j, t in enumerate(ids[a:b], a) if j < n_prompt or t not in skip])

    before = text_of(seq.prefix_offset, seq.read_offset)
    after = text_of(seq.prefix_offset, len(ids))
    if len(after) > len(before) and (final or not after.endswith("\ufffd")):
        seq.text = seq.text + after[len(before):]
        seq.prefix_offset, seq.read_offset = seq.read_offset, len(ids)


def find_stop_string(seq, new_chars: int) -> bool:
    """vLLM's stop-string check on the text just added: the first of ``params.stop`` (in list order)
    found where it could overlap the new characters ends the text before it (after it with
    include_stop_str_in_output); True when one was found."""
    p = seq.params
    for stop in p.stop:
        start = max(0, len(seq.text) - new_chars - len(stop) + 1)
        at = seq.text.find(stop, start)
        if at >= 0:
            seq.text = seq.text[:at + len(stop)] if p.include_stop_str_in_output else seq.text[:at]
            seq.finish_reason, seq.stop_reason = "stop", stop
            return True
    return False


def completion_output(seq, index: int) -> CompletionOutput:
    """Sample ``index`` as it stands; its delta is what it gained since the last output, which
    advances ``seq.emitted_chars`` / ``seq.emitted_tokens``."""
    token_ids = seq.output_ids + ([seq.stop_token] if seq.stop_token is not None else [])
    visible = len(seq.text) if seq.finish_reason is not None else max(len(seq.text) - holdback(seq.params), 0)
    visible = max(visible, seq.emitted_chars)
    text = seq.text[:visible]
    delta_text = text[seq.emitted_chars:]
    delta_ids = tuple(token_ids[seq.emitted_tokens:])
    seq.emitted_chars, seq.emitted_tokens = visible, len(token_ids)
    logprobs = None if seq.params.logprobs is None else list(seq.logprobs)
    out = CompletionOutput(index=index, text=text, token_ids=token_ids,
                           cumulative_logprob=seq.cumulative_logprob if logprobs is not None else None,
                           logprobs=logprobs, finish_reason=seq.finish_reason, stop_reason=seq.stop_reason,
                           delta_text=delta_text, delta_token_ids=delta_ids, metrics=seq.metrics(), error=seq.error,
                           ended_on_token=seq.stop_token is not None)
    return out
