"""Model shapes: the decoder's and the vision tower's config dataclass and the named presets (no torch needed)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the Llama-compatible decoder and, when `vision_layers > 0`, of its vision tower.

    `vocab_size = 0` means "take it from the tokenizer". The tower is a SigLIP-layout ViT (transformers'
    SiglipVisionModel names) whose `image_tokens` patch embeddings, optionally pixel-shuffled, go
    through a 2-layer GELU projector into the decoder's width: the LLaVA layout.
    """

    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2
    ffn_dim: int = 384
    vocab_size: int = 0
    max_seq_len: int = 256
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    init_std: float = 0.02
    # The vision tower (0 layers: a text-only model), flat so a profile's inline table stays flat.
    vision_layers: int = 0
    vision_width: int = 768
    vision_heads: int = 12
    vision_mlp_dim: int = 3072
    image_size: int = 224
    patch_size: int = 16
    vision_norm_eps: float = 1e-6
    # Pixel shuffle: s x s neighbouring patches become one embedding (s^2 times wider), so an image
    # takes s^2 fewer positions. 1 keeps every patch (and the LLaVA export needs 1).
    pixel_shuffle: int = 1

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def has_vision(self) -> bool:
        return self.vision_layers > 0

    @property
    def image_tokens(self) -> int:
        """Positions one image takes in the text: its patches, reduced by the pixel shuffle (0 without a tower)."""
        if not self.has_vision or self.patch_size <= 0 or self.pixel_shuffle <= 0:
            return 0
        return (self.image_size // self.patch_size // self.pixel_shuffle) ** 2

    def with_vocab(self, vocab_size: int) -> "ModelConfig":
        """The same shape with the tokenizer's vocabulary size filled in."""
        return replace(self, vocab_size=vocab_size)

    def check(self) -> list[str]:
        """Problems with this shape, as `key: message` strings (empty when valid)."""
        problems = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("rope_theta", "norm_eps", "init_std", "vision_norm_eps") and not value > 0:
                problems.append(f"{f.name}: expected a positive number, got {value!r}")
            elif f.name in ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "max_seq_len") and value <= 0:
                problems.append(f"{f.name}: expected a positive integer, got {value!r}")
        if self.n_heads > 0 and self.dim % self.n_heads:
            problems.append(f"dim: expected a multiple of n_heads ({self.n_heads}), got {self.dim}")
        elif self.n_heads > 0 and self.head_dim % 2:
            problems.append(f"dim: expected an even head size for RoPE, got {self.head_dim}")
        if self.n_kv_heads > 0 and self.n_heads % self.n_kv_heads:
            problems.append(f"n_kv_heads: expected a divisor of n_heads ({self.n_heads}), got {self.n_kv_heads}")
        if self.vocab_size < 0:
            problems.append("vocab_size: expected 0 (from the tokenizer) or a positive integer")
        if self.vision_layers < 0:
            problems.append(f"vision_layers: expected 0 (no vision tower) or a positive integer, got {self.vision_layers}")
        if self.has_vision:
            problems.extend(self._check_vision())
        return problems

    def _check_vision(self) -> list[str]:
        for name in ("vision_width", "vision_heads", "vision_mlp_dim", "image_size", "patch_size", "pixel_shuffle"):
            if getattr(self, name) <= 0:
                return [f"{name}: expected a positive integer, got {getattr(self, name)!r}"]
        if self.vision_width % self.vision_heads:
            return [f"vision_width: expected a multiple of vision_heads ({self.vision_heads}), got {self.vision_width}"]
        if self.image_size % self.patch_size:
            return [f"image_size: expected a multiple of patch_size ({self.patch_size}), got {self.image_size}"]
        grid = self.image_size // self.patch_size
        if grid % self.pixel_shuffle:
            return [f"pixel_shuffle: expected a divisor of the patch grid's side ({grid}), got {self.pixel_shuffle}"]
        if self.image_tokens >= self.max_seq_len:
            return [f"image_size: an image takes {self.image_tokens} positions, expected fewer than "
                    f"max_seq_len ({self.max_seq_len})"]
        return []


PRESETS: dict[str, ModelConfig] = {
    # Trains on a laptop CPU in minutes; its tower sees 64 px images as 64 patches of 8 px.
    "tiny": ModelConfig(
        dim=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=384, max_seq_len=512,
        vision_layers=2, vision_width=64, vision_heads=2, vision_mlp_dim=256, image_size=64, patch_size=8,
    ),
    # The seed plan's stage 0/1 text-only sanity model: 4 layers, 1024 wide.
    "stage0": ModelConfig(dim=1024, n_layers=4, n_heads=16, n_kv_heads=4, ffn_dim=2816, max_seq_len=2048),
    # FusterCluck-450: a SigLIP-layout ViT-B/16 at 224 px (85,797,120; 196 image positions) and a
    # 2-layer projector 768->1024->1024 (1,837,056) before the decoder. At 50k vocab: 368.3M
    # decoder + 87.6M vision = 455.9M.
    "fc450": ModelConfig(
        dim=1024, n_layers=24, n_heads=16, n_kv_heads=4, ffn_dim=2752, max_seq_len=2048,
        vision_layers=12, vision_width=768, vision_heads=12, vision_mlp_dim=3072, image_size=224, patch_size=16,
    ),
}
