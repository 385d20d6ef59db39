"""`fcwork tokenizer train|show|encode`: the profile's SentencePiece tokenizer."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from engine.data import pipeline
from engine.errors import TokenizerError
from engine.data.tokenizer import Tokenizer, TokenizerReport, read_report
from engine.workspace import Workspace
from fcwork.commands import profile_action
from fcwork.progress import rich_progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenizer", help="train and inspect the tokenizer")
    ps = p.add_subparsers(dest="tok_cmd", metavar="ACTION", required=True)
    profile_action(ps, "train", "train SentencePiece on a domain-balanced sample of the corpus", cmd_train)
    profile_action(ps, "show", "vocab size, hash and tokens per character per domain", cmd_show)
    e = profile_action(ps, "encode", "show the pieces and ids of a text", cmd_encode)
    e.add_argument("text")


def print_report(report: TokenizerReport, console: Console) -> None:
    table = Table("domain", "sample chars", "tokens/char", title=(
        f"tokenizer {report.name}: {report.model_type}, vocab {report.vocab_size:,}, "
        f"hash {report.hash[:12]}, trained in {report.train_seconds:.1f} s"))
    for dom, tpc in report.tokens_per_char.items():
        table.add_row(dom, f"{report.sample_chars.get(dom, 0):,}", f"{tpc:.3f}")
    console.print(table)


def cmd_train(args: argparse.Namespace) -> int:
    ws = Workspace.open(args.workspace)
    prof = ws.load_profile(args.profile)
    with rich_progress() as progress:
        report = pipeline.train_profile_tokenizer(ws, prof, progress)
    print_report(report, Console())
    return 0


def _load(args: argparse.Namespace):
    ws = Workspace.open(args.workspace)
    prof = ws.load_profile(args.profile)
    path = ws.tokenizer_path(prof.tokenizer_name)
    if not path.exists():
        raise TokenizerError(f"{path}: no tokenizer yet (run `fcwork tokenizer train {prof.name}`)")
    return path


def cmd_show(args: argparse.Namespace) -> int:
    path = _load(args)
    report = read_report(path.with_suffix(".json"))
    if report is None:
        raise TokenizerError(f"{path.with_suffix('.json')}: missing or unreadable training report")
    print_report(report, Console())
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    tok = Tokenizer.load(_load(args))
    ids = tok.encode(args.text)
    Console().print(" ".join(f"[cyan]{tok.sp.id_to_piece(i)!r}[/]:{i}" for i in ids))
    print(f"{len(ids)} tokens, {len(args.text)} chars")
    return 0
