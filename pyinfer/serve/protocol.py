"""OpenAI's completions and chat-completions request fields (with vLLM's sampling extras) turned
into SamplingParams, and RequestOutputs turned into OpenAI's response and stream-chunk objects.
A field we do not model is refused by name (400), never ignored."""
from __future__ import annotations

import math

from ..config import SamplingParams

COMMON = {"model", "n", "temperature", "top_p", "stop", "stream", "stream_options", "presence_penalty",
          "frequency_penalty", "seed", "user", "logit_bias",
          # vLLM's extras
          "top_k", "min_p", "repetition_penalty", "min_tokens", "ignore_eos", "stop_token_ids",
          "skip_special_tokens", "include_stop_str_in_output"}
COMPLETION_FIELDS = COMMON | {"prompt", "max_tokens", "logprobs", "echo", "best_of", "suffix"}
CHAT_FIELDS = COMMON | {"messages", "max_tokens", "max_completion_tokens", "logprobs", "top_logprobs"}
SAMPLING_KEYS = ("n", "temperature", "top_p", "presence_penalty", "frequency_penalty", "seed", "top_k", "min_p",
                 "repetition_penalty", "min_tokens", "ignore_eos", "stop_token_ids", "skip_special_tokens",
                 "include_stop_str_in_output", "stop")


class RequestError(ValueError):
    """A 400: ``param`` names the request field at fault."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def error_body(message: str, param: str | None = None, code: int = 400, kind: str = "BadRequestError") -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _check_fields(body, allowed: set, what: str) -> None:
    if not isinstance(body, dict):
        raise RequestError(f"the {what} request body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise RequestError(f"{what}: unsupported field(s) {', '.join(unknown)}", unknown[0])


def sampling_params(body: dict, max_tokens: int | None, logprobs: int | None, context_left: int,
                    prompt_logprobs: int | None = None) -> SamplingParams:
    """SamplingParams from the request's fields, OpenAI's defaults where absent (temperature 1,
    top_p 1, n 1). ``max_tokens`` None: what is left of the context (chat's default)."""
    if body.get("logit_bias"):
        raise RequestError("logit_bias is not supported", "logit_bias")
    kw = {k: body[k] for k in SAMPLING_KEYS if body.get(k) is not None}
    for key in ("stop_token_ids",):
        if key in kw and isinstance(kw[key], list):
            kw[key] = tuple(kw[key])
    if isinstance(kw.get("stop"), list):
        kw["stop"] = tuple(kw["stop"])
    if isinstance(kw.get("temperature"), (int, float)) and not isinstance(kw["temperature"], bool) \
            and math.isfinite(kw["temperature"]) and kw["temperature"] > 2:
        raise RequestError(f"temperature={kw['temperature']} must be in [0, 2]", "temperature")
    kw["max_tokens"] = context_left if max_tokens is None else max_tokens
    if logprobs is not None:
        kw["logprobs"] = logprobs
    if prompt_logprobs is not None:
        kw["prompt_logprobs"] = prompt_logprobs
    try:
        return SamplingParams(**kw)
    except ValueError as e:
        msg = str(e)
        param = next((k for k in SAMPLING_KEYS + ("max_tokens", "logprobs") if f"SamplingParams.{k}" in msg), None)
        raise RequestError(msg.replace("SamplingParams.", ""), param) from None


def completion_request(body) -> tuple[list, SamplingParams | None, dict]:
    """The prompts (strings or token-id lists) and the parts of the request for later."""
    _check_fields(body, COMPLETION_FIELDS, "completions")
    if body.get("echo") is not None and not isinstance(body["echo"], bool):
        raise RequestError(f"echo={body['echo']!r} must be a bool", "echo")
    if body.get("echo") and body.get("stream"):
        raise RequestError("echo with stream is not supported (echo without stream is)", "echo")
    if body.get("suffix"):
        raise RequestError("suffix is not supported", "suffix")
    if body.get("best_of") not in (None, body.get("n", 1)):
        raise RequestError("best_of other than n is not supported", "best_of")
    prompt = body.get("prompt")
    if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt)):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
        prompts = list(prompt)
    else:
        raise RequestError("prompt must be a string, a list of strings, a list of token ids or a list of those",
                           "prompt")
    logprobs = body.get("logprobs")
    if logprobs is not None and (isinstance(logprobs, bool) or not isinstance(logprobs, int) or logprobs < 0):
        raise RequestError(f"logprobs={logprobs!r} must be an int >= 0", "logprobs")
    max_tokens = body.get("max_tokens", 16)
    return prompts, max_tokens, logprobs


