"""GGUF export for llama.cpp (and transformers' GGUF reader), written with the `gguf` package.

llama.cpp computes RoPE on interleaved pairs (i, i+1) while our weights (like Hugging Face's)
rotate halves (i, i + head_dim/2). llama.cpp's converter therefore reorders the rows of q_proj
and k_proj within each head: half-split order becomes interleaved order. We apply the same
reordering; transformers' GGUF reader undoes it on load. Norms stay float32; with q8, every
2-D weight whose rows split into 32-value blocks is Q8_0 (others f16), as llama.cpp does.

Tokenizer metadata is SentencePiece's ("llama" model): pieces, scores, types, BOS/EOS/UNK ids,
no BOS added, no space prefix. Whitespace-only user-defined pieces are stored with real spaces:
llama.cpp matches user-defined tokens against the raw text, where runs of spaces are spaces.
The end-of-turn marker <|end|> is written as a control token and as the EOT id: llama.cpp
makes it one anyway (it stops generating there), so the file says so instead of being patched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engine.export.common import ExportError
from engine.export.hf_tokenizer import SPACE, check_convertible
from engine.export.spm_model import CONTROL, USER_DEFINED, SpmModel, read_spm_model
from engine.model.hf_names import state_dict_to_hf
from engine.eval.run_model import RunCheckpoint
from engine.data.chat_template import JINJA
from engine.data.tokenizer import BOS_ID, EOS_ID, UNK_ID

GGUF_FILE = "model.gguf"
END_OF_TURN = "<|end|>"
Q8_BLOCK = 32


def _gguf():
    try:
        import gguf
    except ImportError:
        raise ExportError("--format gguf needs the `gguf` package (pip install gguf)") from None
    return gguf


def interleave_rope_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder q/k projection rows per head from rotate-half order to llama.cpp's interleaved order.

    In each head of size d, output row 2j is input row j and output row 2j+1 is input row j + d/2.
    """
    rows, cols = weight.shape
    half = rows // n_heads // 2
    return weight.reshape(n_heads, 2, half, cols).swapaxes(1, 2).reshape(rows, cols)


def gguf_vocab(spm: SpmModel) -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types for tokenizer.ggml.*; types use SentencePiece's numbering (as GGUF does)."""
    tokens, types = [], []
    for p in spm.pieces:
        text, kind = p.text, p.type
        if kind == USER_DEFINED and text and set(text) == {SPACE}:
            text = " " * len(text)
        if kind == USER_DEFINED and text == END_OF_TURN:
            kind = CONTROL
        tokens.append(text)
        types.append(kind)
    return tokens, [p.score for p in spm.pieces], types


def _tensor_type(gguf, arr: np.ndarray, dtype: str):
    q = gguf.GGMLQuantizationType
    if arr.ndim == 1 or dtype == "f32":
        return q.F32
    if dtype == "f16":
        return q.F16
    if dtype == "bf16":
        return q.BF16
    return q.Q8_0 if arr.shape[-1] % Q8_BLOCK == 0 else q.F16


def export_gguf(ckpt: RunCheckpoint, decoder: dict[str, Any], dtype: str, out: Path, permute_qk: bool = True) -> None:
    """Write out/model.gguf. `permute_qk=False` exists only so tests can prove the checks catch its absence."""
    gguf = _gguf()
    cfg = ckpt.spec.model
    spm = read_spm_model(ckpt.spec.tokenizer)
    check_convertible(spm, str(ckpt.spec.tokenizer))
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype]
    path = out / GGUF_FILE
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    try:
        writer.add_name(f"{ckpt.spec.run_id} step {ckpt.step}")
        writer.add_context_length(cfg.max_seq_len)
        writer.add_embedding_length(cfg.dim)
        writer.add_block_count(cfg.n_layers)
        writer.add_feed_forward_length(cfg.ffn_dim)
        writer.add_head_count(cfg.n_heads)
        writer.add_head_count_kv(cfg.n_kv_heads)
        writer.add_rope_dimension_count(cfg.head_dim)
        writer.add_rope_freq_base(float(cfg.rope_theta))
        writer.add_layer_norm_rms_eps(float(cfg.norm_eps))
        writer.add_vocab_size(cfg.vocab_size)
        writer.add_file_type(int(file_type))
        if dtype == "q8":
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

        tokens, scores, types = gguf_vocab(spm)
        if len(tokens) != cfg.vocab_size:
            raise ExportError(
                f"{ckpt.spec.tokenizer}: {len(tokens)} pieces, but the model's vocab_size is {cfg.vocab_size}")
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_chat_template(JINJA)  # tokenizer.chat_template: llama.cpp's --jinja renders our turns
        writer.add_token_types(types)
        writer.add_bos_token_id(BOS_ID)
        writer.add_eos_token_id(EOS_ID)
        writer.add_unk_token_id(UNK_ID)
        if END_OF_TURN in tokens:
            writer.add_eot_token_id(tokens.index(END_OF_TURN))
        writer.add_add_bos_token(False)
        writer.add_add_eos_token(False)
        writer.add_add_space_prefix(False)

        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.n_layers)
        for hf_name, tensor in state_dict_to_hf(decoder, tied=cfg.tie_embeddings).items():
            arr = tensor.float().numpy()
            if permute_qk and hf_name.endswith("self_attn.q_proj.weight"):
                arr = interleave_rope_rows(arr, cfg.n_heads)
            elif permute_qk and hf_name.endswith("self_attn.k_proj.weight"):
                arr = interleave_rope_rows(arr, cfg.n_kv_heads)
            name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if name is None:
                raise ExportError(f"{hf_name}: no GGUF name for this tensor")
            qtype = _tensor_type(gguf, arr, dtype)
            data = np.ascontiguousarray(arr, dtype=np.float32)
            if qtype == gguf.GGMLQuantizationType.F32:
                writer.add_tensor(name, data)
            elif qtype == gguf.GGMLQuantizationType.F16:
                writer.add_tensor(name, data.astype(np.float16))
            else:
                writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
