"""The Triton kernels on a lent GPU, in one bounded run: each kernel checked against the numpy
reference at full size, then timed against torch in the same process (medians of
triton.testing.do_bench, L2 flushed between runs), a table printed, JSON + markdown written.

    PYTHONPATH=. python benchmarks/gpu_suite.py --out DIR          # full run, 4-6 min (estimated) on an H100
    PYTHONPATH=. python benchmarks/gpu_suite.py --out DIR --quick  # no tile sweeps, short e2e
    (tile sweeps run last, after every bar is measured, while --budget-s lasts)
    TRITON_INTERPRET=1 PYTHONPATH=. python benchmarks/gpu_suite.py --smoke --out /tmp/x
        # tiny shapes on the CPU through Triton's interpreter: exercises the script, times nothing

Without a GPU (and without --smoke under the interpreter) it prints why and exits 0 having
measured nothing. Baselines: cuBLAS fp16 matmul, torch._weight_int4pack_mm (bf16 activations),
SDPA's flash backend (causal prefill), SDPA over contiguous KV (decode), a device-to-device copy.
Bars are those of issue 4, each a ratio against the baseline measured in this run.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine  # noqa: E402


class Suite:
    """Rows of results, the clock, and the timer (do_bench on CUDA, wall clock in --smoke)."""

    def __init__(self, args, torch, cuda: bool):
        self.args, self.torch, self.cuda = args, torch, cuda
        self.t0 = time.perf_counter()
        self.rows: list[dict] = []
        self.sweeps: list = []
        self.dev = torch.device("cuda" if cuda else "cpu")
        print(f"{'section':10s} {'case':44s} {'ours us':>10s} {'base us':>10s} {'ratio':>6s}  "
              f"{'figure':22s} {'check':>9s}  bar", flush=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def time_left(self) -> bool:
        return self.elapsed() < self.args.budget_s

    def sweep_later(self, name, fn):
        """Tile sweeps are extras: queued, run after every section (the bars) while time is left."""
        if not self.args.quick:
            self.sweeps.append((name, fn))

    def bench_us(self, fn) -> float:
        if self.cuda:
            import triton.testing
            return 1e3 * triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
        fn()
        t = time.perf_counter()
        fn()
        return 1e6 * (time.perf_counter() - t)

    def row(self, section, case, ours_us=None, base_us=None, figure="", check=None, bar=None,
            check_tol=2e-2, **extra):
        """bar: (minimum ratio base/ours, description) or None. check: max relative error (against
        the reference on fp16/bf16-rounded inputs, or against torch) or None; above check_tol: BAD."""
        ratio = base_us / ours_us if ours_us and base_us else None
        check_ok = None if check is None else bool(check <= check_tol)
        passed = None if bar is None or ratio is None or not self.cuda else ratio >= bar[0]
        r = {"section": section, "case": case, "ours_us": ours_us, "baseline_us": base_us,
             "speedup_vs_baseline": ratio, "figure": figure, "max_rel_err": check,
             "bar": None if bar is None else bar[1], "bar_met": passed, "check_ok": check_ok, **extra}
        self.rows.append(r)
        f = lambda v, fmt: "-" if v is None else format(v, fmt)  # noqa: E731
        print(f"{section:10s} {case:44s} {f(ours_us, '10.1f')} {f(base_us, '10.1f')} {f(ratio, '6.2f')}  "
              f"{figure:22s} {f(check, '9.1e')}{'' if check_ok is not False else ' BAD'}  {'' if bar is None else bar[1]}"
              f"{'' if passed is None else (' MET' if passed else ' MISSED')}", flush=True)
        return r

    def guard(self, section, fn):
        try:
            fn()
        except Exception as e:  # a section's failure is a result, not the end of the run
            print(f"{section:10s} FAILED: {type(e).__name__}: {e}", flush=True)
            self.rows.append({"section": section, "error": f"{type(e).__name__}: {e}"})


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def tiles_w4(M, N, K, G, ctx, mm):
    """Alternative tiles for the W4A16 kernels: the GEMV at M=1, the tensor-core GEMM (at M=1 too)."""
    out = []
    if M == 1:
        for bn, per_row, warps in ((16, 512, 4), (32, 256, 4), (32, 512, 4), (64, 256, 4), (64, 512, 8)):
            groups = max(1, per_row // G)
            split = mm._split_k(-(-N // bn), -(-(K // G) // groups), ctx.sm_count)
            out.append({"BLOCK_N": bn, "GROUPS": groups, "SPLIT_K": split, "num_warps": warps, "num_stages": 3})
    for bn in (64, 128) if M == 1 else (64, 128, 256):
        split = mm._split_k(-(-N // bn) * -(-M // 16), K // G, ctx.sm_count)
        for s in sorted({split, 2 * split}) if M > 1 else (split,):
            out.append({"BLOCK_M": 16, "BLOCK_N": bn, "SPLIT_K": s, "num_warps": 4, "num_stages": 3})
    return out


def section_copy(S):
    torch = S.torch
    n = (1 << 29) if not S.args.smoke else (1 << 16)            # fp16 elements: 1 GiB
    src = torch.randn(n, device=S.dev).half()
    dst = torch.empty_like(src)
    us = S.bench_us(lambda: dst.copy_(src))
    S.copy_gbs = 2 * src.nbytes / us / 1e3
    S.row("copy", f"device-to-device {src.nbytes / 2**30:.2f} GiB", us, None, f"{S.copy_gbs:.0f} GB/s (r+w)")


def section_matmul(S, ctx):
    torch = S.torch
    from pyinfer import quant
    from pyinfer.kernels import reference as ref
    from pyinfer.kernels.triton_gpu import matmul as mm
    from pyinfer.kernels.triton_gpu.layout import repack_int4
    rng = np.random.default_rng(0)
    N = K = 256 if S.args.smoke else 8192
    w16 = (torch.randn(N, K, device=S.dev) / K ** 0.5).half()
    for M in ((1, 4) if S.args.smoke else (1, 16)):
        x32 = rng.standard_normal((M, K)).astype(np.float32)
        x16 = torch.from_numpy(x32).to(S.dev).half()
        x_ref = x16.float().cpu().numpy()
        fp16_us = S.bench_us(lambda: torch.matmul(x16, w16.t()))
        S.row("matmul", f"torch fp16 x[{M},{K}] @ W[{N},{K}].T", None, fp16_us,
              f"{2 * N * K / fp16_us / 1e3:.0f} GB/s weights")
        out = torch.empty((M, N), dtype=torch.float16, device=S.dev)
        for G, zp in ((128, False), (32, False), (128, True)):
            fmt = f"int4-g{G}" + ("-zp" if zp else "")
            qw = rng.integers(0, 256, (N, K // 2), dtype=np.uint8)
            sc = (rng.random((N, K // G), dtype=np.float32) * 0.02 + 0.002).astype(np.float16).astype(np.float32)
            zr = rng.integers(0, 16, (N, K // G), dtype=np.uint8) if zp else None
            args = (torch.from_numpy(qw).to(S.dev), torch.from_numpy(sc).to(S.dev).half(),
                    None if zr is None else torch.from_numpy(zr).to(S.dev), G)
            mm.matmul_w4a16(out, x16, *args, ctx=ctx)
            want = ref.matmul_w4a16(np.empty((M, N), np.float32), x_ref, qw, sc, zr, G)
            err = rel_err(out.float().cpu().numpy(), want)
            base_i4 = None
            if S.cuda:
                try:
                    packed = torch.ops.aten._convert_weight_to_int4pack(args[0], 8)
                    sz = torch.rand(K // G, N, 2, dtype=torch.bfloat16, device=S.dev)
                    xb = x16.to(torch.bfloat16)
                    base_i4 = S.bench_us(lambda: torch.ops.aten._weight_int4pack_mm(xb, packed, G, sz))
                except Exception as e:  # noqa: BLE001 - the baseline's API moves between torch versions
                    print(f"matmul     torch int4pack baseline unavailable: {e}", flush=True)
            ours = S.bench_us(lambda: mm.matmul_w4a16(out, x16, *args, ctx=ctx))
            wbytes = qw.nbytes + sc.size * 2 + (0 if zr is None else zr.nbytes)
            S.row("matmul", f"W4A16 {fmt} M={M} (heuristic tiles)", ours, fp16_us,
                  f"{wbytes / ours / 1e3:.0f} GB/s", err, (2.5, "2.5x fp16") if G == 128 and not zp else None,
                  vs_int4pack=None if base_i4 is None else base_i4 / ours, int4pack_us=base_i4,
                  config=mm.default_config("gemv_w4" if M == 1 else "gemm_w4", M, N, K, G,
                                           sm_count=ctx.sm_count, interpret=ctx.interpret))
            if base_i4 is not None:
                S.row("matmul", f"  vs torch _weight_int4pack_mm {fmt} M={M}", ours, base_i4, "", None,
                      (1.0, "faster than int4pack") if G == 128 and not zp else None)
            if not zp and G == 128:
                S.sweep_later("matmul", lambda M=M, fmt=fmt, args=args, want=want, x16=x16, out=out, fp16_us=fp16_us,
                              wbytes=wbytes, ours=ours: sweep_w4(S, ctx, mm, repack_int4(*args), M, N, K, 128,
                                                                 fmt, x16, out, want, fp16_us, wbytes, ours))
        # bfloat16 activations (the bf16 dequantization path of the GEMM): checked, not a bar
        G = 128
        qw = rng.integers(0, 256, (N, K // 2), dtype=np.uint8)
        sc = (rng.random((N, K // G), dtype=np.float32) * 0.02 + 0.002)
        sc = torch.from_numpy(sc).to(S.dev).bfloat16()
        xb, ob = x16.bfloat16(), torch.empty((M, N), dtype=torch.bfloat16, device=S.dev)
        mm.matmul_w4a16(ob, xb, torch.from_numpy(qw).to(S.dev), sc, None, G, ctx=ctx)
        want = ref.matmul_w4a16(np.empty((M, N), np.float32), xb.float().cpu().numpy(), qw,
                                sc.float().cpu().numpy(), None, G)
        S.row("matmul", f"W4A16 int4-g128 M={M} bfloat16 (check only)", None, None, "",
              rel_err(ob.float().cpu().numpy(), want), check_tol=6e-2)
        # W8A16 (int8 per channel)
        qt = quant.QTensor(quant.get_format("int8"), (N, K), rng.integers(-127, 128, (N, K), dtype=np.int8),
                           (rng.random(N, dtype=np.float32) * 0.01 + 0.001).astype(np.float16).astype(np.float32))
        a8 = (torch.from_numpy(qt.qweight).to(S.dev), torch.from_numpy(qt.scales).to(S.dev).half())
        mm.matmul_w8a16(out, x16, *a8, ctx=ctx)
        err = rel_err(out.float().cpu().numpy(), ref.matmul_w8a16(np.empty((M, N), np.float32), x_ref, *[
            qt.qweight, qt.scales]))
        ours = S.bench_us(lambda: mm.matmul_w8a16(out, x16, *a8, ctx=ctx))
        S.row("matmul", f"W8A16 int8 M={M} (heuristic tiles)", ours, fp16_us,
              f"{(N * K + 2 * N) / ours / 1e3:.0f} GB/s", err, (1.7, "1.7x fp16") if M == 1 else None)
        if M == 1:
            S.sweep_later("matmul", lambda a8=a8, x16=x16, out=out, fp16_us=fp16_us, ours=ours:
                          sweep_w8(S, ctx, mm, a8, N, K, x16, out, fp16_us, ours))
        # the plain fp16 matmul (the fp16 model's linear layers)
        mm.matmul(out, x16, w16, ctx=ctx)
        err = rel_err(out.float().cpu().numpy(), (x16.float() @ w16.float().t()).cpu().numpy())
        ours = S.bench_us(lambda: mm.matmul(out, x16, w16, ctx=ctx))
        S.row("matmul", f"triton fp16 matmul M={M}", ours, fp16_us, f"{2 * N * K / ours / 1e3:.0f} GB/s", err)


def sweep_w4(S, ctx, mm, packed, M, N, K, G, fmt, x16, out, want, fp16_us, wbytes, heuristic_us):
    best = (heuristic_us, "heuristic")
    for cfg in tiles_w4(M, N, K, G, ctx, mm):
        us = S.bench_us(lambda: mm.matmul_w4a16_packed(out, x16, packed, ctx=ctx, config=cfg))
        err = rel_err(out.float().cpu().numpy(), want)
        S.rows.append({"section": "matmul-sweep", "case": f"W4A16 {fmt} M={M}", "config": cfg,
                       "ours_us": us, "max_rel_err": err})
        best = min(best, (us, json.dumps(cfg)))
    S.row("matmul", f"W4A16 {fmt} M={M} (best swept tiles)", best[0], fp16_us,
          f"{wbytes / best[0] / 1e3:.0f} GB/s", None, (2.5, "2.5x fp16"), config=best[1])


def sweep_w8(S, ctx, mm, a8, N, K, x16, out, fp16_us, heuristic_us):
    best = (heuristic_us, "heuristic")
    for bn, bk in ((16, 256), (32, 128), (32, 256), (64, 128)):
        cfg = {"BLOCK_N": bn, "BLOCK_K": bk, "num_warps": 4, "num_stages": 3,
               "SPLIT_K": mm._split_k(-(-N // bn), K // bk, ctx.sm_count)}
        us = S.bench_us(lambda: mm.matmul_w8a16(out, x16, *a8, ctx=ctx, config=cfg))
        S.rows.append({"section": "matmul-sweep", "case": "W8A16 M=1", "config": cfg, "ours_us": us})
        best = min(best, (us, json.dumps(cfg)))
    S.row("matmul", "W8A16 int8 M=1 (best swept tiles)", best[0], fp16_us, "", None, (1.7, "1.7x fp16"),
          config=best[1])


def section_prefill(S, ctx):
    torch = S.torch
    import torch.nn.functional as F
    from pyinfer.kernels import reference as ref
    from pyinfer.kernels.triton_gpu import attention as at
    cases = [(1, 2, 2, 64, 64, torch.float16)] if S.args.smoke else [
        (4, 32, 32, 4096, 128, torch.float16), (4, 32, 32, 4096, 128, torch.bfloat16),
        (4, 32, 32, 4096, 64, torch.float16), (4, 32, 8, 4096, 128, torch.float16)]
    for B, H, KVH, S_, D, dt in cases:
        if not S.time_left():
            break
        q = torch.randn(B, H, S_, D, device=S.dev, dtype=dt)
        k, v = (torch.randn(B, KVH, S_, D, device=S.dev, dtype=dt) for _ in range(2))
        scale = D ** -0.5
        out = torch.empty(B, S_, H, D, device=S.dev, dtype=dt)
        ours_fn = lambda: at.attention_prefill_batched(out, q.transpose(1, 2), k.transpose(1, 2),  # noqa: E731
                                                       v.transpose(1, 2), scale, ctx=ctx)
        kk, vv = (k, v) if KVH == H else (k.repeat_interleave(H // KVH, 1), v.repeat_interleave(H // KVH, 1))

        def sdpa():
            if not S.cuda:
                return F.scaled_dot_product_attention(q, kk, vv, is_causal=True, scale=scale)
            from torch.nn.attention import SDPBackend, sdpa_kernel
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(q, kk, vv, is_causal=True, scale=scale)
        ours_fn()
        want_t = sdpa()
        err_sdpa = rel_err(out.transpose(1, 2).float().cpu().numpy(), want_t.float().cpu().numpy())
        nk = 2 if KVH == H else 1                              # heads 0, 1 and their KV head(s)
        q0 = q[0, :2].transpose(0, 1).float().cpu().numpy()    # (S, 2, D)
        k0, v0 = (t[0, :nk].transpose(0, 1).float().cpu().numpy() for t in (k, v))
        want0 = ref.attention_prefill(np.empty_like(q0), q0, k0, v0, scale)
        err_ref = rel_err(out[0, :, :2].float().cpu().numpy(), want0)
        ours = S.bench_us(ours_fn)
        base = S.bench_us(sdpa)
        tflops = at.sdpa_flops(B, H, S_, S_, D) / ours / 1e6
        name = f"B={B} H={H}/{KVH} S={S_} D={D} {str(dt)[6:]} causal"
        S.row("prefill", name, ours, base, f"{tflops:.0f} TFLOP/s", max(err_sdpa, err_ref),
              (0.9, "0.9x SDPA flash") if (H == KVH and D == 128 and dt == torch.float16) else None,
              check_tol=2e-2 if dt == torch.float16 else 6e-2,
              err_vs_sdpa=err_sdpa, err_vs_reference_b0_h01=err_ref,
              sdpa_tflops=at.sdpa_flops(B, H, S_, S_, D) / base / 1e6,
              best_config=str(getattr(at._attn_fwd_tuned, "best_config", None)))


def paged_copy(torch, k_contig, block_size, perm):
    """(B, KVH, ctx, D) contiguous -> (num_blocks, block_size, KVH, D) cache, blocks placed by perm."""
    B, KVH, ctx, D = k_contig.shape
    nb = ctx // block_size
    blocks = k_contig.permute(0, 2, 1, 3).reshape(B * nb, block_size, KVH, D)
    cache = torch.empty_like(blocks)
    cache[perm] = blocks
    return cache


def section_decode(S, ctx):
    torch = S.torch
    import torch.nn.functional as F
    from pyinfer.kernels import reference as ref
    from pyinfer.kernels.triton_gpu import paged_attention as pa
    cases = [(2, 4, 2, 64, 64, 16), (2, 2, 2, 64, 64, 16)] if S.args.smoke else [
        (32, 32, 32, 4096, 128, 16), (32, 32, 8, 4096, 128, 16), (32, 32, 32, 4096, 128, 64),
        (32, 32, 32, 4096, 128, 256), (1, 32, 8, 4096, 64, 16)]
    for B, H, KVH, C, D, bs in cases:
        if not S.time_left():
            break
        dt = torch.float16
        q = torch.randn(B, H, D, device=S.dev, dtype=dt)
        k, v = (torch.randn(B, KVH, C, D, device=S.dev, dtype=dt) for _ in range(2))
        nb = C // bs
        perm = torch.randperm(B * nb, device=S.dev)
        tables = perm.to(torch.int32).view(B, nb)             # block i of sequence b sits at perm[b * nb + i]
        kc, vc = paged_copy(torch, k, bs, perm), paged_copy(torch, v, bs, perm)
        lens = torch.full((B,), C, dtype=torch.int32, device=S.dev)
        out = torch.empty(B, H, D, device=S.dev, dtype=dt)
        scale = D ** -0.5
        def fn(cfg=None, out=out, q=q, kc=kc, vc=vc, tables=tables, lens=lens, scale=scale):   # bound now:
            return pa.paged_decode_attention(out, q, kc, vc, tables, lens, scale, ctx=ctx, config=cfg)  # swept later
        kk, vv = (k, v) if KVH == H else (k.repeat_interleave(H // KVH, 1), v.repeat_interleave(H // KVH, 1))
        sdpa = lambda: F.scaled_dot_product_attention(q[:, :, None], kk, vv, scale=scale)  # noqa: E731
        fn()
        err_sdpa = rel_err(out.float().cpu().numpy(), sdpa()[:, :, 0].float().cpu().numpy())
        b = B - 1
        qb = q[b:b + 1].float().cpu().numpy()
        kb, vb = (t[b].transpose(0, 1).float().cpu().numpy() for t in (k, v))
        err_ref = rel_err(out[b:b + 1].float().cpu().numpy(), ref.attention_prefill(np.empty_like(qb), qb, kb, vb, scale))
        ours, base = S.bench_us(fn), S.bench_us(sdpa)
        kv_bytes = 2 * k.nbytes
        S.row("decode", f"B={B} H={H}/{KVH} ctx={C} D={D} block={bs}", ours, base,
              f"{kv_bytes / ours / 1e6:.2f} TB/s KV", max(err_sdpa, err_ref),
              (0.85, "0.85x SDPA KV rate") if (KVH == H and bs == 16 and B == 32) else None,
              sdpa_tbs=kv_bytes / base / 1e6, err_vs_sdpa=err_sdpa, err_vs_reference=err_ref,
              config=pa.default_config(B, KVH, nb * bs, D, sm_count=ctx.sm_count, interpret=ctx.interpret))
        if bs == 16 and KVH == H:
            S.sweep_later("decode", lambda fn=fn, B=B, H=H, KVH=KVH, C=C, D=D, kv_bytes=kv_bytes, base=base, ours=ours:
                          sweep_decode(S, ctx, pa, fn, B, H, KVH, C, D, kv_bytes, base, ours))


def sweep_decode(S, ctx, pa, fn, B, H, KVH, C, D, kv_bytes, base_us, heuristic_us):
    best = (heuristic_us, "heuristic")
    for block_t, warps in ((32, 4), (64, 8), (128, 4), (128, 8)):
        cfg = pa.default_config(B, KVH, C, D, sm_count=ctx.sm_count)
        cfg.update(BLOCK_T=block_t, num_warps=warps, split_len=-(-cfg["split_len"] // block_t) * block_t)
        us = S.bench_us(lambda: fn(cfg))
        S.rows.append({"section": "decode-sweep", "case": f"B={B} H={H}/{KVH} ctx={C}", "config": cfg,
                       "ours_us": us, "tbs": kv_bytes / us / 1e6})
        print(f"{'sweep':10s} decode {json.dumps(cfg):60s} {us:10.1f} us {kv_bytes / us / 1e6:.2f} TB/s", flush=True)
        best = min(best, (us, json.dumps(cfg)))
    S.row("decode", f"B={B} H={H}/{KVH} ctx={C} D={D} block=16 (best swept)", best[0], base_us,
          f"{kv_bytes / best[0] / 1e6:.2f} TB/s KV", None, (0.85, "0.85x SDPA KV rate"), config=best[1])


def bench_weights(cfg, seed):
    """Random float32 weights for timing only: one array per distinct shape, shared by every layer
    (each layer still gets its own copy on the device), uniform with std 1/sqrt(fan_in): seconds
    instead of the minute pyinfer.weights.random_weights takes for 1B normals."""
    from pyinfer.weights import LayerWeights, ModelWeights, layer_shapes
    rng = np.random.default_rng(seed)
    arrays = {}

    def arr(shape):
        if shape not in arrays:
            a = rng.random(shape, dtype=np.float32) - np.float32(0.5)
            a *= np.float32(np.sqrt(12.0 / shape[-1])) if len(shape) == 2 else np.float32(0)
            arrays[shape] = a + (np.float32(1) if len(shape) == 1 else np.float32(0))
        return arrays[shape]
    layers = [LayerWeights(**{n: arr(shape) for n, shape in layer_shapes(cfg).items()}) for _ in range(cfg.n_layers)]
    emb = arr((cfg.vocab_size, cfg.dim))
    return ModelWeights(cfg, emb, layers, arr((cfg.dim,)), emb if cfg.tied_embeddings else arr((cfg.vocab_size, cfg.dim)))


def random_int4_weights(weights, fmt_name, seed):
    """The same model with every linear weight and the head as random int4 QTensors (valid codes,
    scales ~ 1/sqrt(K) / 4.6 so activations stay O(1)); far faster than quantizing 1B floats."""
    from dataclasses import replace
    from pyinfer import quant
    from pyinfer.weights import ModelWeights
    fmt = quant.get_format(fmt_name)
    rng = np.random.default_rng(seed)
    codes = {}                                          # one code array per shape, as bench_weights

    def q(w):
        N, K = w.shape
        G = fmt.group_size
        k_pad = -(-K // G) * G
        if (N, K) not in codes:
            codes[(N, K)] = rng.integers(0, 256, (N, k_pad // 2), dtype=np.uint8)
        s = np.full((N, k_pad // G), 1.0 / (np.sqrt(K) * 4.6), np.float32)
        return quant.QTensor(fmt, (N, K), codes[(N, K)], s)
    layers = [replace(lw, **{n: q(getattr(lw, n)) for n in quant.LINEAR_WEIGHTS}) for lw in weights.layers]
    return ModelWeights(weights.config, weights.tok_embeddings, layers, weights.norm, q(weights.output))


def device_bytes(w) -> int:
    if hasattr(w, "fmt"):
        return w.qweight.nbytes + w.scales.nbytes + (0 if w.zeros is None else w.zeros.nbytes)
    return w.nbytes


def section_e2e(S):
    torch = S.torch
    from dataclasses import fields
    from pyinfer.config import ModelConfig, get_preset
    from pyinfer.kernels import triton_gpu
    from pyinfer.model import Model
    from pyinfer.ops import Ops
    from pyinfer.weights import LayerWeights
    cfg = (ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=96, vocab_size=300,
                       max_seq_len=256, name="tiny") if S.args.smoke else get_preset("llama-1b"))
    prompt_len, warm, steps = (8, 1, 3) if S.args.smoke else (32, 4, 16 if S.args.quick else 48)
    weights = bench_weights(cfg, seed=0)
    for kind in ("fp16", "int4-g128", "int4-g32"):
        if not S.time_left():
            break
        w = weights if kind == "fp16" else random_int4_weights(weights, kind, seed=1)
        ops = Ops("triton")                                   # the float16 instance of the backend
        for name, fn in triton_gpu.load("float16").items():
            setattr(ops, name, fn)
        ops.arrays = triton_gpu.arrays("float16")
        model = Model(w, ops)
        cache = model.new_cache(num_blocks=-(-(prompt_len + warm + steps + 1) // 16), block_size=16)
        rng = np.random.default_rng(0)
        logits = model.forward(cache.prepare([0], [rng.integers(0, cfg.vocab_size, prompt_len)]), cache)
        tok = int(np.argmax(logits[0]))
        for _ in range(warm):                                  # compile and autotune out of the timing
            tok = int(np.argmax(model.forward(cache.prepare([0], [np.array([tok])]), cache)[0]))
        t = time.perf_counter()
        for _ in range(steps):
            tok = int(np.argmax(model.forward(cache.prepare([0], [np.array([tok])]), cache)[0]))
        dt = time.perf_counter() - t
        mw = model.weights
        wbytes = device_bytes(mw.output) + mw.norm.nbytes + sum(
            device_bytes(getattr(lw, f.name)) for lw in mw.layers for f in fields(LayerWeights))
        ctx_mid = prompt_len + warm + steps // 2
        kv_bytes = 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * 2 * ctx_mid
        per_token = wbytes + kv_bytes
        tps = steps / dt
        gpu_us = gpu_time_per_step(S, model, cache, tok) if S.cuda else None
        frac = per_token * tps / 1e9 / S.copy_gbs if getattr(S, "copy_gbs", None) else None
        S.row("e2e", f"{cfg.name} {kind} batch 1 decode", 1e6 / tps, None,
              f"{per_token * tps / 1e9:.0f} GB/s ({'-' if frac is None else f'{100 * frac:.0f}%'} copy)",
              None, None, tokens_per_s=tps, bytes_per_token=per_token, fraction_of_copy_bw=frac,
              bar_text="bytes/token x tokens/s >= 70% of copy bandwidth",
              bar_met_e2e=None if frac is None else frac >= 0.7, gpu_busy_us_per_token=gpu_us,
              gpu_only_fraction=None if not gpu_us or not frac else per_token / gpu_us / 1e3 / S.copy_gbs)
        del model, cache, ops
        if S.cuda:
            torch.cuda.empty_cache()


def gpu_time_per_step(S, model, cache, tok, n=4):
    """Kernel time on the GPU per decode step (torch.profiler), to separate launch/Python overhead."""
    torch = S.torch
    from torch.profiler import ProfilerActivity, profile
    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(n):
                tok = int(np.argmax(model.forward(cache.prepare([0], [np.array([tok])]), cache)[0]))
            torch.cuda.synchronize()
        total = sum(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0))
                    for e in prof.key_averages())
        return total / n
    except Exception as e:  # noqa: BLE001 - profiling is a diagnostic, never the result
        print(f"e2e        profiler unavailable: {e}", flush=True)
        return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=RESULTS, help="directory for gpu_suite_<card>.json / .md")
    p.add_argument("--quick", action="store_true", help="no tile sweeps, a shorter end-to-end run")
    p.add_argument("--smoke", action="store_true", help="tiny shapes (with TRITON_INTERPRET=1: on the CPU)")
    p.add_argument("--budget-s", type=float, default=270.0, help="start no section, case or sweep after this")
    p.add_argument("--sections", default="copy,matmul,prefill,decode,e2e")
    args = p.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("gpu_suite: torch is not installed here; nothing measured.")
        return 0
    interp = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on", "y")
    cuda = torch.cuda.is_available() and not interp
    if not cuda and not (args.smoke and interp):
        print("gpu_suite: no CUDA GPU here (torch.cuda.is_available() is False); nothing measured.\n"
              "  On a GPU machine:  PYTHONPATH=. python benchmarks/gpu_suite.py --out DIR\n"
              "  To exercise the script on the CPU:  TRITON_INTERPRET=1 PYTHONPATH=. python "
              "benchmarks/gpu_suite.py --smoke --out DIR")
        return 0
    import triton
    from pyinfer.kernels.triton_gpu._common import make_context
    S = Suite(args, torch, cuda)
    ctx = make_context(S.dev, "float16")
    card = torch.cuda.get_device_name() if cuda else "none (Triton interpreter on the CPU; times are not GPU figures)"
    sections = {"copy": lambda: section_copy(S), "matmul": lambda: section_matmul(S, ctx),
                "prefill": lambda: section_prefill(S, ctx), "decode": lambda: section_decode(S, ctx),
                "e2e": lambda: section_e2e(S)}
    for name in args.sections.split(","):
        if S.time_left() or name == "copy":
            S.guard(name, sections[name])
        else:
            S.rows.append({"section": name, "skipped": f"budget of {args.budget_s:.0f} s spent"})
            print(f"{name:10s} skipped: budget of {args.budget_s:.0f} s spent", flush=True)
    for name, fn in S.sweeps:
        if S.time_left():
            S.guard(f"{name}-sweep", fn)
    info = {"card": card, "sm_count": ctx.sm_count, "torch": torch.__version__, "triton": triton.__version__,
            "cuda": torch.version.cuda, "smoke": args.smoke, "quick": args.quick,
            "wall_s": round(S.elapsed(), 1), "copy_gbs": getattr(S, "copy_gbs", None)}
    if cuda:
        props = torch.cuda.get_device_properties(0)
        info.update(memory_gib=round(props.total_memory / 2**30, 1), capability=f"{props.major}.{props.minor}")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "gpu_suite_" + (re.sub(r"[^A-Za-z0-9]+", "_", card).strip("_") if cuda else "interpreter_smoke")
    path = args.out / f"{stem}.json"
    path.write_text(json.dumps({"machine": machine(), "device": info, "rows": S.rows}, indent=2, default=str) + "\n")
    md = ["| section | case | ours us | baseline us | ratio | figure | max rel err | bar |", "|---" * 8 + "|"]
    for r in S.rows:
        if "case" in r and "ours_us" in r and r.get("section", "").find("sweep") < 0:
            cell = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
            md.append(f"| {r['section']} | {r['case']} | {cell(r['ours_us'], '.1f')} | {cell(r['baseline_us'], '.1f')} "
                      f"| {cell(r['speedup_vs_baseline'], '.2f')} | {r['figure']} | {cell(r['max_rel_err'], '.1e')} "
                      f"| {r['bar'] or ''}{'' if r['bar_met'] is None else (' met' if r['bar_met'] else ' missed')} |")
    (args.out / f"{stem}.md").write_text(f"# gpu_suite on {card}\n\n" + "\n".join(md) + "\n")
    print(f"\n{card}: wrote {path} and {stem}.md in {S.elapsed():.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
