"""CLI subcommand groups; each module exposes `register(subparsers)`."""

import argparse
from typing import Callable


def profile_action(ps: argparse._SubParsersAction, name: str, help: str, func: Callable) -> argparse.ArgumentParser:
    """A subcommand `NAME PROFILE` that runs `func`; the caller adds any further arguments."""
    p = ps.add_parser(name, help=help)
    p.add_argument("profile")
    p.set_defaults(func=func)
    return p
