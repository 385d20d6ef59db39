"""Profile loading: the shipped profiles, every validation error, and lossless round trips."""

from __future__ import annotations

import re
from engine.compat import tomllib

import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import ProfileError
from engine.profile import dumps_profile, load_profile, loads_profile, normalise_mix, save_mix
from tests.conftest import REPO

BASE = """
[profile]
name = "t"
[mix]
code = 1.0
science = 0.5
[[sources]]
name = "src"
domain = "code"
format = "text"
path = "*.py"
[[stages]]
name = "a"
seq_len = 64
max_steps = 10
warmup_steps = 2
"""


def load(text: str):
    return loads_profile(text, "profiles/x.toml")


def error_of(text: str) -> str:
    with pytest.raises(ProfileError) as info:
        load(text)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("profiles/x.toml: ")
    return msg


@pytest.mark.parametrize("name", ["default", "fc450"])
def test_shipped_profiles_load_and_round_trip(name):
    prof = load_profile(REPO / "profiles" / f"{name}.toml")
    assert prof.name == name
    assert loads_profile(dumps_profile(prof)) == prof


def test_fc450_carries_the_seed_plan():
    prof = load_profile(REPO / "profiles" / "fc450.toml")
    assert prof.data.target_tokens == 500_000_000
    assert prof.tokenizer.vocab_size == 50_000
    s0 = prof.stage("stage0")
    assert (s0.seq_len, s0.micro_batch, s0.grad_accum) == (2048, 4, 8)
    full = [s for s in prof.stages if s.model == "fc450"]
    assert full and all(s.activation_checkpointing and 32 <= s.grad_accum <= 48 for s in full)
    # Built-ins only fill in; the real sources read the formats they come in. (The built-in image-text
    # sources are always built: their ground truth is what the image probes check.)
    text_builtins = [s for s in prof.sources if s.builtin and not s.is_image]
    assert all(s.fallback for s in text_builtins) and not any(s.fallback for s in prof.sources if not s.builtin)
    assert next(s for s in prof.sources if s.domain == "chess" and not s.builtin).format == "pgn"


def test_fc450_corpus_is_sized_for_its_stages(tmp_path):
    from engine.data.epochs import epoch_warnings, stage_passes
    from engine.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    ws.init()
    prof = ws.load_profile("fc450")
    for st in prof.stages:
        rows = stage_passes(ws, prof, st.name)
        assert not epoch_warnings(prof, st.name, rows), (st.name, rows)
    stage2 = {r.domain: r.passes for r in stage_passes(ws, prof, "stage2")}
    assert 3 < stage2["science"] < 4  # 1.64B tokens over a 500M-token corpus (was ~33 passes over 50M)


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda t: t.replace("seq_len = 64", 'seq_len = "2k"'),
         'stages[0].seq_len: expected a positive integer, got "2k"'),
        (lambda t: t.replace("seq_len = 64", "seq_len = -5"), "stages[0].seq_len: expected a positive integer, got -5"),
        (lambda t: t.replace("max_steps = 10", "max_steps = 10\nbogus = 1"), "stages[0].bogus: unknown key"),
        (lambda t: t.replace("code = 1.0", "code = -1.0"), "mix.code: expected a non-negative number, got -1.0"),
        (lambda t: t.replace("code = 1.0\nscience = 0.5", "code = 0\nscience = 0"), "mix: expected at least one positive weight, got all zero"),
        (lambda t: t.replace('domain = "code"', 'domain = "chess"'), "sources[0].domain: expected a domain with a weight in [mix]"),
        (lambda t: t.replace('max_steps = 10', 'max_steps = 10\ninit_from = "nope"'), "stages[0].init_from: expected the name of an earlier stage"),
        (lambda t: t.replace('format = "text"', 'format = "csv"'), "sources[0].format: expected one of text, jsonl, parquet, webdataset, pgn or builtin:NAME"),
        (lambda t: t.replace('path = "*.py"\n', ''), "sources[0].path: expected a path or glob"),
        (lambda t: t.replace('[profile]\nname = "t"', '[profile]\nname = 3'), "profile.name: expected"),
        (lambda t: t + "[weird]\n", "weird: unknown key"),
        (lambda t: t.replace("seq_len = 64", 'model = "huge"'), 'stages[0].model: expected a preset'),
        (lambda t: t.replace("seq_len = 64", "model = { dim = 100, n_heads = 3 }"), "stages[0].model.dim: expected a multiple of n_heads"),
        (lambda t: t.replace("seq_len = 64", "seq_len = 100000"), "stages[0].seq_len: expected at most the model's max_seq_len"),
        (lambda t: t.replace("seq_len = 64", "activation_checkpointing = 1"), "stages[0].activation_checkpointing: expected true or false, got 1"),
        (lambda t: "mix = 3\n" + t.replace("[mix]\ncode = 1.0\nscience = 0.5\n", "").replace('domain = "code"', 'domain = "x"'), "mix: expected a table of domain = weight, got 3"),
        (lambda t: t + '[[stages]]\nname = "a"\n', 'stages[1].name: expected a unique stage name'),
        (lambda t: t + "[[stages]]\nname = \"b\"\n[stages.mix]\nchess = 1.0\n", "stages[1].mix.chess: expected a domain of [mix]"),
        (lambda t: "[profile\n", "invalid TOML"),
        (lambda t: t.replace("seq_len = 64", "lora_rank = 8"), "stages[0].init_from: expected an earlier stage whose weights LoRA adapts"),
        (lambda t: t.replace("seq_len = 64", "lora_rank = -1"), "stages[0].lora_rank: expected a non-negative integer (0: no LoRA), got -1"),
        (lambda t: t.replace("seq_len = 64", 'lora_targets = ["q", "qkv"]'), 'stages[0].lora_targets: expected names among q, k, v, o, gate, up, down, got "qkv"'),
        (lambda t: t.replace("seq_len = 64", "lora_dropout = 1.5"), "stages[0].lora_dropout: expected a number in [0, 1), got 1.5"),
        (lambda t: t.replace("seq_len = 64", "sft = 1"), "stages[0].sft: expected true or false, got 1"),
    ],
)
def test_bad_profiles_give_one_line_errors(edit, expected):
    assert expected in error_of(edit(BASE))


