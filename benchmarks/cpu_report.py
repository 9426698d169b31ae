"""The markdown table of a CPU benchmark report (benchmarks/results/cpu.md)."""
from __future__ import annotations


def _ceiling_line(run: dict) -> str:
    b, a = run["ceilings_before"], run["ceilings_after"]
    line = (f"ceilings: read {b['read_gbs']:.1f} GB/s, triad {b['triad_gbs']:.1f} GB/s before; "
            f"read {a['read_gbs']:.1f}, triad {a['triad_gbs']:.1f} after the kernels; "
            f"numpy float32 matmul 512x4096x4096 {run['numpy_matmul_gflops']:.0f} GFLOP/s")
    if "ceilings_after_e2e" in run:
        line += f"; triad {run['ceilings_after_e2e']['triad_gbs']:.1f} GB/s after end to end"
    return line


def markdown(report: dict) -> str:
    m = report["machine"]
    out = [f"# CPU kernels: {m['cpu']}, {m['logical_cpus']} logical CPUs, C body `{report['c_isa']}`",
           "", f"{m['date']}, python {m['python']}" + (" (quick run)" if report.get("quick") else "")
           + (f"; unset for this run: {report['unset_env']}" if report.get("unset_env") else ""), "",
           "Kernel rows: every implementation of a case runs once per round, over several rounds; times are "
           "medians over the rounds, a memory-bound % the median of each round's ratio to the triad measured "
           "around that round, and a speedup the median of per-round ratios. End-to-end rows: median decode "
           "step, with whatever the caches hold or with the caches flushed before every step; for the flushed "
           "rows, also the % of the bandwidth at which C's stream read reads the same weight arrays in step "
           "order from DRAM (small matrices pay a start-up each that a 768 MB triad does not).", ""]
    for run in report["runs"]:
        blas = run["blas"]
        blas_s = blas.get("corename") or blas.get("source")
        out += [f"## {run['threads']} thread(s)", "", _ceiling_line(run) + f" (numpy BLAS: {blas_s})", "",
                "| kernel | shape | impl | ms | GB/s | GFLOP/s | % of ceiling (median triad GB/s beside it) | vs numpy | vs torch |",
                "|---|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in run["kernels"]:
            vs = r.get("speedup_vs_numpy", r.get("speedup_vs_numpy_f32"))
            vs_np = f"{vs:.2f}x" if vs is not None else ""
            vs_t = f"{r['speedup_vs_torch_sdpa']:.2f}x" if "speedup_vs_torch_sdpa" in r else ""
            out.append(f"| {r['kernel']} | {r['shape']} | {r['impl']} | {r['ms']:.3f} | {r['gbs']:.1f} | "
                       f"{r['gflops']:.1f} | {r['pct_of_ceiling']:.0f}% {r['ceiling']}"
                       f"{' ' + format(r['triad_gbs'], '.1f') if 'triad_gbs' in r else ''} | {vs_np} | {vs_t} |")
        if run.get("end_to_end"):
            out += ["", "| model | format | path | weights from | decode tok/s | ms/token | MB/token | GB/s | "
                        "triad GB/s beside it | % of triad | % of its weights' read | prefill tok/s (128) |",
                    "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for r in run["end_to_end"]:
                triad = r.get("triad_gbs", run["ceilings_before"]["triad_gbs"])
                out.append(f"| {r['model']} | {r['format']} | {r['path']} | {r.get('weights_from', '')} | "
                           f"{r['decode_tok_s']:.1f} | "
                           f"{r['decode_ms_per_token']:.2f} | {r['bytes_per_token'] / 1e6:.1f} | {r['decode_gbs']:.1f} | "
                           f"{triad:.1f} | {100 * r['decode_gbs'] / triad:.0f}% | "
                           + (f"{100 * r['decode_gbs'] / r['weights_read_gbs']:.0f}% of {r['weights_read_gbs']:.1f}"
                              if "weights_read_gbs" in r else "")
                           + f" | {r['prefill_tok_s']:.0f} |")
        if run.get("small_model"):
            out += ["", "| model | backend | path | us/token | in op calls (checks + kernel) | everything else | tok/s |",
                    "|---|---|---|---:|---:|---:|---:|"]
            for r in run["small_model"]:
                out.append(f"| {r['model']} | {r['backend']} | {r['path']} | {r['us_per_token']:.0f} | "
                           f"{r['kernel_us']:.0f} | {r['other_us']:.0f} | {r['tok_s']:.0f} |")
        out.append("")
    return "\n".join(out)
