"""Saving a mix into a profile (engine.profile.save_mix) changes only the [mix] values in place."""

from __future__ import annotations

import pytest

from engine.errors import ProfileError
from engine.profile import load_profile, save_mix

PROFILE = '''# My campaign: keep these notes.
[profile]
name = "mine"

[mix]                      # weights per domain; normalised
science = 0.3   # papers and docs
code = 3
chess = 0.15

[data]
target_tokens = 1_500_000  # ~1.5M tokens

[[sources]]
name = "stdlib"
domain = "code"
format = "builtin:python-stdlib"

[[sources]]
name = "games"
domain = "chess"
format = "builtin:chess-games"

[[stages]]
name = "base"
model = "tiny"
max_steps = 400
'''


def test_only_the_mix_values_change(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(PROFILE)
    prof = save_mix(path, {"science": 0.5, "code": 2.0, "chess": 0.25})
    assert prof.mix == {"science": 0.5, "code": 2.0, "chess": 0.25} and prof.path == path
    expected = (PROFILE.replace("science = 0.3 ", "science = 0.5 ").replace("code = 3", "code = 2")
                .replace("chess = 0.15", "chess = 0.25"))
    assert path.read_text() == expected  # comments, blank lines, 1_500_000, [[sources]] all as they were
    assert load_profile(path).mix == prof.mix


def test_a_domain_dropped_or_added(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(PROFILE)
    with pytest.raises(ProfileError, match="sources\\[1\\].domain"):  # a source still feeds chess
        save_mix(path, {"science": 1.0, "code": 0.5, "chat": 0.1})
    path.write_text(PROFILE.replace('domain = "chess"', 'domain = "code"'))
    save_mix(path, {"science": 1.0, "code": 0.5, "chat": 0.1})
    text = path.read_text()
    assert "chess = " not in text.split("[data]")[0] and "chat = 0.1" in text
    assert "# papers and docs" in text and "target_tokens = 1_500_000" in text


def test_an_invalid_mix_leaves_the_file_alone(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(PROFILE)
    with pytest.raises(ProfileError):
        save_mix(path, {"science": 0.0, "code": 0.0, "chess": 0.0})
    assert path.read_text() == PROFILE
