"""The hardware table: one entry per device, each figure with its source and date (llm.c's habit:
never inline a peak). Peaks are DENSE (no 2:4 sparsity), per chip: NVIDIA's and AMD's datasheets headline
the sparse tensor figures, which are twice the dense ones, so those are halved here. Memory is what the
vendor states (GB = 10^9 bytes unless the vendor states GiB). Interconnect is per direction. Prices are per
device-hour, either a cloud on-demand list price or a purchase price amortised over 3 years of continuous
use; each entry says which, where it was read and when. Anything not found in a vendor document or a price
page is called an estimate in the entry's notes, with its reasoning.

"read 2026-11-27" means the cited page was read (as a stored copy) on that day; prices carry the date of
the price list they were read from.

Add your own devices from a TOML or JSON file (pyinfer.analysis.hardware.load_device_file) rather
than editing this table; ``this-cpu`` is measured on first use (pyinfer.analysis.microbench).
"""
from __future__ import annotations

from .hardware import Device

T = 1e12
G = 1e9
GiB = 2 ** 30
HOURS_3Y = 3 * 365 * 24      # amortisation period of a purchase, in hours


def _amortised(price_usd: float) -> float:
    return price_usd / HOURS_3Y


_NV_DENSE = ("dense = half of the datasheet's 'with sparsity' tensor figures (FP16/BF16, TF32, FP8, INT8, FP4)")

