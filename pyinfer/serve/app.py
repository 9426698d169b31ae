"""The OpenAI-compatible HTTP API as a Starlette (ASGI) app over one EngineLoop:

    POST /v1/completions, /v1/chat/completions   (stream: server-sent events, ending "data: [DONE]")
    GET  /v1/models, /health, /metrics          (/metrics: Prometheus text)

Errors are OpenAI's shape, {"error": {"message", "type", "param", "code"}}, status 400 for a bad
request. A streaming client that disconnects has its request aborted (its KV blocks freed); so
does a non-streaming one, noticed within POLL_S."""
from __future__ import annotations

import asyncio
import json
import time
import uuid

from .loop import ABORTED, EngineLoop
from .protocol import (RequestError, chat_logprobs, chat_request, completion_logprobs, completion_request,
                       echo_logprobs, error_body, sampling_params, usage)

POLL_S = 0.5


def build_app(loop: EngineLoop, model_name: str, chat_template: str | None = None):
    try:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
        from starlette.routing import Route
    except ImportError:
        raise ValueError("pyinfer serve needs starlette and uvicorn (pip install 'pyinfer[serve]')") from None
    engine = loop.engine
    created = int(time.time())

    def bad(e: RequestError | ValueError, code: int = 400):
        return JSONResponse(error_body(str(e), getattr(e, "param", None), code), status_code=code)

    async def read_json(request: Request) -> dict:
        try:
            return json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RequestError(f"the request body is not JSON: {e}") from None

    async def submit(prompts, params) -> list[tuple[int, asyncio.Queue]]:
        """Queue every prompt (all or none: a refused one aborts those already queued)."""
        handles = []
        try:
            for p in prompts:
                handles.append(await loop.add(p, params))
        except ValueError as e:
            for rid, _ in handles:
                loop.abort(rid)
            raise RequestError(str(e)) from None
        return handles

    async def next_output(request: Request, stream: asyncio.Queue, rid: int, poll: bool):
        while True:
            try:
                return await asyncio.wait_for(stream.get(), POLL_S) if poll else await stream.get()
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    loop.abort(rid)
                    return None

    async def collect(request: Request, handles):
        finals = []
        for rid, stream in handles:
            while True:
                out = await next_output(request, stream, rid, poll=True)
                if out is None:
                    for other, _ in handles:
                        loop.abort(other)
                    return None
                if isinstance(out, tuple) and out[0] is ABORTED:
                    raise RuntimeError(out[1])
                if out.finished:
                    finals.append(out)
                    break
        return finals

    async def collect_or_error(request: Request, handles):
        """Every request's final output, or the error response to send instead (the engine failed
        the request: 500; the client went away: 499)."""
        try:
            finals = await collect(request, handles)
        except RuntimeError as e:
            return JSONResponse(error_body(str(e), code=500, kind="InternalServerError"), status_code=500)
        if finals is None:
            return JSONResponse(error_body("client disconnected"), status_code=499)
        return finals

    def sse(obj) -> str:
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    async def stream_events(handles, chunk_of, final_usage, include_usage: bool):
        """SSE lines for every output of every handle (prompt order, interleaved as they come)."""
        merged: asyncio.Queue = asyncio.Queue()
        pending = {rid for rid, _ in handles}

        async def pump(i, rid, q):
            while True:
                out = await q.get()
                await merged.put((i, out))
                if (isinstance(out, tuple) and out[0] is ABORTED) or out.finished:
                    return
        tasks = [asyncio.create_task(pump(i, rid, q)) for i, (rid, q) in enumerate(handles)]
        totals = [0, 0]
        try:
            while pending:
                i, out = await merged.get()
                rid = handles[i][0]
                if isinstance(out, tuple) and out[0] is ABORTED:
                    yield sse(error_body(out[1], code=500, kind="InternalServerError"))
                    pending.discard(rid)
                    continue
                for line in chunk_of(i, out):
                    yield line
                if out.finished:
                    pending.discard(rid)
                    totals[0] += len(out.prompt_token_ids)
                    totals[1] += sum(len(c.token_ids) for c in out.outputs)
            if include_usage:
                yield sse(final_usage(*totals))
            yield "data: [DONE]\n\n"
        finally:                                   # a client gone mid-stream lands here (cancelled)
            for t in tasks:
                t.cancel()
            for rid in pending:
                loop.abort(rid)

    # ---- /v1/completions ---------------------------------------------------------------------

    async def completions(request: Request):
        try:
            body = await read_json(request)
            prompts, max_tokens, logprobs = completion_request(body)
            ctx = engine.max_seq_len
            echo = bool(body.get("echo"))                     # the prompt before the text (and its logprobs)
            if echo and engine.tokenizer is None:
                raise RequestError("echo needs the served model's tokenizer", "echo")
            params = sampling_params(body, max_tokens, logprobs, ctx, logprobs if echo else None)
            handles = await submit(prompts, params)
        except RequestError as e:
            return bad(e)
        rid_text = f"cmpl-{uuid.uuid4().hex}"
        n = params.n

        def choice(i, c, text, finish, lp_slice, text_start):
            return {"index": i * n + c.index, "text": text,
                    "logprobs": (completion_logprobs(c, lp_slice, text_start, logprobs)
                                 if logprobs is not None else None),
                    "finish_reason": finish, "stop_reason": c.stop_reason if finish else None}

        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

            def chunk_of(i, out):
                for c in out.outputs:
                    if not c.delta_text and not c.delta_token_ids and not (out.finished and c.finish_reason):
                        continue
                    k = len(c.delta_token_ids)
                    yield sse({"id": rid_text, "object": "text_completion", "created": int(time.time()),
                               "model": model_name,
                               "choices": [choice(i, c, c.delta_text, c.finish_reason,
                                                  slice(len(c.token_ids) - k, len(c.token_ids)),
                                                  len(c.text) - len(c.delta_text))]})

            def final_usage(p, q):
                return {"id": rid_text, "object": "text_completion", "created": int(time.time()),
                        "model": model_name, "choices": [], "usage": usage(p, q)}
            return StreamingResponse(stream_events(handles, chunk_of, final_usage, include_usage),
                                     media_type="text/event-stream")
        finals = await collect_or_error(request, handles)
        if isinstance(finals, JSONResponse):
            return finals
        def echoed(i, out, c):
            """vLLM's echo: the prompt's text, then the output; the prompt's logprobs, then the output's."""
            head = out.prompt if out.prompt is not None else engine.tokenizer.decode(out.prompt_token_ids)
            if logprobs is None:
                return choice(i, c, head + c.text, c.finish_reason, slice(None), 0)
            lp = echo_logprobs(out, logprobs, lambda t: engine.tokenizer.decode([t]))
            start = lp["text_offset"][-1] + len(lp["tokens"][-1])
            tail = completion_logprobs(c, slice(None), start, logprobs)
            return {**choice(i, c, head + c.text, c.finish_reason, slice(0), 0),
                    "logprobs": {k: lp[k] + tail[k] for k in lp}}

        choices = [echoed(i, out, c) if echo else choice(i, c, c.text, c.finish_reason, slice(None), 0)
                   for i, out in enumerate(finals) for c in out.outputs]
        return JSONResponse({"id": rid_text, "object": "text_completion", "created": int(time.time()),
                             "model": model_name, "choices": choices,
                             "usage": usage(sum(len(o.prompt_token_ids) for o in finals),
                                            sum(len(c.token_ids) for o in finals for c in o.outputs))})

    # ---- /v1/chat/completions ----------------------------------------------------------------

    async def chat_completions(request: Request):
        from ..engine.llm import _TextIds, chat_prompt
        try:
            body = await read_json(request)
            messages, max_tokens, logprobs = chat_request(body)
            try:
                text, ids = chat_prompt(engine.tokenizer, messages, chat_template)
            except ValueError as e:
                raise RequestError(f"model {model_name!r}: {e}", "messages") from None
            params = sampling_params(body, max_tokens, logprobs, max(engine.max_seq_len - len(ids), 1))
            handles = await submit([_TextIds(ids, text)], params)
        except RequestError as e:
            return bad(e)
        rid_text = f"chatcmpl-{uuid.uuid4().hex}"
        top = body.get("top_logprobs") or 0

        def lp(c, sl):
            return chat_logprobs(c, sl, top) if logprobs is not None else None

        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            started: set[int] = set()

            def head(choices):
                return {"id": rid_text, "object": "chat.completion.chunk", "created": int(time.time()),
                        "model": model_name, "choices": choices}

            def chunk_of(i, out):
                for c in out.outputs:
                    if c.index not in started:
                        started.add(c.index)
                        yield sse(head([{"index": c.index, "delta": {"role": "assistant", "content": ""},
                                         "logprobs": None, "finish_reason": None}]))
                    k = len(c.delta_token_ids)
                    if c.delta_text or k:
                        yield sse(head([{"index": c.index, "delta": {"content": c.delta_text},
                                         "logprobs": lp(c, slice(len(c.token_ids) - k, len(c.token_ids))),
                                         "finish_reason": None}]))
                    if c.finish_reason and c.index not in finished_sent:
                        finished_sent.add(c.index)
                        yield sse(head([{"index": c.index, "delta": {}, "logprobs": None,
                                         "finish_reason": c.finish_reason, "stop_reason": c.stop_reason}]))
            finished_sent: set[int] = set()

            def final_usage(p, q):
                return {**head([]), "usage": usage(p, q)}
            return StreamingResponse(stream_events(handles, chunk_of, final_usage, include_usage),
                                     media_type="text/event-stream")
        finals = await collect_or_error(request, handles)
        if isinstance(finals, JSONResponse):
            return finals
        out = finals[0]
        choices = [{"index": c.index, "message": {"role": "assistant", "content": c.text},
                    "logprobs": lp(c, slice(None)), "finish_reason": c.finish_reason, "stop_reason": c.stop_reason}
                   for c in out.outputs]
        return JSONResponse({"id": rid_text, "object": "chat.completion", "created": int(time.time()),
                             "model": model_name, "choices": choices,
                             "usage": usage(len(out.prompt_token_ids), sum(len(c.token_ids) for c in out.outputs))})

    # ---- the rest --------------------------------------------------------------------------

    async def models(request: Request):
        return JSONResponse({"object": "list", "data": [
            {"id": model_name, "object": "model", "created": created, "owned_by": "pyinfer",
             "max_model_len": engine.max_seq_len}]})

    async def health(request: Request):
        ok = loop.thread.is_alive()
        return PlainTextResponse("ok\n" if ok else "engine loop stopped\n", status_code=200 if ok else 503)

    async def metrics(request: Request):
        return PlainTextResponse(loop.prometheus(model_name), media_type="text/plain; version=0.0.4")

    async def not_found(request: Request, exc):
        return JSONResponse(error_body(f"no route {request.method} {request.url.path}", code=404,
                                       kind="NotFoundError"), status_code=404)

    async def wrong_method(request: Request, exc):
        return JSONResponse(error_body(f"{request.method} is not allowed on {request.url.path}", code=405,
                                       kind="MethodNotAllowed"), status_code=405)

    routes = [Route("/v1/completions", completions, methods=["POST"]),
              Route("/v1/chat/completions", chat_completions, methods=["POST"]),
              Route("/v1/models", models, methods=["GET"]),
              Route("/health", health, methods=["GET"]),
              Route("/metrics", metrics, methods=["GET"])]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: wrong_method})
