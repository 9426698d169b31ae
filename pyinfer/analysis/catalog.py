"""The hardware table: one entry per device, each figure with its source and date (llm.c's habit:
never inline a peak). Peaks are dense (no 2:4 sparsity), per chip. Memory is what the vendor states
in GB (10^9 bytes). Interconnect is per direction. Prices are per device-hour, either a cloud
on-demand list price or a purchase price amortised over 3 years of continuous use; say which.

Add your own devices from a TOML or JSON file (pyinfer.analysis.hardware.load_device_file) rather
than editing this table; ``this-cpu`` is measured on first use (pyinfer.analysis.microbench).
"""
from __future__ import annotations

from .hardware import Device

T = 1e12
G = 1e9
HOURS_3Y = 3 * 365 * 24      # amortisation period of a purchase, in hours


def _amortised(price_usd: float) -> float:
    return price_usd / HOURS_3Y


CATALOG: dict[str, Device] = {d.name: d for d in (
    Device(
        name="h100", full_name="NVIDIA H100 SXM5 80GB", kind="gpu",
        peak_flops={"fp32": 67 * T, "tf32": 494.7 * T, "bf16": 989.4 * T, "fp16": 989.4 * T,
                    "fp8": 1978.9 * T, "int8": 1978.9 * T},
        memory_bw=3.35e12, memory_bytes=80 * G, sram_bytes=(50 + 132 * 0.256) * 1e6,
        interconnect_bw=450 * G, power_w=700, price_per_hour=2.99, price_basis="cloud on-demand",
        source="NVIDIA H100 Tensor Core GPU datasheet (SXM column; dense = half the sparse figures); "
               "SRAM = 50 MB L2 + 132 SMs x 256 KB L1/shared; NVLink 4 900 GB/s bidirectional; "
               "price: Lambda on-demand 8x H100 SXM per GPU-hour",
        date="2023-09 (datasheet), price 2025-01"),
    Device(
        name="h200", full_name="NVIDIA H200 SXM 141GB", kind="gpu",
        peak_flops={"fp32": 67 * T, "tf32": 494.7 * T, "bf16": 989.4 * T, "fp16": 989.4 * T,
                    "fp8": 1978.9 * T, "int8": 1978.9 * T},
        memory_bw=4.8e12, memory_bytes=141 * G, sram_bytes=(50 + 132 * 0.256) * 1e6,
        interconnect_bw=450 * G, power_w=700, price_per_hour=3.79, price_basis="cloud on-demand",
        source="NVIDIA H200 Tensor Core GPU datasheet (SXM; compute as H100 SXM, HBM3e 141 GB 4.8 TB/s, "
               "up to 700 W); price: typical neocloud on-demand list per GPU-hour (approximate)",
        date="2024-11 (datasheet), price 2025-01"),
    Device(
        name="b200", full_name="NVIDIA B200 (HGX B200, per GPU)", kind="gpu",
        peak_flops={"fp32": 75 * T, "tf32": 1100 * T, "bf16": 2250 * T, "fp16": 2250 * T,
                    "fp8": 4500 * T, "int8": 4500 * T, "fp4": 9000 * T},
        memory_bw=8e12, memory_bytes=180 * G, sram_bytes=(126 + 148 * 0.256) * 1e6,
        interconnect_bw=900 * G, power_w=1000, price_per_hour=5.99, price_basis="cloud on-demand",
        source="NVIDIA HGX B200 / DGX B200 datasheets divided by 8 GPUs (dense = half the sparse "
               "figures; 1,440 GB total HBM3e); NVLink 5 1.8 TB/s bidirectional; L2 approximate; "
               "price: neocloud on-demand list per GPU-hour (approximate)",
        date="2024-03 (GTC datasheet), price 2025-06"),
    Device(
        name="mi300x", full_name="AMD Instinct MI300X 192GB", kind="gpu",
        peak_flops={"fp32": 163.4 * T, "bf16": 1307.4 * T, "fp16": 1307.4 * T, "fp8": 2614.9 * T,
                    "int8": 2614.9 * T},
        memory_bw=5.3e12, memory_bytes=192 * G, sram_bytes=(256 + 32) * 1e6,
        interconnect_bw=448 * G, power_w=750, price_per_hour=1.85, price_basis="cloud on-demand",
        source="AMD Instinct MI300X data sheet (dense matrix peaks; 256 MB Infinity Cache + 8 x 4 MB L2; "
               "Infinity Fabric 896 GB/s peak aggregate, 7 links); price: Vultr on-demand per GPU-hour",
        date="2023-12 (data sheet), price 2025-01"),
    Device(
        name="tpu-v5e", full_name="Google Cloud TPU v5e (per chip)", kind="tpu",
        peak_flops={"bf16": 197 * T, "int8": 393 * T},
        memory_bw=819 * G, memory_bytes=16 * G, sram_bytes=None,
        interconnect_bw=200 * G, power_w=None, price_per_hour=1.20, price_basis="cloud on-demand",
        source="cloud.google.com/tpu/docs/v5e (197 TFLOP/s bf16, 393 TOP/s int8, 16 GB HBM2 at 819 GB/s, "
               "ICI 1,600 Gbps); no fp32 matrix unit; power not published; price: Cloud TPU pricing, "
               "us-central1 on-demand per chip-hour",
        date="2025-01"),
    Device(
        name="tpu-v6e", full_name="Google Cloud TPU v6e Trillium (per chip)", kind="tpu",
        peak_flops={"bf16": 918 * T, "int8": 1836 * T},
        memory_bw=1640 * G, memory_bytes=32 * G, sram_bytes=None,
        interconnect_bw=448 * G, power_w=None, price_per_hour=2.70, price_basis="cloud on-demand",
        source="cloud.google.com/tpu/docs/v6e (918 TFLOP/s bf16, 1,836 TOP/s int8, 32 GB HBM at 1,640 GB/s, "
               "ICI 3,584 Gbps); power not published; price: Cloud TPU pricing, us-east1 on-demand per chip-hour",
        date="2025-01"),
    Device(
        name="inferentia2", full_name="AWS Inferentia2 (per chip, 2 NeuronCore-v2)", kind="npu",
        peak_flops={"fp32": 47.5 * T, "tf32": 190 * T, "bf16": 190 * T, "fp16": 190 * T, "fp8": 190 * T,
                    "int8": 380 * T},
        memory_bw=820 * G, memory_bytes=32 * G, sram_bytes=48e6,
        interconnect_bw=192 * G, power_w=None, price_per_hour=12.98 / 12, price_basis="cloud on-demand",
        source="AWS Neuron docs, Inferentia2 architecture (380 INT8 TOPS, 190 FP16/BF16/cFP8/TF32 TFLOPS, "
               "47.5 FP32 TFLOPS, 32 GB HBM 820 GB/s); SRAM 2 x 24 MB state buffer and NeuronLink-v2 "
               "192 GB/s approximate; power not published; price: inf2.48xlarge on-demand us-east-1 / 12 chips",
        date="2023-04 (docs), price 2025-01"),
    Device(
        name="groq-lpu", full_name="Groq LPU (GroqChip 1, per chip)", kind="lpu",
        peak_flops={"fp16": 188 * T, "int8": 750 * T},
        memory_bw=80e12, memory_bytes=0.23 * G, sram_bytes=230e6,
        interconnect_bw=60 * G, power_w=375, price_per_hour=_amortised(20_000),
        price_basis="amortised purchase (GroqCard list price, 3 years)",
        source="Groq LPU product brief / Hot Chips 2022 (188 TFLOP/s fp16, 750 TOP/s int8, 230 MB on-die "
               "SRAM at 80 TB/s, no off-chip DRAM: memory = SRAM); power = GroqCard max board power; "
               "C2C bandwidth approximate; price: GroqCard list price (approximate)",
        date="2024-02"),
    Device(
        name="m4-max", full_name="Apple M4 Max (16-core CPU, 40-core GPU, 128 GB)", kind="soc",
        peak_flops={"fp32": 16.1 * T, "fp16": 16.1 * T, "bf16": 16.1 * T, "int8": 38 * T},
        memory_bw=546 * G, memory_bytes=128 * G, sram_bytes=None,
        interconnect_bw=10 * G, power_w=120, price_per_hour=_amortised(4_699),
        price_basis="amortised purchase (MacBook Pro 14 M4 Max 128 GB list price, 3 years)",
        source="Apple newsroom, M4 Pro / M4 Max announcement (546 GB/s, up to 128 GB, Neural Engine 38 TOPS = "
               "int8 here); GPU fp32/fp16 = 40 cores x 128 ALUs x 2 x ~1.58 GHz (derived); power = package "
               "power under load from third-party reviews (approximate); Thunderbolt 5 80 Gb/s as link",
        date="2024-10"),
    Device(
        name="snapdragon-x-elite", full_name="Qualcomm Snapdragon X Elite X1E-84-100 laptop SoC", kind="soc",
        peak_flops={"fp32": 4.6 * T, "fp16": 9.2 * T, "int8": 45 * T},
        memory_bw=135 * G, memory_bytes=64 * G, sram_bytes=42e6,
        interconnect_bw=None, power_w=45, price_per_hour=_amortised(1_300),
        price_basis="amortised purchase (typical X Elite laptop, 3 years)",
        source="Qualcomm Snapdragon X Elite product brief (LPDDR5x-8448 135 GB/s, up to 64 GB, Adreno GPU "
               "4.6 TFLOPS fp32, Hexagon NPU 45 TOPS int8, 42 MB total cache); fp16 = 2 x fp32 (assumed); "
               "power = a typical laptop sustained setting (23-80 W configurable)",
        date="2023-10"),
)}

ALIASES = {"h100-sxm": "h100", "h200-sxm": "h200", "mi300": "mi300x", "v5e": "tpu-v5e", "v6e": "tpu-v6e",
           "trillium": "tpu-v6e", "inf2": "inferentia2", "groq": "groq-lpu", "lpu": "groq-lpu",
           "m4max": "m4-max", "x-elite": "snapdragon-x-elite", "snapdragon": "snapdragon-x-elite",
           "cpu": "this-cpu"}
