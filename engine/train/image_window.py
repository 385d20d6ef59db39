"""The images of an optimizer step through the tower together, instead of one image a micro-batch.

At one image a micro-batch (the Mac's terms) the tower's matmuls are 196 rows tall, and an image costs
launches and small kernels far beyond its FLOPs (bench/vision_stage.py). The trainer draws a step's
micro-batches first; an ImageWindow puts up to IMAGES_AT_ONCE of their images through image_embeddings
as one batch, hands each image micro-batch its rows as a leaf of its own, and once the group's last
micro-batch has run its backward, takes the rows' gradients back through the tower in one pass. The
gradients are the per-micro-batch ones, the same chain rule summed in another order. One process only:
under DDP or FSDP the ranks' gradients are reduced inside the last micro-batch's backward, before this
one would run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from engine.eval.probes.vision import pixels
from engine.model.info import IMAGES_AT_ONCE


class ImageWindow:
    """The image embeddings of one step's micro-batches (`images[i]`: micro-batch i's image or None)."""

    def __init__(self, model: torch.nn.Module, images: Sequence[np.ndarray | None], device: torch.device,
                 at_once: int = IMAGES_AT_ONCE) -> None:
        if at_once <= 0:
            raise ValueError(f"at_once: expected a positive number of images, got {at_once}")
        self.model, self.images, self.device = model, images, device
        with_image = [i for i, image in enumerate(images) if image is not None]
        self.groups = [with_image[i:i + at_once] for i in range(0, len(with_image), at_once)]
        self.group_of = {micro: g for g, group in enumerate(self.groups) for micro in group}
        self.feats: torch.Tensor | None = None  # the current group's embeddings, with the tower's graph
        self.leaves: dict[int, torch.Tensor] = {}

    def embeddings(self, micro: int) -> torch.Tensor | None:
        """Micro-batch `micro`'s image embeddings [1, image_tokens, dim] (None without an image); the
        group's first micro-batch computes the whole group's, so call it where the forward runs (autocast)."""
        group = self.group_of.get(micro)
        if group is None:
            return None
        if micro not in self.leaves:
            members = self.groups[group]
            self.feats = self.model.image_embeddings(pixels(np.stack([self.images[m] for m in members]), self.device))
            rows = self.feats.detach().split(1)
            self.leaves = {m: row.requires_grad_(self.feats.requires_grad) for m, row in zip(members, rows)}
        return self.leaves[micro]

    def backward(self, micro: int) -> None:
        """After micro-batch `micro`'s backward: the last of a group takes the group's gradients through
        the tower (and frees its activations)."""
        group = self.group_of.get(micro)
        if group is None or micro != self.groups[group][-1]:
            return
        feats, leaves = self.feats, [self.leaves[m] for m in self.groups[group]]
        self.feats, self.leaves = None, {}
        if feats is not None and feats.requires_grad:
            grads = [leaf.grad if leaf.grad is not None else torch.zeros_like(leaf) for leaf in leaves]
            feats.backward(torch.cat(grads))
