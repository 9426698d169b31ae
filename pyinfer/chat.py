"""Chat templates: a conversation rendered to the prompt text the model was trained on, exactly as
transformers' ``apply_chat_template(messages, add_generation_prompt=True, tokenize=False)`` renders it
(utils/chat_template_utils.py): a jinja2 ImmutableSandboxedEnvironment with trim_blocks and
lstrip_blocks, the loopcontrols extension, a ``tojson`` filter that does not escape HTML,
``raise_exception`` and ``strftime_now`` globals, and the tokenizer's special tokens (bos_token,
eos_token, ...) as variables.

The rendered text already holds whatever BOS the template writes, so it is encoded without adding
special tokens again (``encode(text, bos=False)``), as transformers and vLLM do: no doubled BOS.
"""
from __future__ import annotations

import json
from datetime import datetime

ROLES_NOTE = "each message must be a dict with a string 'role' and 'content'"


def _environment():
    try:
        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise ValueError("chat templates need the jinja2 package (pip install 'pyinfer[hf]')") from None

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env, jinja2


def check_messages(messages) -> list[dict]:
    if isinstance(messages, dict) or not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError(f"a chat is a non-empty list of messages; {ROLES_NOTE}")
    for m in messages:
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise ValueError(f"bad chat message {m!r}: {ROLES_NOTE}")
    return [dict(m) for m in messages]


def render_chat(template: str, messages, special_tokens: dict[str, str | None],
                add_generation_prompt: bool = True) -> str:
    """The prompt text of ``messages`` (list of {"role", "content"}) under ``template``. A template
    that raises (raise_exception, e.g. roles that do not alternate) is a ValueError with its message."""
    env, jinja2 = _environment()
    messages = check_messages(messages)
    try:
        compiled = env.from_string(template)
        return compiled.render(messages=messages, add_generation_prompt=add_generation_prompt,
                               **{k: v for k, v in special_tokens.items() if v is not None})
    except jinja2.exceptions.TemplateError as e:
        raise ValueError(f"the chat template refused the conversation: {e}") from None


def special_tokens_of(tokenizer) -> dict[str, str | None]:
    """The template variables transformers passes (its special_tokens_map): bos_token, eos_token, and
    unk_token / pad_token where tokenizer_config.json names them."""
    out = {"bos_token": getattr(tokenizer, "bos_token", None), "eos_token": getattr(tokenizer, "eos_token", None)}
    special = getattr(tokenizer, "special", None)
    cfg = (getattr(special, "tokenizer_config", None) or {}) if special is not None else {}
    from .tokenization.special import token_content
    for name in ("unk_token", "pad_token"):
        if cfg.get(name) is not None:
            out[name] = token_content(cfg[name])
    return out


def chat_prompt_ids(tokenizer, messages) -> list[int]:
    """Token ids of the conversation with the generation prompt, or ValueError when the model's
    tokenizer has no chat template."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise ValueError("this model has no chat template (no chat_template in tokenizer_config.json, "
                         "chat_template.jinja or tokenizer.chat_template): --chat / LLM.chat are refused; "
                         "use a plain prompt")
    text = render_chat(template, messages, special_tokens_of(tokenizer))
    return tokenizer.encode(text, bos=False)


def chat_messages(prompt: str, system: str | None = None) -> list[dict]:
    """The CLI's conversation: an optional system turn, then the prompt as the user turn."""
    return ([{"role": "system", "content": system}] if system is not None else []) + \
        [{"role": "user", "content": prompt}]
