"""What real kernels reach on each accelerator, and what its links cost: the figures the expected
prediction (pyinfer.analysis.expected) uses beside the roofline bound, each with its source.

They come from KERNEL-level measurements (published microbenchmarks, or a stated physical count where
no measurement was found: marked "est." with its reasoning), never from the end-to-end decode figures
that docs/analysis.md compares against (data/published_decode.json): those validate them.

Kernel classes (pyinfer.analysis.expected.kernel_class names them per op call):

    gemv        fp16/bf16 weights streamed once per step (decode matmuls): stream fraction of bandwidth
    dequant     W8A16 / W4A16 (and -a8) GEMV: the same stream, plus the dequantizing instructions per
                weight (``dequant_instr``: 8-bit and 4-bit, plus 2 per group for its scale/zero loads),
                issued at the CUDA-core lane rate (fp32 peak / 2: one instruction per lane per cycle);
                the instructions share issue slots with the loads, so the two times add
    gemm        compute-bound matmuls (prefill, large batches): fraction of the tensor peak
    attn_prefill   FlashAttention-style prefill: fraction of the tensor peak
    attn_decode    paged decode attention: fraction of bandwidth (KV is gathered block by block)
    elementwise    norms, RoPE, SiLU-mul, residual adds, KV writes, embedding rows: stream fraction

and per kernel a fixed time (launch gap, ramp-up and drain) with CUDA graphs (``kernel_s_graphs``) and
without (``kernel_s_eager``: each launch from the host).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

_STREAM_A100 = ("gpt-fast README (github.com/pytorch-labs/gpt-fast, 'Benchmarks'; read 2026-12-05): on its "
                "A100-SXM4-80GB (power-limited to 330 W) 'empirically, seems like peak bandwidth is about "
                "1700 GB/s' = 0.834 of the 2,039 GB/s datasheet figure")
_STREAM_H100 = ("mikamirai.com/blog/gpu-memory-bandwidth (2026-03-28; Nsight Compute on H100 SXM5): coalesced "
                "matrix load 2.8 TB/s = 84% of 3.35 TB/s; attention K/V access 1.9 TB/s = 57%")
_LAUNCH = ("NVIDIA, 'Getting Started with CUDA Graphs' (developer.nvidia.com/blog/cuda-graphs/, 2019): a short "
           "kernel back to back costs ~3.4 us inside a graph against ~3.8 us launched from a stream; pegainfer "
           "blog part 3 (susun-blog.com/blog/pegainfer-3-cuda-graph): each host launch takes 4-6 us. est.: 3 us "
           "per kernel with graphs (launch gap + ramp-up + drain of a memory-bound kernel), 6 us without; "
           "ahrefs/ocannl issue #488 (CUDA 13.3, 2026-07): 6.4 us per individual launch, 0.58 us per graph node")
_DEQUANT = ("est. (instruction count, no published per-weight microbenchmark found): int8 -> fp16 is one "
            "conversion per weight, the scale and the dot product ride packed half2 FMAs; int4 needs a shift/"
            "mask (lop3) and a subtract/convert per weight pair plus the scale FMA: ~2 per weight; each group "
            "loads a scale and a zero: +2 per group. Marlin's README (github.com/IST-DASLab/marlin) notes prior "
            "4-bit kernels lose speedup at locked base clocks, i.e. they are partly instruction-bound")
_FA2 = ("FlashAttention-2 paper (Dao 2023, arXiv 2307.08691): forward pass 'reaching 50-73% of the theoretical "
        "maximum FLOPs/s on A100'; mid-range 0.6 used")
_FA3 = ("FlashAttention-3 paper (Shah et al. 2024, arXiv 2407.08608): FP16 forward 'up to 740 TFLOPs/s (75% "
        "utilization)' on H100; 0.6 used for a typical head dim and length (as A100: mid-range)")
_GEMM = ("est.: cuBLAS large bf16 GEMMs sustain ~75-80% of the dense tensor peak (FlashAttention-3 compares its "
         "740 TFLOPs/s with cuBLAS GEMM at similar rates); 0.75 used")


@dataclass(frozen=True)
class KernelFigures:
    """Achieved fractions and fixed times of one accelerator's kernels (see the module docstring)."""
    device: str
    stream: float                   # gemv / elementwise: fraction of memory bandwidth
    attn_decode: float              # paged decode attention: fraction of memory bandwidth
    gemm: float                     # fraction of the tensor peak
    attn_prefill: float             # fraction of the tensor peak
    dequant_instr: Mapping[int, float]   # weight bits -> lane instructions per weight (+ 2 per group)
    kernel_s_graphs: float          # fixed time per kernel with CUDA graphs
    kernel_s_eager: float           # fixed time per kernel launched one by one
    sources: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("stream", "attn_decode", "gemm", "attn_prefill"):
            v = getattr(self, name)
            if not 0 < v <= 1:
                raise ValueError(f"kernel figures of {self.device}: {name}={v} must be in (0, 1]")
        if not (self.kernel_s_graphs >= 0 and self.kernel_s_eager >= 0):
            raise ValueError(f"kernel figures of {self.device}: per-kernel times must be >= 0")
        object.__setattr__(self, "dequant_instr", MappingProxyType(dict(self.dequant_instr)))
        object.__setattr__(self, "sources", MappingProxyType(dict(self.sources)))


@dataclass(frozen=True)
class LinkFigures:
    """A device's link to its peers: the collective's fixed latency (None: not published)."""
    kind: str                       # NVLink 3, NVLink 4, ICI, C2C, PCIe, ...
    latency_s: float | None         # one small all-reduce / send, end to end
    source: str