def test_missing_file_and_bad_encoding(tmp_path):
    with pytest.raises(ProfileError, match="no such profile file"):
        load_profile(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"[profile]\nname = \"\xff\"\n")
    with pytest.raises(ProfileError, match="expected UTF-8"):
        load_profile(bad)


def test_normalise_mix():
    assert normalise_mix({"a": 1, "b": 3}) == {"a": 0.25, "b": 0.75}
    with pytest.raises(ProfileError, match="all zero"):
        normalise_mix({"a": 0, "b": 0})
    with pytest.raises(ProfileError, match="mix.b: expected a non-negative number"):
        normalise_mix({"a": 1, "b": -1})


def test_save_mix_rewrites_only_the_mix(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(BASE)
    prof = save_mix(path, {"code": 0.2, "science": 0.8})
    assert prof.mix == {"code": 0.2, "science": 0.8}
    again = load_profile(path)
    assert again.stages == load(BASE).stages and again.mix == prof.mix
    with pytest.raises(ProfileError):
        save_mix(path, {"code": 0, "science": 0})
    assert load_profile(path).mix == prof.mix  # a refused mix leaves the file as it was


names = st.from_regex(re.compile(r"[a-z][a-z0-9_]{0,8}"), fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(
    mix=st.dictionaries(names, st.floats(0.01, 100, allow_nan=False), min_size=1, max_size=5),
    seq=st.integers(1, 512), steps=st.integers(2, 10_000), lr=st.floats(1e-6, 1.0),
    ckpt=st.booleans(), desc=st.text(max_size=40),
)
def test_round_trip_is_lossless(mix, seq, steps, lr, ckpt, desc):
    data = {
        "profile": {"name": "p", "description": desc},
        "mix": mix,
        "sources": [{"name": f"s{i}", "domain": d, "format": "builtin:chat"} for i, d in enumerate(mix)],
        "stages": [{"name": "a", "seq_len": seq, "max_steps": steps, "lr": lr, "warmup_steps": 1,
                    "activation_checkpointing": ckpt}],
    }
    prof = loads_profile(tomli_w.dumps(data))
    text = dumps_profile(prof)
    assert loads_profile(text) == prof
    assert tomllib.loads(dumps_profile(loads_profile(text))) == tomllib.loads(text)
