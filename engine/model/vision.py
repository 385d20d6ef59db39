"""The vision tower: a ViT in transformers' SigLIP vision layout (SiglipVisionModel), without its pooling head.

Patch embedding conv, learned position embeddings, no class token, pre-norm encoder layers with
LayerNorm, attention and MLP with biases, GELU (tanh), a final `post_layernorm`. Module and
parameter names are SiglipVisionTransformer's, so `vision_model.` + our name is the name in
SiglipVisionModel and export is a rename (engine.model.hf_names).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ModelError
from engine.model.config import ModelConfig


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 images [N, H, W, 3] (as image shards store them) to float pixel values [N, 3, H, W] in [-1, 1]:
    SigLIP's preprocessing (rescale by 1/255, then mean 0.5 and std 0.5 per channel)."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] != 3:
        raise ModelError(f"images: expected uint8 [N, H, W, 3], got {images.dtype} {list(images.shape)}")
    return images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


class Embeddings(nn.Module):
    """Non-overlapping patches through one conv, plus a learned position embedding per patch."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.image_size, self.patch_size = cfg.image_size, cfg.patch_size
        self.num_patches = (cfg.image_size // cfg.patch_size) ** 2
        self.patch_embedding = nn.Conv2d(3, cfg.vision_width, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.position_embedding = nn.Embedding(self.num_patches, cfg.vision_width)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.dim() != 4 or tuple(pixels.shape[1:]) != (3, self.image_size, self.image_size):
            raise ModelError(f"images: expected [N, 3, {self.image_size}, {self.image_size}] pixel values, "
                             f"got {list(pixels.shape)}")
        w = self.patch_embedding.weight
        return patchify(pixels.to(w.dtype), self.patch_size) @ w.flatten(1).t() \
            + self.patch_embedding.bias + self.position_embedding.weight


def patchify(pixels: torch.Tensor, p: int) -> torch.Tensor:
    """[N, 3, H, W] to [N, patches, 3 * p * p], each patch flattened as the conv's weight is (channel,
    row, column): the patch conv as one matmul on the conv's own weights (the same numbers), which
    autocast and torch.compile treat like every other projection."""
    n, c, h, w = pixels.shape
    x = pixels.view(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(n, (h // p) * (w // p), c * p * p)


class Attention(nn.Module):
    """Bidirectional multi-head self-attention over the patches, with biases."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        w = cfg.vision_width
        self.n_heads, self.head_dim = cfg.vision_heads, w // cfg.vision_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(w, w) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, P, _ = x.shape
        q, k, v = (p(x).view(B, P, self.n_heads, self.head_dim).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(B, P, -1))


class MLP(nn.Module):
    """fc2(gelu_tanh(fc1(x)))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.vision_width, cfg.vision_mlp_dim)
        self.fc2 = nn.Linear(cfg.vision_mlp_dim, cfg.vision_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class EncoderLayer(nn.Module):
    """One pre-norm layer: x + attn(layer_norm1(x)), then + mlp(layer_norm2(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.vision_width, eps=cfg.vision_norm_eps)
        self.self_attn = Attention(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.vision_width, eps=cfg.vision_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    """The layers, run in one call: the unit the trainer compiles (one graph for the whole stack)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.vision_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class VisionTower(nn.Module):
    """The ViT: `features` are the last layer's patch embeddings (what LLaVA's projector reads,
    vision_feature_layer -1), `forward` adds `post_layernorm` (SiglipVisionModel's last_hidden_state)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if not cfg.has_vision:
            raise ModelError("model.vision_layers: expected a positive integer for a model with a vision tower, got 0")
        self.cfg = cfg
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.vision_width, eps=cfg.vision_norm_eps)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Normal(0, init_std) weights and positions, zero biases, LayerNorms at one."""
        std = self.cfg.init_std
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N, patches, vision_width] for pixel values [N, 3, image_size, image_size] (see to_pixels)."""
        return self.encoder(self.embeddings(pixels))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.post_layernorm(self.features(pixels))
