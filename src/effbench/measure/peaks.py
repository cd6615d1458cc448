"""Dense peak FLOP/s per device, for MFU. Only datasheet values; unknown devices get no MFU."""

from __future__ import annotations

# Dense (no structured sparsity) peak tensor-core throughput, FLOP/s, from NVIDIA datasheets.
# GH200's GPU is an H100-class Hopper die; its datasheet bf16 dense figure equals H100 SXM's.
_PEAKS: dict[str, dict[str, float]] = {
    "GH200": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},
    "H200": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},
    "H100 NVL": {"bf16": 835e12, "fp16": 835e12, "fp32": 60e12},
    "H100 PCIe": {"bf16": 756e12, "fp16": 756e12, "fp32": 51e12},
    "H100": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},  # SXM
    "A100": {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12},
}


def peak_flops(device_name: str | None, dtype: str) -> tuple[float | None, str]:
    """(peak FLOP/s, source) for a device name as NVML reports it, or (None, reason)."""
    if not device_name:
        return None, "device name unknown"
    for key, peaks in _PEAKS.items():  # ordered: specific names before their prefixes
        if key.lower() in device_name.lower():
            if dtype not in peaks:
                return None, f"no datasheet peak for {dtype} on {key}"
            return peaks[dtype], f"datasheet_{key.replace(' ', '_')}_{dtype}_dense"
    return None, f"peak FLOP/s of {device_name!r} is not in the datasheet table"
