"""One engine loop feeding every connection: a thread owns the Engine (nothing else touches it);
HTTP handlers hand it requests and aborts through a queue and read their outputs from an asyncio
queue each, filled from the thread with call_soon_threadsafe. While nothing runs the thread waits
on its inbox (no busy loop). Counters and histograms for /metrics are updated here."""
from __future__ import annotations

import asyncio
import bisect
import queue
import threading
import time
from collections import deque

from ..engine import Engine

# Prometheus histogram bounds in seconds (the last bucket, +Inf, is implied)
TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TPOT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
RATE_WINDOW_S = 10.0

ABORTED = object()          # put on a stream when its request was aborted (shutdown or engine error)


class Histogram:
    def __init__(self, bounds):
        self.bounds, self.counts, self.sum, self.n = tuple(bounds), [0] * (len(bounds) + 1), 0.0, 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.n += 1

    def lines(self, name: str) -> list[str]:
        out, total = [], 0
        for bound, count in zip(self.bounds + (float("inf"),), self.counts):
            total += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'{name}_bucket{{le="{le}"}} {total}')
        return out + [f"{name}_sum {self.sum!r}", f"{name}_count {self.n}"]


class EngineLoop:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.inbox: queue.Queue = queue.Queue()
        self.streams: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self.thread = threading.Thread(target=self._run, name="pyinfer-engine", daemon=True)
        self.stopping = False
        self.ttft, self.tpot = Histogram(TTFT_BUCKETS), Histogram(TPOT_BUCKETS)
        self.prompt_tokens = self.generation_tokens = 0
        self.finished = {"stop": 0, "length": 0, "abort": 0, "error": 0}
        self.recent: deque = deque()          # (time, new tokens) of the last RATE_WINDOW_S
        self.started_s = time.monotonic()

    def start(self) -> None:
        self.thread.start()

    async def add(self, prompt, params) -> tuple[int, asyncio.Queue]:
        """Queue a request; its id and the asyncio queue its RequestOutputs arrive on. ValueError
        from the engine's checks comes back here."""
        loop = asyncio.get_running_loop()
        done, stream = loop.create_future(), asyncio.Queue()
        self.inbox.put(("add", prompt, params, loop, done, stream))
        return await done, stream

    def abort(self, request_id: int) -> None:
        self.inbox.put(("abort", request_id))

    def stop(self) -> None:
        """Abort everything that runs and end the thread (server shutdown)."""
        if self.thread.is_alive():
            self.inbox.put(("stop",))
            self.thread.join(timeout=10)

    # ---- the engine thread -----------------------------------------------------------------

    def _run(self) -> None:
        from ..threads import apply
        apply()                  # Numba's thread count (and OpenMP's own) belongs to the thread that sets it
        while True:
            block = not self.engine.has_unfinished()
            try:
                item = self.inbox.get(timeout=0.5) if block else self.inbox.get_nowait()
            except queue.Empty:
                item = None
            while item is not None:
                if self._handle(item) == "stop":
                    return
                try:
                    item = self.inbox.get_nowait()
                except queue.Empty:
                    item = None
            if self.engine.has_unfinished():
                try:
                    outputs = self.engine.step()
                except Exception as e:             # a bug or a kernel failure: fail what runs, keep serving
                    self._abort_all(f"engine step failed: {type(e).__name__}: {e}")
                    continue
                self._deliver(outputs)

    def _handle(self, item) -> str | None:
        kind = item[0]
        if kind == "add":
            _, prompt, params, loop, done, stream = item
            try:
                rid = self.engine.add_request(prompt, params)
            except ValueError as e:
                loop.call_soon_threadsafe(_settle, done, None, e)
                return None
            self.streams[rid] = (loop, stream)
            self.prompt_tokens += len(self.engine.requests[rid][1][0].prompt_ids)
            loop.call_soon_threadsafe(_settle, done, rid, None)
        elif kind == "abort":
            rid = item[1]
            if self.engine.abort(rid):
                self.finished["abort"] += 1
            self.streams.pop(rid, None)
        elif kind == "stop":
            self._abort_all("server shutting down")
            return "stop"
        return None

    def _abort_all(self, why: str) -> None:
        for rid, (loop, stream) in list(self.streams.items()):
            self.engine.abort(rid)
            self.finished["abort"] += 1
            loop.call_soon_threadsafe(stream.put_nowait, (ABORTED, why))
        self.streams.clear()

    def _deliver(self, outputs) -> None:
        now = time.monotonic()
        new = 0
        batches: dict = {}
        for out in outputs:
            new += sum(len(c.delta_token_ids) for c in out.outputs)
            if out.finished:
                for c in out.outputs:
                    m = c.metrics
                    if m is not None and m.token_times_s:
                        self.ttft.observe(m.ttft_s)
                        if m.tpot_s is not None:
                            self.tpot.observe(m.tpot_s)
                    self.finished[c.finish_reason] = self.finished.get(c.finish_reason, 0) + 1
            target = self.streams.get(out.request_id)
            if target is not None:
                batches.setdefault(target[0], []).append((target[1], out))
                if out.finished:
                    del self.streams[out.request_id]
        for loop, items in batches.items():      # one wake-up of each event loop per step
            loop.call_soon_threadsafe(_put_all, items)
        self.generation_tokens += new
        self.recent.append((now, new))
        while self.recent and self.recent[0][0] < now - RATE_WINDOW_S:
            self.recent.popleft()

    # ---- /metrics ----------------------------------------------------------------------------

    def prometheus(self, model_name: str) -> str:
        """Prometheus text exposition of the engine's state and the server's counters. Read from
        another thread without a lock: each figure is one read of an int or a list length."""
        e = self.engine
        now = time.monotonic()
        window = [n for t, n in list(self.recent) if t >= now - RATE_WINDOW_S]
        span = min(RATE_WINDOW_S, now - self.started_s) or 1.0
        free = e.cache.num_free_blocks
        rows = [
            ("gauge", "pyinfer_num_requests_waiting", "requests queued, not yet scheduled", len(e.scheduler.waiting)),
            ("gauge", "pyinfer_num_requests_running", "sequences in the running batch", len(e.scheduler.running)),
            ("gauge", "pyinfer_kv_cache_blocks_used", "KV blocks held by sequences or the prefix cache",
             e.cache.num_blocks - free),
            ("gauge", "pyinfer_kv_cache_blocks_total", "KV blocks in the pool", e.cache.num_blocks),
            ("counter", "pyinfer_prompt_tokens_total", "prompt tokens of accepted requests", self.prompt_tokens),
            ("counter", "pyinfer_generation_tokens_total", "tokens sampled", self.generation_tokens),
            ("gauge", "pyinfer_generation_tokens_per_second",
             f"tokens sampled per second over the last {RATE_WINDOW_S:g} s", sum(window) / span),
        ]
        lines = []
        for kind, name, help_, value in rows:
            lines += [f"# HELP {name} {help_} (model {model_name})", f"# TYPE {name} {kind}", f"{name} {value}"]
        lines += ["# HELP pyinfer_request_finished_total finished requests by finish_reason",
                  "# TYPE pyinfer_request_finished_total counter"]
        lines += [f'pyinfer_request_finished_total{{finish_reason="{k}"}} {v}'
                  for k, v in sorted(self.finished.items())]
        for name, hist, help_ in (("pyinfer_time_to_first_token_seconds", self.ttft, "TTFT = first token - arrival"),
                                  ("pyinfer_time_per_output_token_seconds", self.tpot,
                                   "TPOT = (last - first token) / (N - 1)")):
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} histogram"] + hist.lines(name)
        return "\n".join(lines) + "\n"


def _put_all(items) -> None:
    for stream, out in items:
        stream.put_nowait(out)


def _settle(future: asyncio.Future, result, error) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