_A100 = KernelFigures(
    device="a100", stream=1700 / 2039, attn_decode=1700 / 2039 * 0.57 / 0.84, gemm=0.75, attn_prefill=0.6,
    dequant_instr={8: 1.0, 4: 2.0}, kernel_s_graphs=3e-6, kernel_s_eager=6e-6,
    sources={"stream": _STREAM_A100,
             "attn_decode": "est.: the H100 measurement's ratio of K/V access to coalesced loads (57% / 84%) "
                            "applied to the A100's stream figure; " + _STREAM_H100,
             "gemm": _GEMM, "attn_prefill": _FA2, "dequant_instr": _DEQUANT, "kernel_s": _LAUNCH})
_H100 = KernelFigures(
    device="h100", stream=0.84, attn_decode=0.57, gemm=0.75, attn_prefill=0.6,
    dequant_instr={8: 1.0, 4: 2.0}, kernel_s_graphs=3e-6, kernel_s_eager=6e-6,
    sources={"stream": _STREAM_H100, "attn_decode": _STREAM_H100, "gemm": _GEMM, "attn_prefill": _FA3,
             "dequant_instr": _DEQUANT, "kernel_s": _LAUNCH})

# device name -> its kernels' figures; devices absent here are predicted at their roofline bound only
KERNELS: Mapping[str, KernelFigures] = MappingProxyType({
    "a100": _A100,
    "h100": _H100,
    # same GH100 die and kernels; HBM3e at 4.8 TB/s assumed reached in the same fraction (est.)
    "h200": KernelFigures(**{**_H100.__dict__, "device": "h200",
                             "sources": {**_H100.sources, "note": "est.: H100's fractions (same die and kernels)"}}),
})

LINKS: Mapping[str, LinkFigures] = MappingProxyType({
    "a100": LinkFigures("NVLink 3 (NVSwitch)", 9.85e-6,
                        "NVIDIA/nccl-tests issue #331 (A100, NVLink 3): all_reduce_perf of 8 B takes 9.85 us"),
    "h100": LinkFigures("NVLink 4 (NVSwitch)", 6e-6,
                        "NVIDIA/nccl issue #1259 (HGX 8x H100, NCCL 2.20, CUDA graphs): small all-reduce "
                        "latency 'approximately 6us' on 2 GPUs"),
    "h200": LinkFigures("NVLink 4 (NVSwitch)", 6e-6, "as h100 (same NVLink 4 / NVSwitch fabric)"),
    "b200": LinkFigures("NVLink 5", None, "not published in a source read here"),
    "mi250x-gcd": LinkFigures("Infinity Fabric", None, "not published in a source read here"),
    "mi300x": LinkFigures("Infinity Fabric", None, "not published in a source read here"),
    "tpu-v5e": LinkFigures("ICI", None, "not published in a source read here"),
    "tpu-v6e": LinkFigures("ICI", None, "not published in a source read here"),
    "inferentia2": LinkFigures("NeuronLink-v2", None, "not published in a source read here"),
    "groq-lpu": LinkFigures("C2C (software-scheduled Dragonfly)", 3e-6,
                            "Abts et al., 'A Software-defined Tensor Streaming Multiprocessor for Large-scale "
                            "Machine Learning', ISCA 2022: 'more than 2 TeraBytes of global memory accessible in "
                            "less than 3 microseconds of end-to-end system latency' (an upper bound per transfer)"),
    "m4-max": LinkFigures("Thunderbolt 5", None, "not published"),
})


_GENERIC_NOTE = ("est.: a GPU without its own kernel measurements gets the A100's measured fractions (stream "
                 "0.834 of its datasheet bandwidth, decode attention 0.57, GEMM 0.75, prefill attention 0.6) and "
                 "its vendor's per-kernel time")
_AMD_LAUNCH = ("ROCm/rocm-systems issue #10834 (2026-08, gfx1100): HIP graph replay costs 3.865 us per node of a "
               "941-kernel chain against 0.876 us for Vulkan; ahrefs/ocannl issue #488 (2026-07, CUDA 13.3): "
               "0.58 us per node of a CUDA graph, 6.4 us per individual launch. est.: an AMD kernel costs the "
               "NVIDIA 3 us + (3.865 - 0.58) us of graph dispatch = 6.3 us with graphs, 10 us without")


def generic_gpu_figures(name: str, full_name: str) -> KernelFigures:
    """Kernel figures for a GPU with no measurements of its own (labelled 'expected-generic')."""
    amd = any(w in full_name for w in ("AMD", "Instinct", "Radeon"))
    return KernelFigures(
        device=name, stream=_A100.stream, attn_decode=_A100.attn_decode, gemm=_A100.gemm,
        attn_prefill=_A100.attn_prefill, dequant_instr=dict(_A100.dequant_instr),
        kernel_s_graphs=6.3e-6 if amd else _A100.kernel_s_graphs, kernel_s_eager=10e-6 if amd else _A100.kernel_s_eager,
        sources={"stream": _GENERIC_NOTE + "; " + _STREAM_A100, "attn_decode": _GENERIC_NOTE, "gemm": _GENERIC_NOTE,
                 "attn_prefill": _GENERIC_NOTE, "dequant_instr": _DEQUANT,
                 "kernel_s": _AMD_LAUNCH if amd else _LAUNCH})


def kernel_figures(device_name: str) -> KernelFigures | None:
    return KERNELS.get(device_name)


def figures_for(device) -> tuple[KernelFigures | None, str]:
    """(figures, model label) for a Device: its own ('expected'), a GPU's generic ones
    ('expected-generic'), or none ('roofline')."""
    own = KERNELS.get(device.name)
    if own is not None:
        return own, "expected"
    if device.kind == "gpu":
        return generic_gpu_figures(device.name, device.full_name), "expected-generic"
    return None, "roofline"


def link_figures(device_name: str) -> LinkFigures | None:
    return LINKS.get(device_name)
