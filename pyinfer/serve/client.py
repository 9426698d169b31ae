"""The client's view of serving: replay a trace over HTTP against /v1/completions with one streaming
client per request (asyncio + httpx), each sent at its trace arrival time, and time what a client
sees. A request's tokens are counted from the stream's logprobs (logprobs=0 asks for the sampled
token's only), so each token gets the arrival time of the chunk that carried it.

With ``disconnect_fraction`` > 0, that share of requests (chosen by the seed) close their stream
after their first chunk: the server must abort them and free their KV blocks. The check at the end
reads /metrics: nothing running or waiting and no KV block held, once the server has settled."""
from __future__ import annotations

import asyncio
import json
import time

import numpy as np

from ..engine.metrics import RequestMetrics

SETTLE_S = 10.0


async def _one(client, url: str, i: int, r, base: dict, start: float, disconnect: bool, results: dict) -> None:
    await asyncio.sleep(max(0.0, start + r.arrival_s - time.perf_counter()))
    arrival = start + r.arrival_s
    body = {**base, "prompt": list(r.prompt_ids), "max_tokens": r.max_tokens,
            "seed": None if base.get("seed") is None else base["seed"] + i}
    times, ids, finishes, done, chunks = [], set(), [], 0, 0
    try:
        async with client.stream("POST", url + "/v1/completions", json=body) as resp:
            if resp.status_code != 200:
                results[i] = {"error": f"HTTP {resp.status_code}: {(await resp.aread()).decode()[:200]}"}
                return
            async for line in resp.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done += 1
                    continue
                now = time.perf_counter()
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    results[i] = {"error": chunk["error"]["message"]}
                    return
                ids.add(chunk["id"])
                for ch in chunk["choices"]:
                    n = len((ch.get("logprobs") or {}).get("tokens") or [])
                    times += [now] * n
                    if ch.get("finish_reason"):
                        finishes.append(ch["finish_reason"])
                chunks += 1
                if disconnect and chunks >= 1:
                    results[i] = {"disconnected": True}
                    return                    # leaving the block closes the connection mid-stream
    except Exception as e:                    # noqa: BLE001 - reported per request, counted as lost
        results[i] = {"error": f"{type(e).__name__}: {e}"}
        return
    results[i] = {"metrics": RequestMetrics(arrival_s=arrival, token_times_s=tuple(times),
                                            finish_s=times[-1] if times else None, prompt_len=len(r.prompt_ids),
                                            num_output_tokens=len(times)),
                  "ids": ids, "finishes": finishes, "done": done, "expected_tokens": r.max_tokens}


async def _replay(url: str, trace, base: dict, disconnect: set, timeout_s: float) -> dict:
    import httpx
    results: dict = {}
    limits = httpx.Limits(max_connections=len(trace) + 4, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), limits=limits) as client:
        start = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(_one(client, url, i, r, base, start, i in disconnect, results)
                                                for i, r in enumerate(trace))), timeout_s)
    return results


def read_metrics(url: str) -> dict[str, float]:
    """/metrics as {name: value} for the unlabelled samples."""
    import httpx
    text = httpx.get(url + "/metrics", timeout=10).text
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def http_replay(url: str, trace, temperature: float, seed: int | None, disconnect_fraction: float = 0.0,
                timeout_s: float = 600.0) -> dict:
    """Replay ``trace`` against the server at ``url``; the clients' metrics and the integrity check."""
    url = url.rstrip("/")
    if not 0 <= disconnect_fraction < 1:
        raise ValueError(f"--disconnect-fraction {disconnect_fraction} must be in [0, 1)")
    rng = np.random.default_rng(seed)
    disconnect = {i for i in range(len(trace)) if rng.random() < disconnect_fraction}
    base = {"model": "bench", "temperature": temperature, "seed": seed, "ignore_eos": True, "logprobs": 0,
            "stream": True}
    results = asyncio.run(_replay(url, trace, base, disconnect, timeout_s))
    completed = [i for i, r in results.items() if "metrics" in r]
    errors = {i: r["error"] for i, r in results.items() if "error" in r}
    lost = sorted(set(range(len(trace))) - set(results)) + sorted(errors)
    bad = [i for i in completed
           if len(results[i]["finishes"]) != 1 or results[i]["done"] != 1 or len(results[i]["ids"]) != 1
           or results[i]["metrics"].num_output_tokens != results[i]["expected_tokens"]]
    all_ids = [next(iter(results[i]["ids"])) for i in completed if len(results[i]["ids"]) == 1]
    deadline, state = time.perf_counter() + SETTLE_S, {}
    while time.perf_counter() < deadline:         # aborts of disconnected clients land asynchronously
        state = read_metrics(url)
        if state.get("pyinfer_num_requests_running", 1) == 0 and state.get("pyinfer_num_requests_waiting", 1) == 0 \
                and state.get("pyinfer_kv_cache_blocks_used", 1) == 0:
            break
        time.sleep(0.1)
    return {"metrics": [results[i]["metrics"] for i in sorted(completed)],
            "integrity": {"requests": len(trace), "completed": len(completed), "disconnected": len(disconnect),
                          "lost": len(lost), "lost_examples": {i: errors.get(i, "no result") for i in lost[:5]},
                          "malformed": len(bad), "duplicated_ids": len(all_ids) - len(set(all_ids)),
                          "after": {"running": state.get("pyinfer_num_requests_running"),
                                    "waiting": state.get("pyinfer_num_requests_waiting"),
                                    "kv_blocks_used": state.get("pyinfer_kv_cache_blocks_used")}}}
