"""A file source whose glob matches nothing: `fcwork profile check` warns naming the source and the
glob, and `fcwork data build` fails on it, unless the source says `optional = true` (then the
build goes on and reports it) or its domain has no weight (then nothing reads it)."""

from __future__ import annotations

import json

from tests.faults.fault_fixtures import fcwork, one_error_line, text

STDLIB = json.__file__.rsplit("/", 2)[0]


def _profile(ws, optional: bool) -> str:
    path = ws.profiles_dir / "globs.toml"
    path.write_text(f"""
[profile]
name = "globs"
[mix]
code = 1.0
chess = 0.0
[data]
target_tokens = 8000
[[sources]]
name = "json"
domain = "code"
format = "text"
path = "{STDLIB}/json/*.py"
[[sources]]
name = "typo"
domain = "code"
format = "text"
path = "nowhere/*.py"
{"optional = true" if optional else ""}
[[sources]]
name = "games"
domain = "chess"
format = "text"
path = "games/*.pgn"
""")
    return str(path)


def test_a_glob_matching_nothing_fails_the_build(workspace):
    path = _profile(workspace, optional=False)
    r = fcwork(workspace.root, "profile", "check", "globs")
    assert r.returncode == 0 and text(r.stdout).startswith(f"{path}: ok (3 sources"), text(r.stdout)
    warnings = text(r.stderr).splitlines()
    assert warnings == [
        f"warning: {path}: sources[1] (typo): no files match 'nowhere/*.py' "
        "(`data build` fails on it; fix the path, or set optional = true)",
        f"warning: {path}: sources[2] (games): no files match 'games/*.pgn' (domain chess has no weight: not read)",
    ]
    r = fcwork(workspace.root, "data", "build", "globs", "--workers", "1")
    one_error_line(r, f"{path}: sources[1] (typo): no files match 'nowhere/*.py'", "optional = true")
    assert r.returncode == 2 and not workspace.raw_dir("globs").exists()


def test_an_optional_source_matching_nothing_is_a_warning(workspace):
    path = _profile(workspace, optional=True)
    r = fcwork(workspace.root, "profile", "check", "globs")
    assert r.returncode == 0
    assert (f"warning: {path}: sources[1] (typo): no files match 'nowhere/*.py' "
            "(optional: `data build` goes on without it)") in text(r.stderr).splitlines()
    r = fcwork(workspace.root, "data", "build", "globs", "--workers", "1")
    assert r.returncode == 0, text(r.stderr)
    manifest = json.loads((workspace.raw_dir("globs") / "manifest.json").read_text())
    assert manifest["domains"]["code"]["docs"] > 0
    assert any("typo: no files match" in p for p in manifest["domains"]["code"]["problems"])
    assert "typo: no files match" in " ".join(text(r.stdout).split())  # shown as a warning too
