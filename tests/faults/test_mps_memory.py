"""On MPS the memory a step event reports is what the Metal driver has allocated for the process
(what the OS sees, and what runs out), not the total of live tensors, which leaves out the
allocator's cache. No Mac here: torch.mps's two counters are faked."""

from __future__ import annotations

import torch

from engine.train.device import DeviceInfo

GIB = 2**30


def test_mps_memory_is_the_drivers_allocation(monkeypatch):
    monkeypatch.setattr(torch.mps, "driver_allocated_memory", lambda: 11 * GIB)
    monkeypatch.setattr(torch.mps, "current_allocated_memory", lambda: 4 * GIB)
    dev = DeviceInfo(device=torch.device("mps"), name="mps", precision="bf16", peak_flops=None)
    assert dev.memory_bytes() == 11 * GIB


def test_cpu_memory_is_still_the_resident_set():
    dev = DeviceInfo(device=torch.device("cpu"), name="cpu", precision="fp32", peak_flops=None)
    big = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    assert dev.memory_bytes() > big.numel() * 4
