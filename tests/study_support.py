"""A made-up device for the study tests (they must not measure this machine)."""
from pyinfer.analysis.hardware import Device

FAKE = Device(name="fake-cpu", full_name="test CPU", kind="cpu", peak_flops={"fp32": 50e9, "int8": 100e9},
              memory_bw=10e9, memory_bytes=16e9, sram_bytes=8e6, interconnect_bw=None, power_w=None,
              price_per_hour=None, price_basis="unknown", source="test", date="2026-12-05",
              extra={"cache_read_bw": 40e9}, bw_curve=((1e5, 40e9), (8e6, 30e9), (1e8, 10e9)))
