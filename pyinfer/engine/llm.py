"""``LLM(...).generate(prompts, params)``: load a model, run a list of prompts through the engine
with continuous batching, return the outputs in prompt order.

    from pyinfer.engine import LLM
    llm = LLM("../shared/models/stories260K.bin", tokenizer="../shared/models/tok512.bin")
    for out in llm.generate(["Once upon a time", "The cat"], SamplingParams(temperature=0, max_tokens=64)):
        print(out.text)
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np

from ..config import SamplingParams
from ..model import Model
from .config import EngineConfig
from .engine import Engine
from .sequence import RequestOutput
from .trace import progress_bar


class LLM:
    """A model (checkpoint path, fetched name, preset, or a ready ``Model``) behind an Engine.
    ``backend`` None: the fastest that loads (c, else numba, else numpy). ``threads``: "auto" or a
    count for every compute pool, process-wide (pyinfer.threads); None keeps the process's setting.
    Extra keyword arguments are EngineConfig fields (max_num_seqs=..., num_blocks=...)."""

    def __init__(self, model: str | os.PathLike | Model | None = None, *, tokenizer=None, preset: str | None = None,
                 backend: str | None = None, seed: int = 0, threads: str | int | None = None,
                 config: EngineConfig | None = None, **config_fields):
        if config is not None and config_fields:
            raise ValueError("give either config=EngineConfig(...) or its fields as keywords, not both")
        config = config or EngineConfig(**config_fields)
        if isinstance(model, Model):
            from ..threads import ensure
            self.threads = ensure(threads)
            self.engine = Engine(model, tokenizer, config)
        else:
            from ..api import load
            gen = load(model, tokenizer=tokenizer, preset=preset, backend=backend, seed=seed, threads=threads)
            self.threads = gen.threads
            self.engine = Engine(gen.model, gen.tokenizer, config)

    def generate(self, prompts, params: SamplingParams | list[SamplingParams] | None = None,
                 progress: bool | Callable[[int, int], None] = False) -> list[RequestOutput]:
        """One output per prompt, in order. ``prompts``: a string, a list of token ids, or a list of
        either; ``params``: one SamplingParams for all or one per prompt. All requests are queued
        first (every one is checked before any runs), then the engine steps until all finish."""
        if isinstance(prompts, (str, bytes)) or (len(prompts) and isinstance(prompts[0], (int, np.integer))):
            prompts = [prompts]
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
        report = progress_bar if progress is True else (progress or None)
        done: dict[int, RequestOutput] = {}
        while self.engine.has_unfinished():
            finished = self.engine.step()
            for out in finished:
                done[out.request_id] = out
            if report and finished:
                report(len(done), len(ids))
        return [done[i] for i in ids]

