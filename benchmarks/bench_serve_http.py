"""Load test of `pyinfer serve` on loopback: start the server (stories260K), replay a trace of N
streamed requests over HTTP with a share of clients disconnecting after their first chunk, beside
the same trace replayed in process (`pyinfer bench serve --url`), then stop the server with Ctrl-C
(SIGINT) and check it exits 130. The JSON (machine named) goes to benchmarks/results/.

    PYTHONPATH=. python benchmarks/bench_serve_http.py --num-requests 1000 --disconnect-fraction 0.1

Bounded: the HTTP replay gives up after --http-timeout seconds, the server start after 120 s."""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(os.path.dirname(ROOT), "shared", "models")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--num-requests", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=100.0, help="Poisson arrivals per second")
    ap.add_argument("--prompt-len", default="uniform:4:64")
    ap.add_argument("--output-len", default="uniform:8:64")
    ap.add_argument("--disconnect-fraction", type=float, default=0.1)
    ap.add_argument("--http-timeout", type=float, default=900.0)
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/serve_http-<machine>.json)")
    args = ap.parse_args()
    model, tok = os.path.join(MODELS, "stories260K.bin"), os.path.join(MODELS, "tok512.bin")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": ROOT}
    server = subprocess.Popen([sys.executable, "-m", "pyinfer.cli", "serve", "--model", model, "--tokenizer", tok,
                               "--port", str(port), "--max-num-seqs", "32"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stderr.readline()
        if "pyinfer serve:" not in line:
            raise RuntimeError(f"server did not start: {line}")
        from pyinfer.engine.machine import machine_info
        out = args.out or os.path.join(ROOT, "benchmarks", "results",
                                       f"serve_http-{machine_info().get('cpu', 'cpu').replace(' ', '-').lower()}.json")
        t0 = time.time()
        bench = subprocess.run([sys.executable, "-m", "pyinfer.cli", "bench", "serve", "--model", model,
                                "--tokenizer", tok, "--num-requests", str(args.num_requests), "--rate", str(args.rate),
                                "--prompt-len", args.prompt_len, "--output-len", args.output_len, "--no-progress",
                                "--url", f"http://127.0.0.1:{port}", "--disconnect-fraction",
                                str(args.disconnect_fraction), "--http-timeout", str(args.http_timeout),
                                "--json", out], env=env, capture_output=True, text=True, timeout=args.http_timeout + 300)
        print(bench.stdout)
        if bench.returncode:
            print(bench.stderr, file=sys.stderr)
            return bench.returncode
        server.send_signal(signal.SIGINT)
        rc = server.wait(timeout=60)
        with open(out) as f:
            result = json.load(f)
        result["load_test"] = {"command": " ".join(sys.argv), "wall_s": time.time() - t0, "server_exit_code": rc}
        with open(out, "w") as f:
            json.dump(result, f, indent=1)
        i = result["http"]["integrity"]
        print(f"server exit {rc}; wrote {out}")
        ok = i["lost"] == 0 and i["malformed"] == 0 and i["duplicated_ids"] == 0 and rc == 130 and \
            i["after"] == {"running": 0, "waiting": 0, "kv_blocks_used": 0}
        return 0 if ok else 1
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


if __name__ == "__main__":
    sys.exit(main())