CATALOG: dict[str, Device] = {d.name: d for d in (
    Device(
        name="h100", full_name="NVIDIA H100 SXM5 80GB", kind="gpu",
        peak_flops={"fp32": 67 * T, "tf32": 494.7 * T, "bf16": 989.4 * T, "fp16": 989.4 * T,
                    "fp8": 1978.9 * T, "int8": 1978.9 * T},
        memory_bw=3.35e12, memory_bytes=80 * G, sram_bytes=(50 + 132 * 0.256) * 1e6,
        interconnect_bw=450 * G, power_w=700, price_per_hour=3.99, price_basis="cloud on-demand",
        source="peaks, 80 GB HBM3 3.35 TB/s, NVLink 900 GB/s, up to 700 W: NVIDIA H100 Tensor Core GPU "
               "datasheet, SXM column (https://www.nvidia.com/en-us/data-center/h100/); SRAM: NVIDIA H100 "
               "(Hopper) architecture whitepaper, 50 MB L2 + 132 SMs x 256 KB L1/shared; price: Lambda "
               "on-demand 8x H100 SXM, $3.99 per GPU-hour (https://lambda.ai/instances)",
        date="datasheet 2023-09; price list read 2026-09-20",
        notes=f"{_NV_DENSE}: datasheet 1,979 FP16 / 3,958 FP8 / 3,958 INT8 sparse -> 989.4 / 1,978.9 / "
              "1,978.9 dense; FP32 67 is non-tensor. No INT4 (Hopper tensor cores dropped it). NVLink 900 GB/s "
              "is both directions: 450 per direction. The datasheet PDF itself was not readable here; figures "
              "cross-checked against glennklockwood.com/garden/processors/h100 (read 2026-11-27). Price read "
              "from a transcription of Lambda's page (github.com/api-evangelist/lambda-labs, 2026-09-20); "
              "earlier catalog value $2.99 was Lambda's 2025-01 list.",
    ),
    Device(
        name="a100", full_name="NVIDIA A100 SXM4 80GB", kind="gpu",
        peak_flops={"fp32": 19.5 * T, "tf32": 156 * T, "bf16": 312 * T, "fp16": 312 * T, "int8": 624 * T,
                    "int4": 1248 * T},
        memory_bw=2039 * G, memory_bytes=80 * G, sram_bytes=(40 + 108 * 0.192) * 1e6,
        interconnect_bw=300 * G, power_w=400, price_per_hour=1.79, price_basis="cloud on-demand",
        source="NVIDIA A100 Tensor Core GPU datasheet, 'A100 80GB SXM' column (https://www.nvidia.com/en-us/"
               "data-center/a100/): FP32 19.5, TF32 156, BF16/FP16 312, INT8 624, INT4 1,248 TFLOPS/TOPS dense "
               "(twice that with sparsity), 80 GB HBM2e at 2,039 GB/s, NVLink 600 GB/s, 400 W; SRAM: NVIDIA "
               "Ampere architecture whitepaper, 40 MB L2 + 108 SMs x 192 KB L1/shared; price: Lambda on-demand "
               "8x A100 SXM 80GB, $1.79 per GPU-hour (https://lambda.ai/instances)",
        date="datasheet 2021-06; price as listed 2025 (not re-read here: an estimate of today's price)",
        notes=f"{_NV_DENSE}. NVLink 600 GB/s both directions: 300 per direction. The A100 is the last NVIDIA "
              "data-center chip with an INT4 tensor peak. gpt-fast's published figures were measured on A100s "
              "power-limited to 330 W (not 400 W).",
    ),
    Device(
        name="h200", full_name="NVIDIA H200 SXM 141GB", kind="gpu",
        peak_flops={"fp32": 67 * T, "tf32": 494.7 * T, "bf16": 989.4 * T, "fp16": 989.4 * T,
                    "fp8": 1978.9 * T, "int8": 1978.9 * T},
        memory_bw=4.8e12, memory_bytes=141 * G, sram_bytes=(50 + 132 * 0.256) * 1e6,
        interconnect_bw=450 * G, power_w=700, price_per_hour=3.99, price_basis="cloud on-demand",
        source="NVIDIA H200 Tensor Core GPU datasheet, SXM column (https://www.nvidia.com/en-us/data-center/h200/): "
               "compute as H100 SXM, 141 GB HBM3e at 4.8 TB/s, NVLink 900 GB/s, up to 700 W; SRAM as H100 "
               "(same GH100 die); price: Hyperstack on-demand H200 SXM, $3.99 per GPU-hour "
               "(https://www.hyperstack.cloud/gpu-pricing)",
        date="datasheet 2024-11; price list read 2026-08-26",
        notes=f"{_NV_DENSE}. Lambda lists no on-demand H200, hence Hyperstack (read from a transcription of "
              "its page, github.com/api-evangelist/nexgen-cloud, 2026-08-26); earlier catalog value $3.79 "
              "had no source.",
    ),
    Device(
        name="b200", full_name="NVIDIA B200 (HGX B200, per GPU)", kind="gpu",
        peak_flops={"fp32": 75 * T, "tf32": 1100 * T, "bf16": 2250 * T, "fp16": 2250 * T,
                    "fp8": 4500 * T, "int8": 4500 * T, "fp4": 9000 * T},
        memory_bw=7.7e12, memory_bytes=180 * G, sram_bytes=(126 + 148 * 0.256) * 1e6,
        interconnect_bw=900 * G, power_w=1000, price_per_hour=6.69, price_basis="cloud on-demand",
        source="NVIDIA HGX platform page, 'HGX B200' individual-GPU column (https://www.nvidia.com/en-us/"
               "data-center/hgx/): FP4 18 PF, FP8/FP6 9 PF, INT8 9 POPS, FP16/BF16 4.5 PF, TF32 2.2 PF (all "
               "with sparsity), FP32 75 TF, 180 GB HBM3e at 7.7 TB/s, NVLink 5 1.8 TB/s, up to 1,000 W; "
               "price: Lambda on-demand 8x B200 SXM6, $6.69 per GPU-hour (https://lambda.ai/instances)",
        date="HGX page 2025 (read 2026-11-27 via a copy at zdszero.github.io); price list read 2026-09-20",
        notes=f"{_NV_DENSE}. Bandwidth: the HGX page says 7.7 TB/s per GPU (62 TB/s per 8); the DGX B200 "
              "datasheet says 64 TB/s per 8 (8.0 per GPU) - the lower, per-GPU figure is used (was 8.0). "
              "NVLink 1.8 TB/s both directions: 900 per direction. SRAM is an ESTIMATE: NVIDIA publishes no "
              "B200 L2 size; 126 MB L2 and 148 SMs x 256 KB are device-query figures, not datasheet ones. "
              "No INT4 figure published. Price from a transcription of Lambda's page "
              "(github.com/api-evangelist/lambda-labs, 2026-09-20); earlier $5.99 had no source.",
    ),
    Device(
        name="mi300x", full_name="AMD Instinct MI300X 192GB", kind="gpu",
        peak_flops={"fp32": 163.4 * T, "tf32": 653.7 * T, "bf16": 1307.4 * T, "fp16": 1307.4 * T,
                    "fp8": 2614.9 * T, "int8": 2614.9 * T},
        memory_bw=5.3e12, memory_bytes=192 * G, sram_bytes=(256 + 32) * 1e6,
        interconnect_bw=448 * G, power_w=750, price_per_hour=1.85, price_basis="cloud on-demand",
        source="AMD Instinct MI300X data sheet (https://www.amd.com/content/dam/amd/en/documents/"
               "instinct-tech-docs/data-sheets/amd-instinct-mi300x-data-sheet.pdf): dense matrix FP16/BF16 "
               "1,307.4, FP8 2,614.9, INT8 2,614.9, TF32 653.7, FP32 163.4 TFLOPS; 192 GB HBM3 at 5.3 TB/s; "
               "256 MB Infinity Cache; 7 Infinity Fabric links at 128 GB/s (896 GB/s aggregate, both "
               "directions); 750 W; L2 4 MB per XCD x 8 (CDNA 3 whitepaper); price: Vultr on-demand "
               "$1.85 per GPU-hour as listed at https://gpu.blog/gpus/instinct-mi300x-mi300x",
        date="data sheet 2023-12; price page read 2026-11-27 (listing undated)",
        notes="AMD's headline 'with sparsity' figures are twice these. Interconnect = 7 links x 64 GB/s per "
              "direction (per-peer link 64 GB/s each way in the 8-GPU mesh). No INT4 on CDNA 3. tf32 added. "
              "The data sheet PDF itself was not readable here; peaks cross-checked against independent "
              "transcriptions (codesota.com, runpod.io GPU page: 2,610/5,220 = sparse). SRAM excludes the "
              "304 x 64 KB LDS. Price: DigitalOcean and Hot Aisle list $1.99 (2025).",
    ),
    Device(
        name="mi250x-gcd", full_name="AMD Instinct MI250X, one GCD (half the package)", kind="gpu",
        peak_flops={"fp32": 47.9 * T, "fp16": 191.5 * T, "bf16": 191.5 * T, "int8": 191.5 * T},
        memory_bw=1638.4 * G, memory_bytes=64 * GiB, sram_bytes=8e6,
        interconnect_bw=200 * G, power_w=280, price_per_hour=None, price_basis="unknown",
        source="AMD Instinct MI250X data sheet, per package: FP16/BF16 matrix 383 TFLOPS, FP32 matrix 95.7, "
               "INT8 383 TOPS, 128 GB HBM2e at 3.2768 TB/s, 560 W; per GCD (what ROCm shows as one GPU, what "
               "gpt-fast measured) half of each, as tabulated at hpc-notes.pages.dev/reference/mi250x",
        date="data sheet 2021-11 (read 2026-12-05 via hpc-notes.pages.dev)",
        notes="Per GCD: 191.5 TFLOPS fp16 matrix, 47.9 fp32 matrix (23.9 vector), 64 GiB at 1.6384 TB/s. Power 280 W "
              "is half the package's 560 W (est.). L2 8 MB per GCD. GCD-to-GCD Infinity Fabric: 200 GB/s per "
              "direction inside a package (est. from 400 GB/s bidirectional). No price listed.",
    ),
    Device(
        name="tpu-v5e", full_name="Google Cloud TPU v5e (per chip)", kind="tpu",
        peak_flops={"bf16": 197 * T, "int8": 393 * T},
        memory_bw=819 * G, memory_bytes=16 * G, sram_bytes=None,
        interconnect_bw=200 * G, power_w=None, price_per_hour=1.20, price_basis="cloud on-demand",
        source="https://cloud.google.com/tpu/docs/v5e (197 TFLOP/s bf16, 393 TOP/s int8, 16 GB HBM2 at "
               "819 GB/s, bidirectional ICI 400 GB/s per chip over 4 ports); price: Cloud TPU v5e on-demand "
               "$1.20 per chip-hour (https://cloud.google.com/tpu/pricing, us-central1)",
        date="TPU docs read 2026-11-27; price as quoted in a public benchmark repository (undated, 2025-26)",
        notes="No fp32 matrix unit (no fp32 peak listed). ICI 400 GB/s bidirectional = 200 GB/s per "
              "direction (earlier doc revisions said 1,600 Gbps). A later doc revision states HBM bandwidth "
              "as '800 GiBps' (~859 GB/s); 819 GB/s (HBM2e 3.2 Gb/s x 2,048 bits) is kept. Power and on-chip "
              "memory (VMEM/CMEM) are not published by Google. The stored copy of the pricing page did not "
              "show v5e rows; $1.20 is corroborated by a public repository quoting 'exact On-Demand' prices.",
    ),
    Device(
        name="tpu-v6e", full_name="Google Cloud TPU v6e Trillium (per chip)", kind="tpu",
        peak_flops={"bf16": 918 * T, "int8": 1836 * T},
        memory_bw=1638 * G, memory_bytes=32 * G, sram_bytes=None,
        interconnect_bw=400 * G, power_w=None, price_per_hour=2.70, price_basis="cloud on-demand",
        source="https://cloud.google.com/tpu/docs/v6e (918 TFLOP/s bf16, 1,836 TOP/s int8, 32 GB HBM at "
               "1,638 GBps, bidirectional ICI 800 GBps per chip over 4 ports); price: Google's Trillium GA "
               "announcement, 'starting at $2.7000 per chip-hour' on demand, $1.89 / $1.22 with 1- / 3-year "
               "commitments (reported by neowin.net)",
        date="TPU docs read 2026-11-27; price 2024-12-12 (GA announcement)",
        notes="Was 1,640 GB/s and 448 GB/s ICI (3,584 Gbps, an earlier doc revision); the current doc says "
              "1,638 GBps and 800 GBps bidirectional = 400 GB/s per direction, twice v5e as Google's GA "
              "announcement states. No fp32 matrix unit. Power and on-chip memory not published.",
    ),
    Device(
        name="inferentia2", full_name="AWS Inferentia2 (per chip, 2 NeuronCore-v2)", kind="npu",
        peak_flops={"fp32": 47.5 * T, "tf32": 190 * T, "bf16": 190 * T, "fp16": 190 * T, "fp8": 190 * T,
                    "int8": 380 * T},
        memory_bw=820 * G, memory_bytes=32 * GiB, sram_bytes=48e6,
        interconnect_bw=192 * GiB, power_w=None, price_per_hour=12.98127 / 12, price_basis="cloud on-demand",
        source="AWS Neuron docs, Inferentia2 architecture (https://awsdocs-neuron.readthedocs-hosted.com/en/"
               "latest/general/arch/neuron-hardware/inferentia2.html): 380 INT8 TOPS, 190 FP16/BF16/cFP8/TF32 "
               "TFLOPS, 47.5 FP32 TFLOPS, 32 GiB HBM; NKI architecture guide: 820 GB/s; Inf2 architecture "
               "(.../inf2-arch.html): NeuronLink-v2 192 GiB/s per chip; price: inf2.48xlarge on-demand "
               "us-east-1 $12.98127/h / 12 chips (https://aws.amazon.com/ec2/pricing/on-demand/)",
        date="Neuron docs read 2026-11-27; price as quoted in several public repositories (2025-26)",
        notes="Memory was 32 GB: the current docs say 32 GiB (older revisions said 32 GB / 820 GB/s, the "
              "latest 820 GiB/s; 820 GB/s kept). NeuronLink 192 GiB/s per chip, direction not stated. SRAM is "
              "an ESTIMATE: 2 cores x 24 MB state buffer (SBUF), not confirmed in a stored copy of the NKI "
              "guide. Power not published.",
    ),
    Device(
        name="groq-lpu", full_name="Groq LPU (GroqChip 1 / TSP v1, per chip)", kind="lpu",
        peak_flops={"fp16": 188 * T, "int8": 750 * T},
        memory_bw=80e12, memory_bytes=0.23 * G, sram_bytes=230e6,
        interconnect_bw=240 * G, power_w=300, price_per_hour=_amortised(20_000),
        price_basis="amortised purchase (GroqCard quantity-1 distributor price ~$20,000, 3 years)",
        source="Groq LPU figures (750 TOP/s INT8, 188 TFLOP/s FP16, 230 MB SRAM at 80 TB/s; reported by "
               "techpowerup.com 2024-02); Abts et al., 'Think Fast: A Tensor Streaming Processor', ISCA 2020 "
               "(14 nm, 25x29 mm, 900 MHz nominal, 220 MiB SRAM = 230 MB); chip-to-chip: Linley Newsletter "
               "'Groq Gets Connected' 2020-11-10 (16 C2C links x 4 lanes x 30 Gb/s, 480 GB/s total); power: "
               "TechSpot 2020-01-25 on Groq's launch ('300 W'); price: isopack.blogspot.com 2024-02-21 "
               "('$20K in quantity 1 from Mouser')",
        date="2020-01 .. 2024-02 (read 2026-11-27)",
        notes="No off-chip DRAM: memory = the 230 MB SRAM. Interconnect was 60 GB/s (no source): 480 GB/s "
              "total = 240 GB/s per direction over 16 links (15 GB/s per link each way, 14 when cabled); the "
              "same source says the GroqCard exposes only 3 external C2C ports, so per-peer bandwidth in a "
              "deployment may be lower. Power was 375 W (no source found for that board figure); 300 W is "
              "Groq's launch figure, quoted for the early 1.25 GHz spec, so an upper estimate at 900 MHz. "
              "Price is a secondary-source distributor price, not a Groq list price; Groq sells cloud tokens, "
              "not chip-hours.",
    ),
    Device(
        name="m4-max", full_name="Apple M4 Max (16-core CPU, 40-core GPU, 128 GB)", kind="soc",
        peak_flops={"fp32": 16.1 * T, "fp16": 16.1 * T, "bf16": 16.1 * T, "int8": 38 * T},
        memory_bw=546 * G, memory_bytes=128 * G, sram_bytes=None,
        interconnect_bw=10 * G, power_w=120, price_per_hour=_amortised(4_699),
        price_basis="amortised purchase (MacBook Pro M4 Max 16/40-core, 128 GB, US list price, 3 years; estimate)",
        source="Apple newsroom, 'Apple introduces M4 Pro and M4 Max' 2024-10-30 (https://www.apple.com/"
               "newsroom/2024/10/apple-introduces-m4-pro-and-m4-max/): 16-core CPU, 40-core GPU, up to 128 GB "
               "at 546 GB/s, Thunderbolt 5; Neural Engine 38 TOPS: Apple newsroom 'Apple introduces M4 chip' "
               "2024-05-07 (same 16-core Neural Engine)",
        date="2024-10-30 (read 2026-11-27 via macrumors.com / notebookcheck.net reports)",
        notes="GPU fp32 is an ESTIMATE: Apple publishes no TFLOPS; 40 cores x 128 ALUs x 2 FLOP x ~1.58 GHz = "
              "16.1 (a third-party database gives 1.68 GHz, i.e. ~17.2); fp16 runs at the fp32 rate on Apple "
              "GPUs. int8 = the Neural Engine's 38 TOPS (precision not stated by Apple). Power is an ESTIMATE "
              "(Apple publishes no package power): 120 W sustained CPU+GPU package power. Price is an ESTIMATE "
              "from Apple's US configurator as remembered ($4,699), not read from a stored page. Link = "
              "Thunderbolt 5, 80 Gb/s per direction (120 Gb/s one way with Bandwidth Boost). No INT4 figure.",
    ),
    Device(
        name="snapdragon-x-elite", full_name="Qualcomm Snapdragon X Elite X1E-84-100 laptop SoC", kind="soc",
        peak_flops={"fp32": 4.6 * T, "fp16": 9.2 * T, "int8": 45 * T},
        memory_bw=135 * G, memory_bytes=64 * G, sram_bytes=42e6,
        interconnect_bw=None, power_w=45, price_per_hour=_amortised(1_300),
        price_basis="amortised purchase (typical X Elite laptop ~$1,300, 3 years; estimate)",
        source="Qualcomm Snapdragon X Elite product brief (https://www.qualcomm.com/products/mobile/snapdragon/"
               "pcs-and-tablets/snapdragon-x-elite): X1E-84-100 Adreno X1-85 GPU 4.6 TFLOPS (FP32), Hexagon "
               "NPU 45 TOPS (INT8), LPDDR5x-8448 135 GB/s, up to 64 GB, 42 MB total cache; cross-checked with "
               "notebookcheck.net's X1E-84-100 page",
        date="2023-10 / 2024-04 (read 2026-11-27 via notebookcheck.net / windowscentral.com reports)",
        notes="fp16 = 2 x fp32 is an ASSUMPTION (Adreno's usual double-rate FP16; Qualcomm publishes only "
              "FP32). Power is an ESTIMATE: Qualcomm discloses no TDP; 45 W is a typical sustained laptop "
              "setting. Price is an ESTIMATE for a typical X1E-84-100 laptop. No device-to-device link. "
              "No INT4 figure published.",
    ),
)}

ALIASES = {"a100-sxm": "a100", "a100-80gb": "a100", "h100-sxm": "h100", "h200-sxm": "h200", "mi300": "mi300x", "mi250x": "mi250x-gcd", "v5e": "tpu-v5e", "v6e": "tpu-v6e",
           "trillium": "tpu-v6e", "inf2": "inferentia2", "groq": "groq-lpu", "lpu": "groq-lpu",
           "m4max": "m4-max", "x-elite": "snapdragon-x-elite", "snapdragon": "snapdragon-x-elite",
           "cpu": "this-cpu"}
