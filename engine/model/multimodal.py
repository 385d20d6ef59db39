"""The glue of the vision half: the decoder with a vision tower and a projector, the LLaVA layout.

The text holds `image_tokens` copies of the `<image>` piece per image (expand_image_tokens makes
them from one placeholder); their embeddings are replaced, in order, by the projected patch
embeddings of the images, and no loss is taken on predicting them. The decoder's own tensors keep
their names, so a text-only checkpoint initialises this model and the tower starts fresh.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.errors import ModelError
from engine.model.config import ModelConfig
from engine.model.decoder import IGNORE, KVCache, Transformer, cross_entropy
from engine.model.projector import Projector
from engine.model.vision import VisionTower

# Our state-dict prefixes of the two vision parts; everything else is the decoder's.
VISION_PREFIX, PROJECTOR_PREFIX = "vision.", "projector."


def pixel_shuffle(x: torch.Tensor, factor: int) -> torch.Tensor:
    """[N, g*g, w] patches on a g x g grid to [N, (g/f)^2, w*f*f]: each f x f block becomes one embedding."""
    if factor == 1:
        return x
    n, p, w = x.shape
    g = int(round(p ** 0.5))
    x = x.view(n, g // factor, factor, g // factor, factor, w).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(n, (g // factor) ** 2, factor * factor * w)


def expand_image_tokens(ids: list[int], image_id: int, count: int) -> list[int]:
    """Token ids with each single `<image>` id repeated `count` times (the positions its embeddings take)."""
    out: list[int] = []
    for t in ids:
        out.extend([t] * count if t == image_id else [t])
    return out


class VisionLanguageModel(Transformer):
    """Decoder + `vision` (VisionTower) + `projector`; `forward(tokens, images)` splices images in.

    `image_token_id` is the tokenizer's id of `<image>`: the model needs it to find the positions.
    """

    def __init__(self, cfg: ModelConfig, image_token_id: int) -> None:
        super().__init__(cfg)
        if not 0 <= image_token_id < cfg.vocab_size:
            raise ModelError(f"image_token_id: expected an id of the vocabulary (0..{cfg.vocab_size - 1}), "
                             f"got {image_token_id}")
        self.image_token_id = image_token_id
        self.vision = VisionTower(cfg)
        self.projector = Projector(cfg)
        # LLaVA reads the last layer before the tower's post_layernorm: it takes no part here, but is
        # kept so the tower is a whole SiglipVisionModel.
        self.vision.post_layernorm.requires_grad_(False)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        super().reset_parameters()
        if hasattr(self, "projector"):  # Transformer.__init__ calls this before the parts exist
            self.vision.reset_parameters()
            self.projector.reset_parameters()

    def image_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N, image_tokens, dim]: what N images [N, 3, H, W] put in the text."""
        return self.projector(pixel_shuffle(self.vision.features(pixels), self.cfg.pixel_shuffle))

    def forward(self, tokens: torch.Tensor, images: torch.Tensor | None = None, cache: KVCache | None = None,
                start_pos: int = 0, last_only: bool = False, image_embeds: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Logits [B, T, vocab]; `images` [N, 3, H, W] pixel values fill the `<image>` positions of tokens
        [B, T] in reading order (N x image_tokens of them), or `image_embeds` [N, image_tokens, dim], their
        image_embeddings computed beforehand (the trainer's ImageWindow). Without either the text alone."""
        if images is not None and image_embeds is not None:
            raise ModelError("images and image_embeds: expected one of them, got both")
        h = self.embed(tokens)
        feats = image_embeds if image_embeds is not None else \
            self.image_embeddings(images) if images is not None and images.shape[0] else None
        if feats is not None and feats.shape[0]:
            mask = tokens == self.image_token_id
            # Counting waits on the device: training rows come from the image sampler, which places
            # image_tokens positions per image, so only prompts (generation, eval) are counted.
            if not self.training:
                have, need = int(mask.sum()), feats.shape[0] * feats.shape[1]
                if have != need:
                    raise ModelError(f"tokens: {have} <image> positions for {feats.shape[0]} image(s) of "
                                     f"{feats.shape[1]} embeddings each (expected {need})")
            h = splice_images(h, mask, feats)
        return self.decode(h, cache, start_pos, last_only)

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor, reduction: str = "mean",
             images: torch.Tensor | None = None) -> torch.Tensor:
        """As Transformer.loss, with images; targets that are `<image>` positions add no loss."""
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction: expected 'mean' or 'none', got {reduction!r}")
        targets = mask_image_targets(targets, self.image_token_id)
        per_token = cross_entropy(self(inputs, images).flatten(0, 1), targets.flatten())
        if reduction == "none":
            return per_token.view(targets.shape)
        return per_token.sum() / (targets != IGNORE).sum().clamp(min=1)

    def parts(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by part (decoder, vision, projector), for per-part learning rates."""
        out: dict[str, list[nn.Parameter]] = {"decoder": [], "vision": [], "projector": []}
        for name, p in self.named_parameters():
            if p.requires_grad:
                part = "vision" if name.startswith(VISION_PREFIX) else \
                    "projector" if name.startswith(PROJECTOR_PREFIX) else "decoder"
                out[part].append(p)
        return out


def splice_images(h: torch.Tensor, mask: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """h [B, T, dim] with its `mask` positions replaced, in reading order, by the rows of feats [N, P, dim].

    A gather by running count, not masked_scatter: masked_scatter's backward selects by the mask, whose
    size the host must read, so every image step waited on the device there. This needs no count, and
    its backward is a scatter-add that adds each row's gradient once (and zeros), so it is exact."""
    rows = feats.reshape(-1, feats.shape[-1]).to(h.dtype)
    if not rows.shape[0]:
        return h
    flat = mask.reshape(-1)
    index = (flat.cumsum(0) - 1).clamp_(0, rows.shape[0] - 1)
    picked = rows.gather(0, index[:, None].expand(-1, rows.shape[1])).view(h.shape)
    return torch.where(mask[..., None], picked, h)


def mask_image_targets(targets: torch.Tensor, image_token_id: int) -> torch.Tensor:
    """Targets with `<image>` positions set to IGNORE: an image is given, never predicted."""
    return targets.masked_fill(targets == image_token_id, IGNORE)
