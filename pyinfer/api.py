"""The Python entry point: load a model (preset, checkpoint path, or fetched name) with its
tokenizer and backend, then generate text.

    import pyinfer
    gen = pyinfer.load("stories260K")            # or load(preset="toy"), load("path/to/model.bin")
    print(gen.generate("Once upon a time", steps=64).text)
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from .config import SamplingParams, get_preset
from .fetch import resolve_model_arg
from .generate import GenerationResult, generate
from .loaders import detect_format, load_checkpoint, read_gguf
from .loaders.common import check_finite_weights
from .model import Model
from .ops import Ops, resolve_backend
from .quant import get_format, quantize_weights
from .threads import ThreadSetting
from .threads import ensure as ensure_threads
from .tokenization import load_tokenizer_file, resolve_tokenizer, with_stop_ids
from .tokenizer import check_tokenizer_matches, load_tokenizer
from .weights import random_weights


@dataclass
class Completion:
    text: str
    result: GenerationResult


class TextGenerator:
    """A model, its tokenizer and a backend, ready to generate."""

    def __init__(self, model: Model, tokenizer, source: str, threads: ThreadSetting | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.source = source          # what was loaded, for reports
        self.threads = threads        # the process-wide thread count when loaded, and why

    def generate(self, prompt: str = "", steps: int = 256, params: SamplingParams | None = None,
                 on_text: Callable[[str], None] | None = None, block_size: int = 16) -> Completion:
        """Text after BOS for ``steps`` forward positions (llama2.c's -n), streamed to ``on_text``.
        ``params`` None: run.c's sampling (temperature 1.0, top-p 0.9), seeded by ``params.seed``."""
        params = with_stop_ids(params or SamplingParams(temperature=1.0, top_p=0.9), self.tokenizer)
        prompt_ids = self.tokenizer.encode(prompt, bos=True)
        if not prompt_ids:
            raise ValueError("the prompt encodes to no tokens (this tokenizer adds no BOS): give a prompt")
        pieces: list[str] = []

        def emit(text: str) -> None:
            if text:
                pieces.append(text)
                if on_text:
                    on_text(text)

        if prompt_ids[0] == getattr(self.tokenizer, "bos_id", None):
            stream = self.tokenizer.stream(prev_token=prompt_ids[0])   # holds back incomplete UTF-8
        else:                                 # no BOS (e.g. Qwen2): the first token is text too
            stream = self.tokenizer.stream()
            emit(stream.feed(prompt_ids[0]))

        result = generate(self.model, prompt_ids, steps, params, lambda prev, tok: emit(stream.feed(tok)),
                          block_size)
        emit(stream.flush())
        return Completion("".join(pieces), result)

    def chat(self, messages, max_tokens: int = 256, params: SamplingParams | None = None,
             on_text: Callable[[str], None] | None = None, block_size: int = 16) -> Completion:
        """The assistant's reply to ``messages`` ([{"role", "content"}, ...]) rendered with the model's
        chat template (pyinfer.chat, as transformers' apply_chat_template(add_generation_prompt=True));
        up to ``max_tokens`` new tokens, streamed to ``on_text``; only the reply is returned as text.
        A model without a chat template is refused."""
        from .chat import chat_prompt_ids
        params = with_stop_ids(params or SamplingParams(), self.tokenizer)
        prompt_ids = chat_prompt_ids(self.tokenizer, messages)
        ctx = self.model.config.max_seq_len
        if len(prompt_ids) >= ctx:
            raise ValueError(f"the chat prompt is {len(prompt_ids)} tokens; the model's context is {ctx}")
        stream = self.tokenizer.stream(prev_token=prompt_ids[-1])
        pieces: list[str] = []
        seen = [0]

        def on_token(prev: int, tok: int) -> None:
            seen[0] += 1
            if seen[0] >= len(prompt_ids):            # the prompt's own tokens come first: not the reply
                text = stream.feed(tok)
                if text:
                    pieces.append(text)
                    if on_text:
                        on_text(text)

        steps = min(len(prompt_ids) + max_tokens - 1, ctx)
        result = generate(self.model, prompt_ids, steps, params, on_token, block_size)
        tail = stream.flush()
        if tail:
            pieces.append(tail)
            if on_text:
                on_text(tail)
        return Completion("".join(pieces), result)


def load(model: str | os.PathLike | None = None, tokenizer: str | os.PathLike | None = None,
         preset: str | None = None, backend: str | None = None, seed: int = 0,
         quant: str | None = None, threads: str | int | None = None,
         allow_nonfinite: bool = False) -> TextGenerator:
    """A checkpoint path or fetched model name (``model``), else a preset with seeded random weights
    (``preset``, default ``toy``) and a byte-level tokenizer. ``quant`` (e.g. "int8", "int4-g32")
    quantizes every linear weight after loading (see pyinfer.quant.FORMATS). ``backend``: None picks
    the fastest that loads here (c, else numba, else numpy; ``ops.default_backend``). ``threads``:
    "auto" or a count for every compute pool, process-wide (pyinfer.threads); None keeps the count
    already set in this process, else auto. A checkpoint holding NaN or inf weights is refused unless
    ``allow_nonfinite`` (for inspecting it)."""
    fmt = get_format(quant) if quant else None
    if model is not None and preset is not None:
        raise ValueError("give either a model (checkpoint or fetched name) or a preset, not both")
    setting = ensure_threads(threads)
    ops = Ops(resolve_backend(backend))
    if model is None:
        config = get_preset(preset or "toy")
        weights = random_weights(config, seed=seed)
        tok = load_tokenizer_file(tokenizer, config.vocab_size) if tokenizer else load_tokenizer(None, config.vocab_size)
        source = f"preset {config.name} (random weights, seed {seed})"
    else:
        model_path, fetched_tok = resolve_model_arg(model)
        gguf_meta, notes = None, []
        if detect_format(model_path) == "gguf":
            checkpoint = read_gguf(model_path)
            weights, gguf_meta, notes = checkpoint.weights, checkpoint.metadata, checkpoint.notes
            if not allow_nonfinite:
                check_finite_weights(weights, os.fspath(model_path))
            if fmt is not None and checkpoint.quantized:
                raise ValueError(f"--quant {fmt.name}: {model_path} is already quantized (GGUF Q8_0 / Q4_0 "
                                 "weights run as they are); requantizing is refused")
        else:
            weights = load_checkpoint(model_path, allow_nonfinite=allow_nonfinite)
        tok = resolve_tokenizer(tokenizer or fetched_tok, model_path, weights.config.vocab_size, gguf_meta)
        source = str(model_path) + "".join(f"; {n}" for n in notes)
    check_tokenizer_matches(tok, weights.config.vocab_size)
    if fmt is not None:
        weights = quantize_weights(weights, fmt)
        source += f", quantized {fmt.name}"
    return TextGenerator(Model(weights, ops), tok, source, setting)
