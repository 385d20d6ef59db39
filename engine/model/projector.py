"""The modality projector: LLaVA's 2-layer GELU MLP from the tower's width to the decoder's.

Names are LlavaMultiModalProjector's (`linear_1`, `linear_2`), so `multi_modal_projector.` + our
name is the name in LlavaForConditionalGeneration.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.model.config import ModelConfig


class Projector(nn.Module):
    """linear_2(gelu(linear_1(x))): [.., vision_width x pixel_shuffle^2] -> [.., dim]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.linear_1 = nn.Linear(cfg.vision_width * cfg.pixel_shuffle ** 2, cfg.dim)
        self.linear_2 = nn.Linear(cfg.dim, cfg.dim)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for layer in (self.linear_1, self.linear_2):
            nn.init.normal_(layer.weight, mean=0.0, std=self.cfg.init_std)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(x)))
