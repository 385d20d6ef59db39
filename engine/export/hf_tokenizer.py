"""Hugging Face tokenizer files for our SentencePiece model: tokenizer.json and its configs.

transformers' own conversion of a SentencePiece model does not match SentencePiece on runs of
spaces: our whitespace pieces ("\u2581\u2581", "\u2581" * 4, ...) are user-defined symbols that
SentencePiece matches greedily before BPE, while the converted tokenizer only reaches them
through merges. So we write tokenizer.json ourselves: spaces become "\u2581" in the normaliser,
the whitespace symbols are added tokens matched on the normalised text (leftmost-longest, as
SentencePiece does), and the BPE merges are ranked by the merged piece's id, which is
SentencePiece's merge order. The ids equal ours on every string we test (tests/test_export.py).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from engine.data.chat_template import JINJA
from engine.atomic import atomic_write_text
from engine.errors import TokenizerError
from engine.export.spm_model import CONTROL, NORMAL, UNKNOWN, USER_DEFINED, SpmModel, read_spm_model
from engine.data.tokenizer import BOS_ID, EOS_ID

SPACE = "\u2581"
# Whatever transformers version loads the export, take tokenizer.json as written.
TOKENIZER_CLASS = "PreTrainedTokenizerFast"


def check_convertible(spm: SpmModel, where: str) -> None:
    """Refuse a SentencePiece model whose behaviour tokenizer.json below would not reproduce."""
    if spm.model_type != "bpe":
        raise TokenizerError(f"{where}: model_type {spm.model_type!r}: export supports BPE SentencePiece models only")
    if spm.normalizer != "identity" or spm.add_dummy_prefix or spm.remove_extra_whitespaces:
        raise TokenizerError(
            f"{where}: normaliser {spm.normalizer!r} (add_dummy_prefix={spm.add_dummy_prefix}, "
            f"remove_extra_whitespaces={spm.remove_extra_whitespaces}): export expects identity normalisation "
            "without a dummy prefix, as `fcwork tokenizer train` makes"
        )
    for i, name in ((BOS_ID, "BOS"), (EOS_ID, "EOS")):
        if len(spm.pieces) <= i or spm.pieces[i].type != CONTROL:
            raise TokenizerError(f"{where}: id {i}: expected the {name} control piece (docs/formats.md), got "
                                 f"{spm.pieces[i].text if len(spm.pieces) > i else 'nothing'!r}")


def bpe_merges(spm: SpmModel) -> list[tuple[str, str]]:
    """Every (left, right) split of a mergeable piece into two vocabulary pieces, in SentencePiece's merge order.

    A SentencePiece BPE model lists merged pieces best first, so a merge's rank is the id of the
    piece it makes; splits of one piece are ordered by the ids of their halves.
    """
    ids = {p.text: i for i, p in enumerate(spm.pieces) if p.type in (NORMAL, USER_DEFINED)}
    ranked = []
    for i, piece in enumerate(spm.pieces):
        if piece.type not in (NORMAL, USER_DEFINED) or len(piece.text) < 2:
            continue
        for cut in range(1, len(piece.text)):
            left, right = piece.text[:cut], piece.text[cut:]
            if left in ids and right in ids:
                ranked.append((i, ids[left], ids[right], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def tokenizer_json(spm: SpmModel, add_bos: bool = False) -> dict[str, Any]:
    """The `tokenizers` serialisation of our SentencePiece model (a BPE with byte fallback)."""
    added = [{
        "id": i, "content": p.text, "single_word": False, "lstrip": False, "rstrip": False,
        # Whitespace symbols are spelled with U+2581, so they are matched after the normaliser.
        "normalized": SPACE in p.text, "special": p.type != USER_DEFINED,
    } for i, p in enumerate(spm.pieces) if p.type in (CONTROL, UNKNOWN, USER_DEFINED)]
    unk = next((p.text for p in spm.pieces if p.type == UNKNOWN), None)
    bos = spm.pieces[BOS_ID].text
    single: list[dict] = [{"Sequence": {"id": "A", "type_id": 0}}]
    pair: list[dict] = [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}]
    specials: dict[str, Any] = {}
    if add_bos:
        single = [{"SpecialToken": {"id": bos, "type_id": 0}}, *single]
        pair = [{"SpecialToken": {"id": bos, "type_id": 0}}, pair[0], {"SpecialToken": {"id": bos, "type_id": 1}},
                pair[1]]
        specials = {bos: {"id": bos, "ids": [BOS_ID], "tokens": [bos]}}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": SPACE},
        "pre_tokenizer": {"type": "Metaspace", "replacement": SPACE, "prepend_scheme": "never", "split": False},
        "post_processor": {"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
        ]},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": unk, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": spm.byte_fallback, "ignore_merges": False,
            "vocab": {p.text: i for i, p in enumerate(spm.pieces)},
            "merges": [list(m) for m in bpe_merges(spm)],
        },
    }


def write_hf_tokenizer(tokenizer_path: str | os.PathLike, out_dir: Path, add_bos: bool = False) -> SpmModel:
    """tokenizer.model (a copy), tokenizer.json, tokenizer_config.json and special_tokens_map.json in out_dir.

    BOS is not added by default: our training data has no BOS (documents are separated by EOS),
    so the exported tokenizer gives exactly the ids our Tokenizer.encode gives.
    """
    tokenizer_path = Path(tokenizer_path)
    spm = read_spm_model(tokenizer_path)
    check_convertible(spm, str(tokenizer_path))
    shutil.copyfile(tokenizer_path, out_dir / "tokenizer.model")
    atomic_write_text(out_dir / "tokenizer.json", json.dumps(tokenizer_json(spm, add_bos), ensure_ascii=False) + "\n")
    unk = next((p.text for p in spm.pieces if p.type == UNKNOWN), "<unk>")
    special = {"bos_token": spm.pieces[BOS_ID].text, "eos_token": spm.pieces[EOS_ID].text, "unk_token": unk}
    decoder = {
        str(i): {"content": p.text, "lstrip": False, "normalized": SPACE in p.text, "rstrip": False,
                 "single_word": False, "special": p.type != USER_DEFINED}
        for i, p in enumerate(spm.pieces) if p.type in (CONTROL, UNKNOWN, USER_DEFINED)
    }
    config = {
        "tokenizer_class": TOKENIZER_CLASS,
        "model_max_length": 1_000_000,
        "add_bos_token": add_bos,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "padding_side": "left",
        "chat_template": JINJA,  # engine.data.chat_template's layout, for apply_chat_template
        "added_tokens_decoder": decoder,
        **special,
    }
    atomic_write_text(out_dir / "tokenizer_config.json", json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out_dir / "special_tokens_map.json",
                      json.dumps(special, indent=2, ensure_ascii=False) + "\n")
    return spm
