"""`fcwork profile list|check|show`: the workspace's profiles."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

from engine.data.sources import describe_source
from engine.profile import dumps_profile
from engine.workspace import Workspace
from fcwork.commands import profile_action


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="list, check or show profiles")
    ps = p.add_subparsers(dest="profile_cmd", metavar="ACTION", required=True)
    ps.add_parser("list", help="profiles in the workspace").set_defaults(func=cmd_list)
    profile_action(ps, "check", "validate a profile", cmd_check)
    profile_action(ps, "show", "print a profile with every default filled in", cmd_show)


def cmd_list(args: argparse.Namespace) -> int:
    ws = Workspace.open(args.workspace)
    table = Table("profile", "stages", "path")
    for path in sorted(ws.profiles_dir.glob("*.toml")):
        try:
            prof = ws.load_profile(str(path))
            table.add_row(prof.name, ", ".join(s.name for s in prof.stages), str(path))
        except Exception as exc:  # a broken profile is listed, not fatal
            table.add_row(path.stem, f"[red]invalid: {exc}[/]", str(path))
    Console().print(table)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    prof = Workspace.open(args.workspace).load_profile(args.profile)
    print(f"{prof.path}: ok ({len(prof.sources)} sources, {len(prof.stages)} stages)")
    from engine.data.corpus import domain_shares

    base = prof.path.parent if prof.path else None
    shares = domain_shares(prof)
    for i, src in enumerate(prof.sources):
        if describe_source(src, base).status != "missing":
            continue
        then = ("optional: `data build` goes on without it" if src.optional else
                f"domain {src.domain} has no share of the corpus: not read" if src.domain not in shares else
                "`data build` fails on it; fix the path, or set optional = true")
        print(f"warning: {prof.path}: sources[{i}] ({src.name}): no files match {src.path!r} ({then})", file=sys.stderr)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    prof = Workspace.open(args.workspace).load_profile(args.profile)
    print(dumps_profile(prof), end="")
    return 0
