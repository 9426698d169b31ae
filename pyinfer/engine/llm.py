"""vLLM's offline API on the engine: ``LLM(model=...).generate(prompts, sampling_params)`` and
``LLM.chat(messages)``, outputs in prompt order.

    from pyinfer import LLM, SamplingParams
    llm = LLM(model="../shared/models/stories260K.bin", tokenizer="../shared/models/tok512.bin")
    for out in llm.generate(["Once upon a time", "The cat"], SamplingParams(temperature=0.8, top_p=0.95)):
        print(out.prompt, out.outputs[0].text)

vLLM's names are taken where the concept exists here; the ones that do not apply on this engine
(tensor or pipeline parallelism, GPU memory fractions, remote code) are refused by name.
"""
from __future__ import annotations

import os
import sys
from typing import Callable

import numpy as np

from ..config import PRESETS, SamplingParams
from ..model import Model
from .config import EngineConfig
from .engine import Engine
from .outputs import RequestOutput

DTYPES = ("auto", "float32", "float")          # pyinfer computes in float32
REFUSED = {
    "tensor_parallel_size": (1, "runs on one device (no tensor parallelism)"),
    "pipeline_parallel_size": (1, "runs on one device (no pipeline parallelism)"),
    "trust_remote_code": (False, "never runs a model's own code"),
    "gpu_memory_utilization": (None, "sizes the KV pool in blocks: give num_blocks= or kv_cache_bytes="),
    "swap_space": (None, "has no CPU swap of KV blocks (preempted requests are recomputed)"),
    "cpu_offload_gb": (None, "does not offload weights"),
    "enforce_eager": (None, "has no CUDA graphs to turn off"),
    "revision": (None, "loads local checkpoints and fetched names only"),
    "tokenizer_mode": (None, "picks the tokenizer by the file's content"),
    "download_dir": (None, "fetches with `pyinfer fetch` into its own cache"),
}


class LLM:
    """A model behind an Engine. ``model``: a checkpoint path, a fetched name (`pyinfer fetch`), a
    preset name (random weights seeded by ``weights_seed``), or a ready Model. ``seed`` seeds the
    sampling of requests without their own SamplingParams.seed (vLLM's LLM(seed=)). ``backend``:
    None picks the fastest that loads here. ``threads``: "auto" or a count (pyinfer.threads).
    Extra keyword arguments are EngineConfig fields (num_blocks=..., max_num_batched_tokens=...)."""

    def __init__(self, model: str | os.PathLike | Model | None = None, *, tokenizer=None, preset: str | None = None,
                 dtype: str = "auto", quantization: str | None = None, max_model_len: int | None = None,
                 seed: int | None = 0, max_num_seqs: int | None = None, block_size: int | None = None,
                 enable_prefix_caching: bool | None = None, backend: str | None = None,
                 threads: str | int | None = None, weights_seed: int = 0, config: EngineConfig | None = None,
                 **config_fields):
        for name, (ok, why) in REFUSED.items():
            if name in config_fields:
                value = config_fields.pop(name)
                if value != ok:
                    raise ValueError(f"LLM({name}={value!r}) does not apply: pyinfer {why}")
        unknown = sorted(set(config_fields) - set(EngineConfig.__dataclass_fields__))
        if unknown:
            raise ValueError(f"LLM() got unknown arguments {', '.join(unknown)} (vLLM options pyinfer does not "
                             f"model are refused; EngineConfig fields: {', '.join(EngineConfig.__dataclass_fields__)})")
        if dtype not in DTYPES:
            raise ValueError(f"LLM(dtype={dtype!r}): pyinfer computes in float32 (accepted: {', '.join(DTYPES)}); "
                             "for smaller weights use quantization='int8' or 'int4-g32'")
        for name, value in (("max_num_seqs", max_num_seqs), ("block_size", block_size),
                            ("enable_prefix_caching", enable_prefix_caching)):
            if value is not None:
                config_fields[name] = value
        if config is not None and config_fields:
            raise ValueError("give either config=EngineConfig(...) or its fields as keywords, not both")
        config = config or EngineConfig(**config_fields)
        if isinstance(model, Model):
            from ..threads import ensure
            if quantization is not None:
                raise ValueError("LLM(quantization=...) applies when loading; quantize a ready Model "
                                 "with pyinfer.quant")
            self.threads = ensure(threads)
            self.engine = Engine(model, tokenizer, config, seed=seed, max_model_len=max_model_len)
        else:
            from ..api import load
            if model is not None and preset is None and os.fspath(model) in PRESETS and not os.path.exists(model):
                from ..fetch import MODELS
                if os.fspath(model) not in MODELS:
                    model, preset = None, os.fspath(model)
            if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
                gen = load(model, tokenizer=tokenizer, preset=preset, backend=backend, seed=weights_seed,
                           quant=quantization, threads=threads)
                self.threads = gen.threads
                self.source = gen.source
                self.engine = Engine(gen.model, gen.tokenizer, config, seed=seed, max_model_len=max_model_len)
            else:                               # a tokenizer object: the Engine checks its vocabulary
                from ..threads import ensure
                self.threads = ensure(threads)
                self.source = str(model if model is not None else f"preset {preset or 'toy'}")
                self.engine = Engine(_load_model(model, preset, backend, weights_seed, quantization), tokenizer,
                                     config, seed=seed, max_model_len=max_model_len)

    def get_tokenizer(self):
        return self.engine.tokenizer

    def generate(self, prompts, sampling_params: SamplingParams | list[SamplingParams] | None = None,
                 use_tqdm: bool | Callable[[int, int], None] = True, *, progress=None) -> list[RequestOutput]:
        """One finished RequestOutput per prompt, in order. ``prompts``: a string, a list of token ids,
        {"prompt": str} or {"prompt_token_ids": [...]}, or a list of those; ``sampling_params``: one
        SamplingParams for all (default SamplingParams()) or one per prompt. Every request is checked
        before any runs (a bad one queues none). ``use_tqdm``: a progress bar on stderr (tqdm), or a
        callable(done, total)."""
        prompts = self._prompts(prompts)
        params = sampling_params
        if params is None or isinstance(params, SamplingParams):
            params = [params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"{len(params)} SamplingParams for {len(prompts)} prompts")
        ids: list[int] = []
        try:
            for p, sp in zip(prompts, params):
                ids.append(self.engine.add_request(p, sp))
        except ValueError:
            for i in ids:                       # all or nothing: a bad prompt queues none of them
                self.engine.abort(i)
            raise
        report = _progress(progress if progress is not None else use_tqdm, len(ids))
        done: dict[int, RequestOutput] = {}
        try:
            while self.engine.has_unfinished():
                finished = [o for o in self.engine.step() if o.finished]
                for out in finished:
                    done[out.request_id] = out
                if report and finished:
                    report(len(done), len(ids))
        except BaseException:
            for i in ids:                       # Ctrl-C or an error: nothing of this call stays queued
                self.engine.abort(i)
            raise
        finally:
            if hasattr(report, "close"):
                report.close()
        return [done[i] for i in ids]

    def chat(self, messages, sampling_params: SamplingParams | list[SamplingParams] | None = None,
             use_tqdm: bool | Callable[[int, int], None] = True, *, chat_template: str | None = None,
             add_generation_prompt: bool = True, progress=None) -> list[RequestOutput]:
        """vLLM's LLM.chat: one conversation ([{"role", "content"}, ...]) or a list of them, rendered
        with the model's chat template (pyinfer.chat, as transformers' apply_chat_template) and
        encoded without adding BOS again; one output (the reply) per conversation. A model without
        a chat template is refused by name."""
        conversations = [messages] if messages and isinstance(messages[0], dict) else list(messages)
        prompts = [{"prompt_token_ids": ids, "prompt": text} for text, ids in
                   (chat_prompt(self.engine.tokenizer, c, chat_template, add_generation_prompt) for c in conversations)]
        return self.generate(prompts, sampling_params, use_tqdm, progress=progress)

    def _prompts(self, prompts) -> list:
        if isinstance(prompts, (str, bytes, dict)) or (
                isinstance(prompts, (list, tuple, np.ndarray)) and len(prompts)
                and isinstance(prompts[0], (int, np.integer))):
            prompts = [prompts]
        out = []
        for p in prompts:
            if isinstance(p, dict):
                extra = sorted(set(p) - {"prompt", "prompt_token_ids"})
                if extra:
                    raise ValueError(f"prompt dict keys {extra} are not supported (text-only: 'prompt' or "
                                     "'prompt_token_ids')")
                if "prompt_token_ids" in p:
                    out.append(_TextIds(p["prompt_token_ids"], p.get("prompt")))
                elif "prompt" in p:
                    out.append(p["prompt"])
                else:
                    raise ValueError("a prompt dict needs 'prompt' or 'prompt_token_ids'")
            else:
                out.append(p)
        return out


