"""Device, precision and hardware facts for the trainer: cuda -> mps -> cpu, bf16 autocast where
supported, memory in use, and the device's peak FLOPs (looked up by GPU name) for MFU."""

from __future__ import annotations

import contextlib
import os
import resource
import sys
from dataclasses import dataclass
from typing import ContextManager

import torch

from engine.errors import RunError

# Dense (no sparsity) peak tensor throughput in FLOP/s, by GPU name fragment; the first match wins,
# so the specific variants come before the family name. "tf32" is fp32 training with TF32 matmuls.
PEAK_FLOPS: list[tuple[str, dict[str, float]]] = [
    ("GB200", {"bf16": 2.5e15, "tf32": 1.25e15, "fp32": 80e12}),
    ("B200", {"bf16": 2.25e15, "tf32": 1.1e15, "fp32": 80e12}),
    ("H200", {"bf16": 989e12, "tf32": 494.5e12, "fp32": 67e12}),
    ("H100 PCIe", {"bf16": 756e12, "tf32": 378e12, "fp32": 51e12}),
    ("H100 NVL", {"bf16": 835e12, "tf32": 417.5e12, "fp32": 60e12}),
    ("H100", {"bf16": 989e12, "tf32": 494.5e12, "fp32": 67e12}),
    ("H800", {"bf16": 989e12, "tf32": 494.5e12, "fp32": 67e12}),
    ("GH200", {"bf16": 989e12, "tf32": 494.5e12, "fp32": 67e12}),
    ("A100", {"bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12}),
    ("A800", {"bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12}),
    ("L40S", {"bf16": 362e12, "tf32": 183e12, "fp32": 91.6e12}),
    ("L40", {"bf16": 181e12, "tf32": 90.5e12, "fp32": 90.5e12}),
    ("L4", {"bf16": 121e12, "tf32": 60e12, "fp32": 30.3e12}),
    ("A10G", {"bf16": 70e12, "tf32": 35e12, "fp32": 31.2e12}),
    ("A10", {"bf16": 125e12, "tf32": 62.5e12, "fp32": 31.2e12}),
    ("RTX 6000 Ada", {"bf16": 364e12, "tf32": 182e12, "fp32": 91.1e12}),
    ("RTX A6000", {"bf16": 154.8e12, "tf32": 77.4e12, "fp32": 38.7e12}),
    ("RTX 5090", {"bf16": 209.5e12, "tf32": 104.8e12, "fp32": 104.8e12}),
    ("RTX 4090", {"bf16": 165.2e12, "tf32": 82.6e12, "fp32": 82.6e12}),
    ("RTX 3090", {"bf16": 71e12, "tf32": 35.6e12, "fp32": 35.6e12}),
    ("V100", {"fp32": 15.7e12}),
    ("T4", {"fp32": 8.1e12}),
]


def peak_flops(device_name: str, precision: str) -> float | None:
    """Peak FLOP/s of a CUDA device for "bf16", "tf32" or "fp32"; None when the GPU is not in the table."""
    for fragment, peaks in PEAK_FLOPS:
        if fragment.lower() in device_name.lower():
            return peaks.get(precision)
    return None


@dataclass
class DeviceInfo:
    """The device the trainer runs on and how it computes there."""

    device: torch.device
    name: str             # e.g. "cuda:0 (NVIDIA H100 80GB HBM3)", "mps", "cpu"
    precision: str        # "bf16" or "fp32"
    peak_flops: float | None

    @property
    def type(self) -> str:
        return self.device.type

    def autocast(self) -> ContextManager:
        """Autocast to bf16 for the forward pass, or nothing for fp32."""
        if self.precision in ("bf16", "fp8"):
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.device.type == "mps":
            torch.mps.synchronize()

    def memory_bytes(self) -> int:
        """CUDA: peak allocated; MPS: what the Metal driver has allocated for this process (what the
        OS sees and what runs out: the tensors plus the allocator's cache); CPU: the resident set."""
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        if self.device.type == "mps":
            return int(torch.mps.driver_allocated_memory())
        return process_rss()


def process_rss() -> int:
    """Resident memory of this process in bytes (peak RSS where the current one is not readable)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)


def eager() -> ContextManager:
    """Run a compiled model eagerly inside the block: generation's changing shapes would otherwise
    recompile it at every length (torch >= 2.6; a no-op before)."""
    set_stance = getattr(torch.compiler, "set_stance", None)
    return set_stance("force_eager") if set_stance else contextlib.nullcontext()


def _mps_bf16_ok() -> bool:
    try:
        with torch.autocast(device_type="mps", dtype=torch.bfloat16):
            x = torch.ones(2, 2, device="mps")
            (x @ x).sum().item()
        return True
    except (RuntimeError, TypeError, ValueError):
        return False


def pick_device(want: str = "auto", precision: str = "auto", origin: str = "stage") -> DeviceInfo:
    """Resolve the stage's `device` and `precision` settings on this machine (RunError if impossible)."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if want == "auto":
        want = "cuda" if cuda else "mps" if mps else "cpu"
    if want == "cuda" and not cuda:
        raise RunError(f"{origin}.device: expected a device this machine has, got \"cuda\" (no CUDA GPU found)")
    if want == "mps" and not mps:
        raise RunError(f"{origin}.device: expected a device this machine has, got \"mps\" (MPS is not available)")
    if want == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
        gpu = torch.cuda.get_device_name(device)
        name = f"cuda:{device.index} ({gpu})"
        bf16_ok = torch.cuda.is_bf16_supported()
    elif want == "mps":
        device, gpu, name, bf16_ok = torch.device("mps"), "", "mps", _mps_bf16_ok()
    else:
        device, gpu, name, bf16_ok = torch.device("cpu"), "", "cpu", True
    if precision == "auto":
        precision = "bf16" if want != "cpu" and bf16_ok else "fp32"
    elif precision == "fp8":
        from engine.train.fp8 import check_fp8

        check_fp8(torch.cuda.get_device_capability(device) if want == "cuda" else None, origin)
    elif precision == "bf16" and not bf16_ok:
        raise RunError(f"{origin}.precision: expected a precision {name} supports, got \"bf16\" (use \"fp32\")")
    peak = None
    if want == "cuda":
        if precision == "fp32":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        # fp8's MFU is measured against the bf16 peak too, so the two read on one scale.
        peak = peak_flops(gpu, "tf32" if precision == "fp32" else "bf16")
    return DeviceInfo(device=device, name=name, precision=precision, peak_flops=peak)
