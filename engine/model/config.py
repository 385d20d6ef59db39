"""Model shapes: the decoder's config dataclass and the named presets (no torch needed)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the Llama-compatible decoder; `vocab_size = 0` means "take it from the tokenizer"."""

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
    # Parameters set aside for the vision tower + projector that a later stage adds.
    vision_params: int = field(default=0)

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def with_vocab(self, vocab_size: int) -> "ModelConfig":
        """The same shape with the tokenizer's vocabulary size filled in."""
        return replace(self, vocab_size=vocab_size)

    def check(self) -> list[str]:
        """Problems with this shape, as `key: message` strings (empty when valid)."""
        problems = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("rope_theta", "norm_eps", "init_std") and not value > 0:
                problems.append(f"{f.name}: expected a positive number, got {value!r}")
            elif f.name in ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "max_seq_len") and value <= 0:
                problems.append(f"{f.name}: expected a positive integer, got {value!r}")
        if self.n_heads > 0 and self.dim % self.n_heads:
            problems.append(f"dim: expected a multiple of n_heads ({self.n_heads}), got {self.dim}")
        elif self.n_heads > 0 and self.head_dim % 2:
            problems.append(f"dim: expected an even head size for RoPE, got {self.head_dim}")
        if self.n_kv_heads > 0 and self.n_heads % self.n_kv_heads:
            problems.append(f"n_kv_heads: expected a divisor of n_heads ({self.n_heads}), got {self.n_kv_heads}")
        if self.vocab_size < 0 or self.vision_params < 0:
            problems.append("vocab_size: expected 0 (from the tokenizer) or a positive integer")
        return problems


PRESETS: dict[str, ModelConfig] = {
    # Trains on a laptop CPU in minutes.
    "tiny": ModelConfig(dim=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=384, max_seq_len=512),
    # The seed plan's stage 0/1 text-only sanity model: 4 layers, 1024 wide.
    "stage0": ModelConfig(dim=1024, n_layers=4, n_heads=16, n_kv_heads=4, ffn_dim=2816, max_seq_len=2048),
    # The full FusterCluck-450 decoder; the vision tower and projector are budgeted:
    # ViT-B/16 at 224 px (85,798,656) + 2-layer MLP projector 768->1024->1024 (1,837,056),
    # see engine.model.info.vision_params. At 50k vocab: 368.3M decoder + 87.6M = 455.9M.
    "fc450": ModelConfig(
        dim=1024, n_layers=24, n_heads=16, n_kv_heads=4, ffn_dim=2752, max_seq_len=2048,
        vision_params=87_635_712,
    ),
}