class _TextIds(list):
    """Token ids that remember the text they came from (a chat's rendered prompt)."""

    def __init__(self, ids, text: str | None):
        super().__init__(ids)
        self.text = text


def chat_prompt(tokenizer, messages, chat_template: str | None = None,
                add_generation_prompt: bool = True) -> tuple[str, list[int]]:
    """(rendered text, token ids) of a conversation under the model's (or the given) chat template;
    ValueError naming the model when it has none."""
    from ..chat import render_chat, special_tokens_of
    template = chat_template or getattr(tokenizer, "chat_template", None)
    if not template:
        where = "no tokenizer" if tokenizer is None else getattr(tokenizer, "path", None) or type(tokenizer).__name__
        raise ValueError(f"this model has no chat template ({where}: no chat_template in tokenizer_config.json, "
                         "chat_template.jinja or tokenizer.chat_template); chat is refused: use a plain prompt")
    text = render_chat(template, messages, special_tokens_of(tokenizer), add_generation_prompt)
    return text, tokenizer.encode(text, bos=False)


def _progress(use_tqdm, total: int):
    if callable(use_tqdm):
        return use_tqdm
    if not use_tqdm:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        from .trace import progress_bar
        return progress_bar
    bar = tqdm(total=total, desc="Processed prompts", file=sys.stderr, dynamic_ncols=True)

    def report(done: int, _total: int) -> None:
        bar.update(done - bar.n)
    report.close = bar.close
    return report


def _load_model(model, preset: str | None, backend: str | None, seed: int, quant: str | None) -> Model:
    """The model alone (its tokenizer is given as an object): a checkpoint or fetched name, else a preset."""
    from ..config import get_preset
    from ..fetch import resolve_model_arg
    from ..loaders import load_checkpoint
    from ..ops import Ops, resolve_backend
    from ..quant import get_format, quantize_weights
    from ..weights import random_weights
    if model is not None and preset is not None:
        raise ValueError("give either a model (checkpoint or fetched name) or a preset, not both")
    if model is None:
        weights = random_weights(get_preset(preset or "toy"), seed=seed)
    else:
        weights = load_checkpoint(resolve_model_arg(model)[0])
    if quant is not None:
        weights = quantize_weights(weights, get_format(quant))
    return Model(weights, Ops(resolve_backend(backend)))
