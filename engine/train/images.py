"""The trainer's vision half: the model with its tower, per-part learning rates, image-text batches,
and a tower started from a local SigLIP checkpoint (the held-out caption loss and image probes are
engine.eval.probes.vision's).

A stage trains with images when its run has image-text domains (stage.toml's [images]); the
sampler is engine.data.imagesampler (at most one image per micro-batch, counter-based, so exact
resume after SIGKILL holds with images). Every micro-batch, with or without an image, comes out as a
`Batch` the trainer's step treats alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.data.sampler import ChatIds, MixSchedule, Sampler
from engine.errors import DataError
from engine.eval.probes.vision import masked_targets, open_image_pairs, pixels
from engine.jobs.spec import RunSpec

__all__ = ["Batch", "ImageBatches", "TextBatches", "build_model", "masked_targets", "open_image_pairs",
           "param_groups", "pixels"]

PARTS = ("decoder", "vision", "projector")


@dataclass
class Batch:
    """One micro-batch: token rows, their domains, and for an image batch the image and the masks."""

    tokens: np.ndarray  # int64 [B, seq_len + 1]
    domain_ids: np.ndarray  # int64 [B]
    image: np.ndarray | None = None  # uint8 [size, size, 3]
    loss_mask: np.ndarray | None = None  # bool [B, seq_len]: targets that count (None: all)
    domain_mask: np.ndarray | None = None  # bool [B, seq_len]: targets of each row's own domain (None: all)


class TextBatches:
    """The text sampler as `Batch`es (what a stage without images trains on)."""

    def __init__(self, sampler: Sampler, chat: "ChatIds | None" = None) -> None:
        self.sampler = sampler
        self.domains = sampler.domains
        self.chat = chat  # chat SFT: rows packed from whole documents, loss on the assistant's turns

    def batch(self, step: int, first: int, count: int) -> Batch:
        if self.chat is not None:
            tokens, mask, dom = self.sampler.packed_batch(step, first, count, self.chat)
            return Batch(tokens, dom, loss_mask=mask[:, 1:], domain_mask=mask[:, 1:])
        tokens, dom = self.sampler.batch(step, first, count)
        return Batch(tokens, dom)

    def domain_counts(self, step: int, first: int, count: int) -> np.ndarray | None:
        """Every rank's domains of a step from the hashes alone (None: only the local counts are known)."""
        return np.bincount(self.sampler.draw(step, first, count)[0], minlength=len(self.domains))

    def check(self, weights) -> None:
        self.sampler.check(weights)

    def epochs(self, tokens_drawn: dict[str, int]) -> dict[str, float]:
        return self.sampler.epochs(tokens_drawn)


class ImageBatches:
    """engine.data.imagesampler's micro-batches as `Batch`es; an image row's own-domain loss is its caption."""

    def __init__(self, spec: RunSpec, text_shards: dict, schedule: MixSchedule, image_token_id: int, eos_id: int):
        from engine.data.imagesampler import ImageTextSampler

        self.pairs = open_image_pairs(spec, heldout=False)
        st = spec.stage
        self.sampler = ImageTextSampler(self.pairs, text_shards or None, st.seq_len, st.seed, schedule,
                                        image_token_id, eos_id, spec.model.image_tokens)
        self.domains = list(self.sampler.domains)

    def batch(self, step: int, first: int, count: int) -> Batch:
        mb = self.sampler.micro_batch(step, first, count)
        if mb.image is None:
            return Batch(mb.tokens, mb.domain_ids, loss_mask=mb.loss_mask)
        own = np.ones_like(mb.loss_mask)
        own[mb.image_row] = mb.caption_mask()[mb.image_row]
        return Batch(mb.tokens, mb.domain_ids, mb.image, mb.loss_mask, own)

    def domain_counts(self, step: int, first: int, count: int) -> np.ndarray | None:
        return None

    def check(self, weights) -> None:
        self.sampler.check(weights)

    def epochs(self, tokens_drawn: dict[str, int]) -> dict[str, float]:
        return self.sampler.epochs(tokens_drawn)


def image_token_id(spec: RunSpec) -> int:
    from engine.data.tokenizer import Tokenizer
    from engine.eval.run_model import image_token_id as lookup

    return lookup(Tokenizer.load(spec.tokenizer), spec.tokenizer)


