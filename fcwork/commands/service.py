"""`fcwork service install|uninstall|status`: start the workspace's queue at login (launchd on macOS,
a systemd user unit on Linux), so stages queued before a reboot train on after it."""

from __future__ import annotations

import argparse
import shlex

from engine.jobs import service
from engine.workspace import Workspace


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "service", help="start this workspace's queue at login (launchd agent / systemd user unit)",
        description="install writes the launchd agent (macOS) or systemd user unit (Linux) that runs "
                    "`fcwork queue start` for this workspace at login, and prints the command that enables it; "
                    "uninstall removes it; status says whether it is there and up to date.",
    )
    ps = p.add_subparsers(dest="service_cmd", metavar="ACTION", required=True)
    ps.add_parser("install", help="write the service file and print the command that enables it").set_defaults(
        func=cmd_install)
    ps.add_parser("uninstall", help="remove the service file").set_defaults(func=cmd_uninstall)
    ps.add_parser("status", help="where the service file is and whether it is current").set_defaults(func=cmd_status)


def _what(svc: service.Service) -> str:
    return f"{'launchd agent' if svc.kind == 'launchd' else 'systemd user unit'} {svc.name}"


def cmd_install(args: argparse.Namespace) -> int:
    ws = Workspace.open(args.workspace)
    svc, changed = service.install(ws)
    print(f"{'wrote' if changed else 'unchanged:'} {svc.path} ({_what(svc)}: `fcwork queue start` for {ws.root} at login)")
    print(f"enable it with: {svc.enable}")
    if svc.kind == "systemd":
        print("(it starts at boot, before you log in, only with lingering on: loginctl enable-linger)")
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    ws = Workspace.open(args.workspace)
    svc, removed = service.uninstall(ws)
    if not removed:
        print(f"not installed: {svc.path}")
        return 0
    print(f"removed {svc.path}")
    print(f"then run: {svc.disable}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    ws = Workspace.open(args.workspace)
    svc = service.service_for(ws)
    if not svc.installed():
        print(f"{_what(svc)}: not installed ({svc.path}); `fcwork service install` writes it")
        return 0
    state = "up to date" if svc.current() else "differs from what install writes now: run `fcwork service install`"
    print(f"{_what(svc)}: installed at {svc.path}, {state}")
    print(f"runs: {shlex.join(svc.command)}")
    enabled = svc.enabled()
    if enabled is None:
        print(f"enabled: ask launchctl (launchctl list {svc.name}); enable it with: {svc.enable}")
    else:
        print("enabled: yes" if enabled else f"enabled: no; enable it with: {svc.enable}")
    return 0
