"""`pyinfer serve` driven by the real `openai` client on a loopback port: completions and chat
completions, streaming and not, n > 1, stop, max_tokens, logprobs, text equal to LLM.generate for
the same seed; OpenAI-style 400s; a disconnected stream frees its request and KV blocks; /metrics;
Ctrl-C exits 130; and a small load test with random disconnects loses nothing and leaks no block."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from pyinfer import LLM, SamplingParams  # noqa: E402
from pyinfer.engine import Engine  # noqa: E402
from pyinfer.serve import make_server  # noqa: E402

from conftest import SHARED_MODELS  # noqa: E402

STORIES260K, TOK512 = SHARED_MODELS / "stories260K.bin", SHARED_MODELS / "tok512.bin"
TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"no server at {url}")


@pytest.fixture(scope="module")
def llm():
    return LLM(model=str(STORIES260K), tokenizer=str(TOK512), backend="numpy")


def start(llm, chat_template=None):
    port = free_port()
    engine = Engine(llm.engine.model, llm.engine.tokenizer, llm.engine.config, seed=0)
    server, loop = make_server(engine, "stories", "127.0.0.1", port, chat_template=chat_template)
    loop.start()
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url)
    return server, loop, thread, url


@pytest.fixture(scope="module")
def servers(llm):
    plain, chat = start(llm), start(llm, TEMPLATE)
    yield {"plain": plain, "chat": chat}
    for server, loop, thread, _ in (plain, chat):
        server.should_exit = True
        thread.join(timeout=10)
        loop.stop()


def client(servers, which="plain"):
    return openai.OpenAI(base_url=servers[which][3] + "/v1", api_key="none", max_retries=0, timeout=60)


def test_models_lists_the_served_name(servers):
    assert [m.id for m in client(servers).models.list().data] == ["stories"]


def test_completion_equals_llm_generate_for_the_same_seed(servers, llm):
    c = client(servers)
    got = c.completions.create(model="any-name", prompt="Once upon a time", max_tokens=12, temperature=0.8, seed=5)
    ref = llm.generate("Once upon a time", SamplingParams(temperature=0.8, seed=5, max_tokens=12), use_tqdm=False)[0]
    assert got.choices[0].text == ref.outputs[0].text
    assert got.choices[0].finish_reason == ref.outputs[0].finish_reason
    assert got.usage.prompt_tokens == len(ref.prompt_token_ids)
    assert got.usage.completion_tokens == len(ref.outputs[0].token_ids)


def test_streaming_completion_chunks_make_the_same_text(servers):
    c = client(servers)
    whole = c.completions.create(model="m", prompt="The cat", max_tokens=20, temperature=0).choices[0]
    chunks = list(c.completions.create(model="m", prompt="The cat", max_tokens=20, temperature=0, stream=True))
    assert "".join(ch.choices[0].text for ch in chunks) == whole.text
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices[0].finish_reason] == [whole.finish_reason]


def test_n_samples_equal_llm_generate_with_n(servers, llm):
    got = client(servers).completions.create(model="m", prompt="Lily", max_tokens=8, temperature=1.0, seed=3, n=2)
    ref = llm.generate("Lily", SamplingParams(temperature=1.0, seed=3, max_tokens=8, n=2), use_tqdm=False)[0]
    assert sorted((ch.index, ch.text) for ch in got.choices) == [(o.index, o.text) for o in ref.outputs]


def test_stop_and_max_tokens(servers):
    c = client(servers)
    full = c.completions.create(model="m", prompt="Once upon a time", max_tokens=30, temperature=0).choices[0].text
    stop = full[10:14]
    got = c.completions.create(model="m", prompt="Once upon a time", max_tokens=30, temperature=0, stop=[stop])
    assert got.choices[0].text == full[:full.index(stop)] and got.choices[0].finish_reason == "stop"
    streamed = c.completions.create(model="m", prompt="Once upon a time", max_tokens=30, temperature=0, stop=stop,
                                    stream=True)
    assert "".join(ch.choices[0].text for ch in streamed) == full[:full.index(stop)]
    got = c.completions.create(model="m", prompt="Once", max_tokens=7, temperature=0.5, extra_body={"ignore_eos": True})
    assert got.usage.completion_tokens == 7 and got.choices[0].finish_reason == "length"


def test_logprobs(servers):
    got = client(servers).completions.create(model="m", prompt="The dog", max_tokens=6, temperature=0, logprobs=2)
    lp = got.choices[0].logprobs
    assert "".join(lp.tokens) == got.choices[0].text and len(lp.token_logprobs) == 6
    for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert value <= 0 and len(top) <= 2 and max(top.values()) == pytest.approx(value)   # greedy: the top one


def test_chat_completions_stream_and_not_equal_llm_chat(servers, llm):
    c = client(servers, "chat")
    messages = [{"role": "user", "content": "Once upon a time"}]
    got = c.chat.completions.create(model="m", messages=messages, max_tokens=10, temperature=0.7, seed=2)
    ref = llm.chat(messages, SamplingParams(temperature=0.7, seed=2, max_tokens=10), use_tqdm=False,
                   chat_template=TEMPLATE)[0]
    assert got.choices[0].message.content == ref.outputs[0].text and got.choices[0].message.role == "assistant"
    chunks = list(c.chat.completions.create(model="m", messages=messages, max_tokens=10, temperature=0.7, seed=2,
                                            stream=True, logprobs=True, top_logprobs=2))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == ref.outputs[0].text
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices[0].finish_reason] == ["length"]


def test_chat_without_a_template_and_bad_requests_are_400s(servers):
    c = client(servers)
    with pytest.raises(openai.BadRequestError, match="no chat template"):
        c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="temperature"):
        c.completions.create(model="m", prompt="x", temperature=5)
    with pytest.raises(openai.BadRequestError, match="bogus"):
        c.completions.create(model="m", prompt="x", extra_body={"bogus": 1})
    with pytest.raises(openai.BadRequestError, match="top_p"):
        c.completions.create(model="m", prompt="x", top_p=0)
    with pytest.raises(openai.BadRequestError, match="prompt"):
        c.completions.create(model="m", prompt=[[]])


def metrics(url: str) -> dict:
    from pyinfer.serve.client import read_metrics
    return read_metrics(url)


def settle(url: str, timeout_s: float = 10.0) -> dict:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        m = metrics(url)
        if m["pyinfer_num_requests_running"] == 0 and m["pyinfer_num_requests_waiting"] == 0:
            return m
        time.sleep(0.05)
    return metrics(url)


def test_a_client_gone_mid_stream_frees_its_request_and_blocks(servers):
    url = servers["plain"][3]
    body = {"model": "m", "prompt": "Once", "max_tokens": 400, "temperature": 1.0, "stream": True,
            "ignore_eos": True}
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=30) as r:
        lines = r.iter_lines()                 # kept referenced: dropping it would close the stream
        for line in lines:
            if line.startswith("data: "):
                break
        during = metrics(url)
        assert during["pyinfer_num_requests_running"] == 1 and during["pyinfer_kv_cache_blocks_used"] > 0
    m = settle(url)
    assert m["pyinfer_num_requests_running"] == 0 and m["pyinfer_kv_cache_blocks_used"] == 0
    text = httpx.get(url + "/metrics").text
    assert 'pyinfer_time_to_first_token_seconds_bucket{le="+Inf"}' in text and "abort" in text


def test_load_with_random_disconnects_loses_nothing_and_leaks_no_block(servers, llm):
    from pyinfer.engine.trace import LengthDist, synthetic_trace
    from pyinfer.serve.client import http_replay
    c = llm.engine.model.config
    trace = synthetic_trace(100, 200.0, LengthDist.parse("uniform:2:24"), LengthDist.parse("uniform:2:12"),
                            c.vocab_size, c.max_seq_len, 1)
    got = http_replay(servers["plain"][3], trace, 0.8, 1, disconnect_fraction=0.2, timeout_s=120)
    i = got["integrity"]
    assert i["completed"] + i["disconnected"] == 100 and i["lost"] == 0 and i["malformed"] == 0
    assert i["duplicated_ids"] == 0 and i["disconnected"] > 0
    assert i["after"] == {"running": 0, "waiting": 0, "kv_blocks_used": 0}


def test_ctrl_c_aborts_what_runs_and_exits_130():
    port = free_port()
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.Popen([sys.executable, "-m", "pyinfer.cli", "serve", "--preset", "toy", "--port", str(port)],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, 60)
        lines = []
        body = {"model": "m", "prompt": "Once", "max_tokens": 500, "stream": True, "ignore_eos": True}
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=30) as r:
            for line in r.iter_lines():
                lines.append(line)
                if len(lines) == 2:
                    proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
        data = [x for x in lines if x]
        assert data[-1] == "data: [DONE]" and any("shutting down" in x for x in data)
        assert "interrupted" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_port_in_use_is_refused_by_name():
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "pyinfer.cli", "serve", "--preset", "toy", "--port", str(port)],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT}, timeout=120)
    assert r.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in r.stderr
