"""The datasets of the local lm-eval tasks: jsonl files beside their YAML configs, read without
the network or the Hugging Face datasets cache. lm-eval calls `load` through `custom_dataset`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def load(file: str = "", split: str = "test", **_: Any):
    """A DatasetDict with one split of the jsonl `file` (relative to this folder), one record a line."""
    import datasets

    path = HERE / file
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return datasets.DatasetDict({split: datasets.Dataset.from_list(rows)})
