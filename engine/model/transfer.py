"""Host arrays onto the training device without the host waiting for it."""

from __future__ import annotations

import torch


def to_device(array, device) -> torch.Tensor:
    """A host array (numpy or a CPU tensor) on `device`. To CUDA through pinned memory: a copy from
    pageable memory first waits for the device's queue to drain, so every micro-batch the host stalled
    until the GPU caught up; from pinned memory the copy is queued like a kernel (the pinned buffer is
    not reused before it is done). Elsewhere a blocking copy: a non-blocking one from pageable memory to
    MPS may read the source after it is freed (pytorch#139550)."""
    t = torch.as_tensor(array)
    if torch.device(device).type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