def build_model(spec: RunSpec, device: torch.device) -> torch.nn.Module:
    """The decoder with its tower and projector; parts with a learning rate of 0 frozen."""
    from engine.model.multimodal import VisionLanguageModel

    with torch.device(device):
        model = VisionLanguageModel(spec.model, image_token_id(spec))
    for part, params in part_params(model).items():
        if spec.stage.part_lr(part) == 0:
            for p in params:
                p.requires_grad_(False)
    return model


def part_params(model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
    """Every parameter by part: decoder, vision (the tower), projector."""
    out: dict[str, list[torch.nn.Parameter]] = {p: [] for p in PARTS}
    for name, p in model.named_parameters():
        out["vision" if name.startswith("vision.") else "projector" if name.startswith("projector.")
            else "decoder"].append(p)
    return out


def param_groups(model: torch.nn.Module, st) -> list[dict]:
    """AdamW groups: per part, decayed matrices and undecayed vectors, each with `lr_scale` (the part's
    peak lr over the stage's, so the one schedule drives them all); frozen parts left out."""
    groups = []
    for part, params in part_params(model).items():
        trained = [p for p in params if p.requires_grad]
        if not trained:
            continue
        scale = st.part_lr(part) / st.lr
        for decay in (True, False):
            chosen = [p for p in trained if (p.dim() >= 2) == decay]
            if chosen:
                groups.append({"params": chosen, "weight_decay": st.weight_decay if decay else 0.0,
                               "lr_scale": scale, "part": part})
    if not groups:
        raise DataError(f"stage {st.name}: every part has a learning rate of 0: nothing to train")
    return groups


def init_weights(where: Path, model: torch.nn.Module, device) -> str:
    """Load an earlier stage's checkpoint into the model; a text-only one leaves the tower and projector
    as initialised. Returns what was loaded."""
    from safetensors import safe_open

    from engine.train import checkpoint as ckpt

    with safe_open(str(where / ckpt.MODEL_FILE), "pt") as f:
        names = set(f.keys())
    shapes = ckpt.model_tensors_shapes(model)
    has_tower = any(n.startswith(("vision.", "projector.")) for n in names)
    if not has_tower:
        shapes = {n: s for n, s in shapes.items() if not n.startswith(("vision.", "projector."))}
    tensors = ckpt.read_weights(where, shapes, device)
    model.load_state_dict(tensors, strict=False)
    return "decoder, tower and projector" if has_tower else "decoder (a fresh tower and projector)"


def load_siglip(folder: str, model: torch.nn.Module) -> int:
    """Start the tower from a local SigLIP checkpoint folder (its *.safetensors; the vision tower's
    tensors found under any of hf_names.SIGLIP_PREFIXES); returns the tensors loaded. One-line
    ModelError for a folder without them or of another shape."""
    from safetensors import safe_open

    from engine.errors import ModelError
    from engine.model.hf_names import SIGLIP_PREFIXES

    root = Path(folder).expanduser()
    files = sorted(root.glob("*.safetensors")) if root.is_dir() else []
    if not files:
        raise ModelError(f"vision_init {folder}: expected a folder with SigLIP *.safetensors files")
    want = {k: tuple(v.shape) for k, v in model.vision.state_dict().items()}
    found: dict[str, torch.Tensor] = {}
    for path in files:
        with safe_open(str(path), "pt") as f:
            for name in f.keys():
                for prefix in SIGLIP_PREFIXES:
                    if name.startswith(prefix) and name[len(prefix):] in want:
                        found.setdefault(name[len(prefix):], f.get_tensor(name))
                        break
    missing = [k for k in want if k not in found]
    if missing:
        raise ModelError(f"vision_init {folder}: {missing[0]}: missing (expected a SigLIP vision tower of "
                         f"{model.cfg.vision_layers} layers, width {model.cfg.vision_width})")
    for name, t in found.items():
        if tuple(t.shape) != want[name]:
            raise ModelError(f"vision_init {folder}: {name}: shape {list(t.shape)} does not match the model's "
                             f"{list(want[name])}")
    model.vision.load_state_dict(found)
    return len(found)
