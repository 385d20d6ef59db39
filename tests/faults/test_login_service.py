"""`fcwork service install|uninstall|status`: a queue that survives a reboot. On Linux a systemd
user unit (checked with systemd-analyze where it is installed, and its command run for real); on
macOS, faked here, a launchd agent. The file is written atomically under $HOME (a temp folder
here), and the command that enables it is printed, never run."""

from __future__ import annotations

import os
import plistlib
import shlex
import shutil
import subprocess
import sys

import pytest

from engine.jobs.procs import supervisor_pid
from fcwork.cli import main
from tests.faults.fault_fixtures import fcwork, one_error_line, text
from tests.queue_fixtures import wait_for


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    return home


def _unit_settings(unit: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in unit.splitlines() if "=" in line)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the systemd unit is what Linux gets")
def test_systemd_user_unit(home, workspace):
    env = {"HOME": str(home), "XDG_CONFIG_HOME": None}
    units = home / ".config" / "systemd" / "user"
    r = fcwork(workspace.root, "service", "status", env=env)
    assert r.returncode == 0 and ": not installed (" in text(r.stdout), text(r.stdout)

    r = fcwork(workspace.root, "service", "install", env=env)
    assert r.returncode == 0, text(r.stderr)
    (unit,) = units.iterdir()  # one file, no temp left beside it
    assert unit.name.startswith("fcwork-") and unit.suffix == ".service"
    assert text(r.stdout).splitlines()[:2] == [
        f"wrote {unit} (systemd user unit {unit.name}: `fcwork queue start` for {workspace.root} at login)",
        f"enable it with: systemctl --user enable --now {unit.name}",
    ]
    settings = _unit_settings(unit.read_text())
    assert settings["Type"] == "oneshot" and settings["KillMode"] == "process"
    assert settings["WantedBy"] == "default.target"
    if shutil.which("systemd-analyze"):
        check = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
        assert check.returncode == 0 and not check.stderr.strip(), check.stderr

    # What the unit runs at login starts the workspace's supervisor, which outlives the command.
    command = shlex.split(settings["ExecStart"])
    assert command == [sys.executable, "-m", "fcwork.cli", "--workspace", str(workspace.root), "queue", "start"]
    name, value = shlex.split(settings["Environment"])[0].split("=", 1)
    started = subprocess.run(command, cwd=settings["WorkingDirectory"], env={**os.environ, name: value},
                             capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert started.returncode == 0 and "supervisor running (pid" in started.stdout, started.stderr
    pid = supervisor_pid(workspace)
    assert pid is not None and str(pid) in started.stdout
    wait_for(lambda: supervisor_pid(workspace) is None, 60, "the idle supervisor to exit")

    r = fcwork(workspace.root, "service", "install", env=env)
    assert text(r.stdout).startswith(f"unchanged: {unit} ")
    (units / "default.target.wants").mkdir()
    (units / "default.target.wants" / unit.name).symlink_to(unit)  # what `systemctl --user enable` does
    r = fcwork(workspace.root, "service", "status", env=env)
    assert text(r.stdout).splitlines() == [
        f"systemd user unit {unit.name}: installed at {unit}, up to date",
        f"runs: {shlex.join(command)}",
        "enabled: yes",
    ]
    other = fcwork(workspace.root.parent / "other", "service", "status", env=env)
    assert unit.name not in text(other.stdout)  # each workspace its own unit

    r = fcwork(workspace.root, "service", "uninstall", env=env)
    assert text(r.stdout).splitlines() == [f"removed {unit}", "then run: systemctl --user daemon-reload"]
    assert not unit.exists() and not os.path.lexists(units / "default.target.wants" / unit.name)
    r = fcwork(workspace.root, "service", "uninstall", env=env)
    assert text(r.stdout).strip() == f"not installed: {unit}"


def test_launchd_agent_on_a_faked_mac(home, workspace, monkeypatch, capsys):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert main(["--workspace", str(workspace.root), "service", "install"]) == 0
    agents = home / "Library" / "LaunchAgents"
    (plist_path,) = agents.iterdir()
    plist = plistlib.loads(plist_path.read_bytes())
    label = plist["Label"]
    assert plist_path.name == f"{label}.plist" and label.startswith("org.fustercluck.fcwork.")
    assert plist["ProgramArguments"] == [sys.executable, "-m", "fcwork.cli", "--workspace", str(workspace.root),
                                         "queue", "start"]
    assert plist["RunAtLoad"] is True and plist["AbandonProcessGroup"] is True and "KeepAlive" not in plist
    assert plist["WorkingDirectory"] == str(workspace.root)
    out = capsys.readouterr().out.splitlines()
    assert out == [f"wrote {plist_path} (launchd agent {label}: `fcwork queue start` for {workspace.root} at login)",
                   f"enable it with: launchctl load -w {plist_path}"]

    assert main(["--workspace", str(workspace.root), "service", "status"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"launchd agent {label}: installed at {plist_path}, up to date"
    assert out[2] == f"enabled: ask launchctl (launchctl list {label}); enable it with: launchctl load -w {plist_path}"

    plist["ProgramArguments"][0] = "/old/venv/bin/python"  # installed from another checkout
    plist_path.write_bytes(plistlib.dumps(plist))
    main(["--workspace", str(workspace.root), "service", "status"])
    assert "differs from what install writes now: run `fcwork service install`" in capsys.readouterr().out

    assert main(["--workspace", str(workspace.root), "service", "uninstall"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"removed {plist_path}", f"then run: launchctl remove {label}"]
    assert list(agents.iterdir()) == []


def test_neither_launchd_nor_systemd(home, workspace, monkeypatch, capsys):
    monkeypatch.setattr(sys, "platform", "win32")
    assert main(["--workspace", str(workspace.root), "service", "install"]) == 2
    assert capsys.readouterr().err == "fcwork: error: service: expected macOS (launchd) or Linux (systemd), this is win32\n"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the systemd unit is what Linux gets")
def test_a_home_where_nothing_can_be_written(tmp_path, workspace):
    blocker = tmp_path / "home"
    blocker.write_text("not a folder")
    r = fcwork(workspace.root, "service", "install", env={"HOME": str(blocker / "me"), "XDG_CONFIG_HOME": None})
    one_error_line(r, f"{blocker / 'me'}/.config/systemd/user/fcwork-", ": cannot write the systemd service (",
                   "Not a directory")
