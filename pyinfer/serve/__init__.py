"""The OpenAI-compatible HTTP server on the engine (an ASGI app under uvicorn; no model code here).

    pyinfer serve --model ../shared/models/stories260K.bin --tokenizer ../shared/models/tok512.bin

``serve(engine, ...)`` runs until Ctrl-C: uvicorn stops accepting, the engine loop aborts what runs,
and the KeyboardInterrupt goes on to the caller (the CLI exits 130)."""
from __future__ import annotations

import signal

from .loop import EngineLoop


def make_server(engine, model_name: str, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning",
                chat_template: str | None = None):
    """(uvicorn Server, EngineLoop) ready to run: ``loop.start()`` then ``server.run()`` (or set
    ``server.should_exit`` from another thread to stop it)."""
    try:
        import uvicorn
    except ImportError:
        raise ValueError("pyinfer serve needs starlette and uvicorn (pip install 'pyinfer[serve]')") from None
    from .app import build_app
    loop = EngineLoop(engine)
    app = build_app(loop, model_name, chat_template)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=2,
                            lifespan="off")

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None):
            loop.inbox.put(("stop",))      # abort what runs first: open streams then end at once
            await super().shutdown(sockets)

    return Server(config), loop


def serve(engine, model_name: str, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning",
          on_ready=None, chat_template: str | None = None) -> None:
    server, loop = make_server(engine, model_name, host, port, log_level, chat_template)
    loop.start()
    if on_ready is not None:
        _notify_when_started(server, on_ready)
    try:
        server.run()
    finally:
        loop.stop()
    if signal.SIGINT in getattr(server, "_captured_signals", ()):
        raise KeyboardInterrupt             # uvicorn re-raises it unless SIGINT was ignored (a background job)


def _notify_when_started(server, on_ready) -> None:
    import threading
    import time

    def wait():
        for _ in range(600):
            if server.started:
                on_ready()
                return
            time.sleep(0.05)
    threading.Thread(target=wait, daemon=True).start()


__all__ = ["EngineLoop", "make_server", "serve"]
