"""A workspace's queue as a login service, so that stages queued before a reboot train on after it.

On macOS a launchd agent (`~/Library/LaunchAgents/<label>.plist`, RunAtLoad), on Linux a systemd
user unit (`~/.config/systemd/user/fcwork-<hash>.service`, Type=oneshot): each runs
`<this python> -m fcwork.cli --workspace WS queue start` once at login, which starts the detached
supervisor (it re-claims the entries a shutdown left running and resumes them from their
checkpoints) and returns. KillMode=process / AbandonProcessGroup keep the service manager from
killing that supervisor when the one-shot command ends.

`install` only writes the file (atomically) and names the one command that enables it: loading a
login item is the user's call, and over SSH it may need their session. `<hash>` is a short hash of
the workspace's path, so each workspace has its own service.
"""

from __future__ import annotations

import hashlib
import os
import plistlib
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from engine.atomic import atomic_write_bytes
from engine.errors import ServiceError, os_error_line
from engine.jobs.procs import child_env
from engine.workspace import Workspace

LABEL_PREFIX = "org.fustercluck.fcwork"
UNIT_PREFIX = "fcwork"
SERVICE_LOG = "service.log"  # in the workspace: what launchd's run of `queue start` printed


@dataclass(frozen=True)
class Service:
    """The login service of one workspace on this platform: where its file goes and what it holds."""

    kind: str         # "launchd" or "systemd"
    name: str         # the launchd label, or the systemd unit's file name
    path: Path        # the plist or the unit file
    content: bytes    # what `install` writes there
    command: list[str]  # what it runs at login
    enable: str       # the one command that enables it (printed, never run)
    disable: str      # the one command to run after `uninstall`
    wants_link: Path | None = None  # systemd: the link `systemctl --user enable` makes

    def installed(self) -> bool:
        return self.path.exists()

    def current(self) -> bool:
        """Whether the installed file is what `install` would write now (same python, same workspace)."""
        try:
            return self.path.read_bytes() == self.content
        except OSError:
            return False

    def enabled(self) -> bool | None:
        """systemd: whether the unit is enabled (its link exists); launchd: None (only launchctl knows)."""
        return None if self.wants_link is None else os.path.lexists(self.wants_link)


def workspace_hash(ws: Workspace) -> str:
    return hashlib.sha256(str(ws.root).encode()).hexdigest()[:10]


def service_for(ws: Workspace) -> Service:
    """This platform's service for `ws` (ServiceError where there is neither launchd nor systemd)."""
    command = [sys.executable, "-m", "fcwork.cli", "--workspace", str(ws.root), "queue", "start"]
    pythonpath = child_env()["PYTHONPATH"]  # this checkout's engine, as the supervisor's children get it
    if sys.platform == "darwin":
        label = f"{LABEL_PREFIX}.{workspace_hash(ws)}"
        path = Path.home() / "Library" / "LaunchAgents" / f"{label}.plist"
        plist = {
            "Label": label,
            "ProgramArguments": command,
            "RunAtLoad": True,
            "AbandonProcessGroup": True,  # the supervisor it starts outlives the command
            "WorkingDirectory": str(ws.root),
            "EnvironmentVariables": {"PYTHONPATH": pythonpath},
            "StandardOutPath": str(ws.root / SERVICE_LOG),
            "StandardErrorPath": str(ws.root / SERVICE_LOG),
        }
        return Service("launchd", label, path, plistlib.dumps(plist), command,
                       enable=f"launchctl load -w {shlex.quote(str(path))}", disable=f"launchctl remove {label}")
    if sys.platform.startswith("linux"):
        name = f"{UNIT_PREFIX}-{workspace_hash(ws)}.service"
        config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        folder = config / "systemd" / "user"
        unit = "\n".join([
            "[Unit]",
            f"Description=fcwork stage queue of {_unit_text(str(ws.root))}",
            "",
            "[Service]",
            "Type=oneshot",
            f"ExecStart={' '.join(_unit_arg(a) for a in command)}",
            f"WorkingDirectory={_unit_text(str(ws.root))}",
            f"Environment={_unit_arg('PYTHONPATH=' + pythonpath, expands=False)}",
            "KillMode=process",  # stopping the unit leaves the detached supervisor (and its trainer) running
            "",
            "[Install]",
            "WantedBy=default.target",
            "",
        ])
        return Service("systemd", name, folder / name, unit.encode(), command,
                       enable=f"systemctl --user enable --now {name}", disable="systemctl --user daemon-reload",
                       wants_link=folder / "default.target.wants" / name)
    raise ServiceError(f"service: expected macOS (launchd) or Linux (systemd), this is {sys.platform}")


def install(ws: Workspace) -> tuple[Service, bool]:
    """Write the service file; returns it and whether the file changed."""
    svc = service_for(ws)
    if svc.current():
        return svc, False
    try:
        atomic_write_bytes(svc.path, svc.content)
    except OSError as exc:
        raise ServiceError(f"{svc.path}: cannot write the {svc.kind} service ({os_error_line(exc)})") from None
    return svc, True


def uninstall(ws: Workspace) -> tuple[Service, bool]:
    """Remove the service file (and systemd's enable link to it); returns it and whether there was one."""
    svc = service_for(ws)
    removed = False
    try:
        for path in (svc.wants_link, svc.path):
            if path is not None and os.path.lexists(path):
                os.unlink(path)
                removed = True
    except OSError as exc:
        raise ServiceError(f"{svc.path}: cannot remove the {svc.kind} service ({os_error_line(exc)})") from None
    return svc, removed


def _unit_text(text: str) -> str:
    """Text in a unit file, its specifiers (%) escaped."""
    return text.replace("%", "%%")


def _unit_arg(arg: str, expands: bool = True) -> str:
    """One quoted word of a unit's command line (or, `expands=False`, of an Environment= setting,
    where $ is plain text): backslashes and quotes escaped, specifiers' % doubled, and $ doubled
    where systemd would expand variables."""
    escaped = _unit_text(arg.replace("\\", "\\\\").replace('"', '\\"'))
    return f'"{escaped.replace("$", "$$") if expands else escaped}"'