def chat_request(body) -> tuple[list, int | None, int | None]:
    _check_fields(body, CHAT_FIELDS, "chat completions")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list", "messages")
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise RequestError("each message needs a string role", "messages")
        content = m.get("content")
        if isinstance(content, list):        # [{"type": "text", "text": ...}, ...]
            if not all(isinstance(c, dict) and c.get("type") == "text" and isinstance(c.get("text"), str)
                       for c in content):
                raise RequestError("only text content parts are supported", "messages")
            m["content"] = "".join(c["text"] for c in content)
        elif not isinstance(content, str):
            raise RequestError("each message needs string content", "messages")
        extra = sorted(set(m) - {"role", "content", "name"})
        if extra:
            raise RequestError(f"message field(s) {', '.join(extra)} are not supported", "messages")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    logprobs = None
    if body.get("logprobs"):
        top = body.get("top_logprobs") or 0
        if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= 20:
            raise RequestError(f"top_logprobs={top!r} must be an int in [0, 20]", "top_logprobs")
        logprobs = top
    elif body.get("top_logprobs"):
        raise RequestError("top_logprobs needs logprobs: true", "top_logprobs")
    return [dict(m) for m in messages], max_tokens, logprobs


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_logprobs(c, tokens: slice, text_start: int, num: int) -> dict:
    """OpenAI's completions logprobs for c.logprobs[tokens]: tokens, token_logprobs, top_logprobs,
    text_offset (offsets counted from ``text_start``, by the tokens' own texts)."""
    entries = c.logprobs[tokens]
    ids = c.token_ids[tokens]
    out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    offset = text_start
    for token, entry in zip(ids, entries):
        chosen = entry[token]
        piece = chosen.decoded_token or ""
        out["tokens"].append(piece)
        out["token_logprobs"].append(chosen.logprob)
        ranked = sorted(entry.values(), key=lambda lp: lp.rank)[:num]
        out["top_logprobs"].append({(lp.decoded_token or ""): lp.logprob for lp in ranked})
        out["text_offset"].append(offset)
        offset += len(piece)
    return out


def echo_logprobs(out, num: int, decode) -> dict:
    """OpenAI's completions logprobs of an echoed prompt, from out.prompt_logprobs (vLLM's echo):
    the first token has null token_logprobs and top_logprobs; offsets count the tokens' own texts
    from 0. ``decode``: token id -> text, for the first token (it has no Logprob)."""
    out_lp = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    offset = 0
    for token, entry in zip(out.prompt_token_ids, out.prompt_logprobs):
        if entry is None:
            piece, value, top = decode(token), None, None
        else:
            piece, value = entry[token].decoded_token or "", entry[token].logprob
            top = {(lp.decoded_token or ""): lp.logprob for lp in sorted(entry.values(), key=lambda lp: lp.rank)[:num]}
        out_lp["tokens"].append(piece)
        out_lp["token_logprobs"].append(value)
        out_lp["top_logprobs"].append(top)
        out_lp["text_offset"].append(offset)
        offset += len(piece)
    return out_lp


def chat_logprobs(c, tokens: slice, top: int) -> dict:
    content = []
    for token, entry in zip(c.token_ids[tokens], c.logprobs[tokens]):
        chosen = entry[token]
        ranked = sorted(entry.items(), key=lambda kv: kv[1].rank)[:top] if top else []
        content.append({"token": chosen.decoded_token or "", "logprob": chosen.logprob,
                        "bytes": list((chosen.decoded_token or "").encode()),
                        "top_logprobs": [{"token": lp.decoded_token or "", "logprob": lp.logprob,
                                          "bytes": list((lp.decoded_token or "").encode())} for _, lp in ranked]})
    return {"content": content}
