"""Special tokens of a Hugging Face model directory: BOS, EOS, the stop ids and the chat template.

Sources, as transformers and vLLM read them: ``tokenizer_config.json`` (bos_token / eos_token as a
string or an AddedToken dict, add_bos_token / add_eos_token, chat_template), ``generation_config.json``
(eos_token_id: an int or a list; generation stops on any of them) and ``config.json`` (bos_token_id,
eos_token_id). Generation stops on the tokenizer's EOS and every eos_token_id of the two configs.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class SpecialTokens:
    bos_token: str | None = None
    eos_token: str | None = None
    bos_id: int | None = None
    eos_id: int | None = None
    stop_ids: tuple[int, ...] = ()
    add_bos_token: bool | None = None      # None: not set in tokenizer_config.json
    add_eos_token: bool | None = None
    chat_template: str | None = None
    tokenizer_config: dict | None = None


def read_json(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is not readable JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a {type(data).__name__}, expected a JSON object")
    return data


def token_content(value) -> str | None:
    """A special token entry of tokenizer_config.json: a string or {"content": ...}."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"special token entry {value!r} is neither a string nor an AddedToken object")


def _ids(value, where: str) -> list[int]:
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise ValueError(f"{where} eos_token_id {value!r} is not a token id or a list of them")
    return list(values)


def chat_template_of(cfg: dict, directory: str) -> str | None:
    """The default chat template: tokenizer_config.json's chat_template (a string, or a list of
    {name, template} where "default" is used), else a chat_template.jinja file beside it."""
    tpl = cfg.get("chat_template")
    if isinstance(tpl, list):
        named = {t.get("name"): t.get("template") for t in tpl if isinstance(t, dict)}
        tpl = named.get("default")
    if tpl is None and os.path.exists(os.path.join(directory, "chat_template.jinja")):
        with open(os.path.join(directory, "chat_template.jinja"), encoding="utf-8") as f:
            tpl = f.read()
    if tpl is not None and not isinstance(tpl, str):
        raise ValueError(f"{directory}: chat_template is {type(tpl).__name__}, expected a string")
    return tpl


def read_special_tokens(directory: str, token_to_id) -> SpecialTokens:
    """The special tokens of the model in ``directory``; ``token_to_id(str) -> int | None``."""
    cfg = read_json(os.path.join(directory, "tokenizer_config.json"))
    gen = read_json(os.path.join(directory, "generation_config.json"))
    model = read_json(os.path.join(directory, "config.json"))
    bos_token, eos_token = token_content(cfg.get("bos_token")), token_content(cfg.get("eos_token"))

    def id_of(token: str | None, fallback) -> int | None:
        if token is not None:
            tid = token_to_id(token)
            if tid is None:
                raise ValueError(f"{directory}: special token {token!r} of tokenizer_config.json is not "
                                 "in the tokenizer's vocabulary")
            return tid
        return fallback if isinstance(fallback, int) and not isinstance(fallback, bool) else None

    bos_id = id_of(bos_token, model.get("bos_token_id"))
    eos_ids = _ids(model.get("eos_token_id"), "config.json")
    eos_id = id_of(eos_token, eos_ids[0] if eos_ids else None)
    stops = ([eos_id] if eos_id is not None else []) + _ids(gen.get("eos_token_id"), "generation_config.json") \
        + eos_ids
    return SpecialTokens(
        bos_token=bos_token, eos_token=eos_token, bos_id=bos_id, eos_id=eos_id,
        stop_ids=tuple(dict.fromkeys(stops)),
        add_bos_token=cfg.get("add_bos_token"), add_eos_token=cfg.get("add_eos_token"),
        chat_template=chat_template_of(cfg, directory), tokenizer_config=cfg)
