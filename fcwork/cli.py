"""The `fcwork` command line: every engine action as a subcommand, for scripts, tmux and CI."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

from engine.errors import FcError, os_error_line

# Each module in fcwork.commands registers one group of subcommands.
COMMAND_MODULES = ("profile", "data", "tokenizer", "model", "train", "queue", "runs", "eval", "generate", "export",
                   "service")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fcwork", description="FusterCluck workbench")
    parser.add_argument(
        "--workspace", metavar="DIR",
        help="workspace folder (default: $FCWORK_WORKSPACE, else ~/fcwork)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"fcwork.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"fcwork.commands.{name}":
                continue
            raise
        module.register(sub)
    _accept_workspace_anywhere(sub)
    return parser


def _accept_workspace_anywhere(sub: argparse._SubParsersAction) -> None:
    """Let `--workspace DIR` also follow the subcommand (`fcwork data build default --workspace X`)."""
    for child in sub.choices.values():
        if not any("--workspace" in a.option_strings for a in child._actions):
            child.add_argument("--workspace", metavar="DIR", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        for action in child._actions:
            if isinstance(action, argparse._SubParsersAction):
                _accept_workspace_anywhere(action)


def _app_workspace(argv: Sequence[str]) -> tuple[bool, str | None]:
    """(True, workspace) when the arguments only open the TUI (`fcwork [--workspace DIR]`): it then
    starts without building the subcommands' parser and importing their modules."""
    if not argv:
        return True, None
    if len(argv) == 2 and argv[0] == "--workspace" and not argv[1].startswith("-"):
        return True, argv[1]
    if len(argv) == 1 and argv[0].startswith("--workspace=") and len(argv[0]) > len("--workspace="):
        return True, argv[0].split("=", 1)[1]
    return False, None


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except FcError as exc:
        print(f"fcwork: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `fcwork runs list | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # the last line of defence: a disk, a permission or a path the user gave
        print(f"fcwork: error: {os_error_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fcwork: interrupted", file=sys.stderr)
        return 130


def _main(argv: Sequence[str] | None) -> int:
    app_only, workspace = _app_workspace(list(sys.argv[1:] if argv is None else argv))
    if app_only:
        from fcwork.app import run_app  # imported only here: the CLI's subcommands never load Textual

        return run_app(workspace)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse gives an optional positional list (`fcwork mix RUN [DOMAIN=WEIGHT...]`) nothing after an
    # option (`RUN --only a=1`): a command that names such a list in `rest` takes the words left over.
    rest = getattr(args, "rest", None)
    if extra and (rest is None or any(e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        getattr(args, rest).extend(extra)
    if args.command is None:
        from fcwork.app import run_app  # imported only here: the CLI's subcommands never load Textual

        return run_app(args.workspace)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
