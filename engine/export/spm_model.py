"""Read the pieces and normaliser settings of a SentencePiece `.model` file without protobuf.

Exports need each piece's type (normal, control, user-defined, byte, ...) and score, which the
SentencePiece Python API does not expose for user-defined symbols. The file is a protobuf
`ModelProto`; we read only the fields we need straight from the wire format.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from engine.errors import TokenizerError

# sentencepiece_model.proto, SentencePiece.Type
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
# sentencepiece_model.proto, TrainerSpec.ModelType
MODEL_TYPES = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}


@dataclass(frozen=True)
class Piece:
    """One vocabulary entry: its text (spaces as U+2581), score and type."""

    text: str
    score: float
    type: int


@dataclass(frozen=True)
class SpmModel:
    """What an export needs from a SentencePiece model."""

    pieces: list[Piece]
    model_type: str
    normalizer: str
    add_dummy_prefix: bool
    remove_extra_whitespaces: bool
    byte_fallback: bool


def _varint(buf: bytes, pos: int, where: str) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise TokenizerError(f"{where}: truncated SentencePiece model (varint runs past the end)")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes, where: str):
    """Yield (field number, wire type, value) of a protobuf message; value is int, bytes or float bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos, where)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, where)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos, where)
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise TokenizerError(f"{where}: not a SentencePiece model (protobuf wire type {wire})")
        if pos > len(buf):
            raise TokenizerError(f"{where}: truncated SentencePiece model")
        yield number, wire, value


def read_spm_model(path: str | os.PathLike) -> SpmModel:
    """Pieces (in id order), model type and normaliser flags of a SentencePiece `.model` file."""
    path = Path(path)
    where = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TokenizerError(f"{path}: no such tokenizer file") from None
    pieces: list[Piece] = []
    model_type, byte_fallback = "unigram", False
    normalizer, dummy, extra_ws = "nmt_nfkc", True, True  # the protobuf defaults
    for number, wire, value in _fields(data, where):
        if number == 1 and wire == 2:  # repeated SentencePiece pieces
            text, score, kind = "", 0.0, NORMAL
            for n, w, v in _fields(value, where):
                if n == 1 and w == 2:
                    text = v.decode("utf-8")
                elif n == 2 and w == 5:
                    score = struct.unpack("<f", v)[0]
                elif n == 3 and w == 0:
                    kind = v
            pieces.append(Piece(text, score, kind))
        elif number == 2 and wire == 2:  # TrainerSpec
            for n, w, v in _fields(value, where):
                if n == 3 and w == 0:
                    model_type = MODEL_TYPES.get(v, str(v))
                elif n == 35 and w == 0:
                    byte_fallback = bool(v)
        elif number == 3 and wire == 2:  # NormalizerSpec
            for n, w, v in _fields(value, where):
                if n == 1 and w == 2:
                    normalizer = v.decode("utf-8")
                elif n == 3 and w == 0:
                    dummy = bool(v)
                elif n == 4 and w == 0:
                    extra_ws = bool(v)
    if not pieces:
        raise TokenizerError(f"{where}: not a SentencePiece model (no pieces)")
    return SpmModel(pieces, model_type, normalizer, dummy, extra_ws, byte_fallback)
