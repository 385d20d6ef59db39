"""`fcwork data build|pretokenize|prepare|show|verify`: the corpus, the token shards and the image-text
pairs of a profile."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

from engine.data import pipeline
from engine.data.corpus import CorpusSummary, read_manifest
from engine.data.sources import describe_source
from engine.errors import DataError
from engine.workspace import Workspace
from fcwork.commands import profile_action
from fcwork.progress import rich_progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="build the corpus and the token shards")
    ps = p.add_subparsers(dest="data_cmd", metavar="ACTION", required=True)
    b = profile_action(ps, "build", "build the corpus of a profile (budgets, dedup, held-out split); grows an "
                                    "existing one when its budget rose", cmd_build)
    b.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    b.add_argument("--rebuild", action="store_true", help="start every domain over instead of growing it")
    t = profile_action(ps, "pretokenize", "encode the corpus into shards with the profile's tokenizer", cmd_pretokenize)
    t.add_argument("--workers", type=int, default=None, help="encoder processes (default: one per core)")
    a = profile_action(ps, "prepare", "corpus, tokenizer and shards, each only when out of date", cmd_prepare)
    a.add_argument("--force", action="store_true", help="redo every step (rebuild, retrain the tokenizer, re-encode)")
    profile_action(ps, "sources", "the profile's sources: status, files and size on disk", cmd_sources)
    profile_action(ps, "show", "the last corpus build's summary", cmd_show)
    profile_action(ps, "verify", "read every shard of a profile against its checksum, tokenizer and vocabulary",
                   cmd_verify)


def print_summary(manifest: dict, console: Console) -> None:
    actions = manifest.get("actions", {})
    table = Table("domain", "docs", "chars", "est. tokens", "held-out docs", "dups", "skipped", "shortfall", "this build",
                  title=f"corpus {manifest['profile']} ({manifest.get('seconds', 0):.1f} s)")
    for name, d in manifest["domains"].items():
        skipped = ", ".join(f"{n} {r}" for r, n in d["skipped"].items()) or "-"
        short = d["shortfall_chars"]
        table.add_row(name, f"{d['docs']:,}", f"{d['chars']:,}", f"{d['est_tokens']:,}", f"{d['heldout_docs']:,}",
                      f"{d['duplicates']:,}", skipped, f"[yellow]{short:,} chars[/]" if short else "-",
                      actions.get(name, "kept"))
    console.print(table)
    sources = Table("source", "domain", "docs", "chars", "share of domain", title="per source")
    for name, d in manifest["domains"].items():
        total = sum(d.get("source_chars", {}).values()) or 1
        for src, chars in d.get("source_chars", {}).items():
            sources.add_row(src, name, f"{d.get('sources', {}).get(src, 0):,}", f"{chars:,}", f"{chars / total:.1%}")
    if sources.row_count:
        console.print(sources)
    for d in manifest["domains"].values():
        for problem in d["problems"]:
            console.print(f"[yellow]warning:[/] {problem}")


def cmd_build(args: argparse.Namespace) -> int:
    ws = Workspace.open(args.workspace)
    prof = ws.load_profile(args.profile)
    with rich_progress() as progress:
        summary: CorpusSummary = pipeline.build_data(ws, prof, progress, workers=args.workers, rebuild=args.rebuild)
    print_summary(read_manifest(ws.raw_dir(prof.name)) or {}, Console())
    if prof.image_domains:
        from engine.data.imagedata import build_images

        with rich_progress() as progress:
            build_images(ws, prof, progress=progress, rebuild=args.rebuild)
        print_images(ws, prof, Console())
    return 0 if summary else 1


def cmd_pretokenize(args: argparse.Namespace) -> int:
    ws = Workspace.open(args.workspace)
    prof = ws.load_profile(args.profile)
    with rich_progress() as progress:
        result = pipeline.pretokenize_profile(ws, prof, progress, workers=args.workers)
    table = Table("domain", "tokens", "docs", "held-out tokens", title=f"shards in {ws.tok_dir(prof.name)}")
    for dom, info in result.items():
        table.add_row(dom, *(f"{info.get(k, 0):,}" for k in ("tokens", "docs", "heldout_tokens")))
    Console().print(table)
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    ws = Workspace.open(args.workspace)
    prof = ws.load_profile(args.profile)
    notes: list[str] = []
    with rich_progress() as progress:
        ran = pipeline.prepare_data(ws, prof, progress, force=args.force, notes=notes)
    for note in notes:
        Console(stderr=True).print(f"[yellow]note:[/] {note}")
    print(f"{prof.name}: " + (f"ran {', '.join(ran)}" if ran else "data is up to date"))
    return 0


def cmd_sources(args: argparse.Namespace) -> int:
    ws = Workspace.open(args.workspace)
    prof = ws.load_profile(args.profile)
    base = prof.path.parent if prof.path else None
    table = Table("source", "domain", "format", "status", "files", "size", "est. tokens", title=f"sources of {prof.name}")
    for src in prof.sources:
        info = describe_source(src, base)
        status = {"missing": "[yellow]missing[/]"}.get(info.status, info.status)
        size = f"{info.bytes / 1e6:,.1f} MB" if info.files else "-"
        tokens = f"{info.est_tokens(prof.data.chars_per_token):,}" if info.files else "-"
        table.add_row(info.name, info.domain, info.format, status, str(info.files or "-"), size, tokens)
    Console().print(table)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    ws = Workspace.open(args.workspace)
    prof = ws.load_profile(args.profile)
    manifest = read_manifest(ws.raw_dir(prof.name))
    if manifest is None:
        print(f"{ws.raw_dir(prof.name)}: no corpus yet (run `fcwork data build {prof.name}`)")
        return 1
    print_summary(manifest, Console())
    print_images(ws, prof, Console())
    return 0


def print_images(ws: Workspace, prof, console: Console) -> None:
    """The image-text build at `data.image_size`: images, pairs and skips per domain."""
    from engine.data.imagedata import read_image_manifest

    manifest = read_image_manifest(ws, prof)
    if not manifest:
        if prof.image_domains:
            console.print(f"image-text domains {', '.join(prof.image_domains)}: not built yet (`fcwork data prepare {prof.name}`)")
        return
    table = Table("domain", "images", "pairs", "held-out pairs", "dups", "skipped", "this build",
                  title=f"image-text pairs at {manifest.get('size')} px")
    for name, d in manifest.get("domains", {}).items():
        skipped = ", ".join(f"{n} {r}" for r, n in d.get("skipped", {}).items()) or "-"
        table.add_row(name, f"{d['images']:,}", f"{d['pairs']:,}", f"{d['heldout_pairs']:,}", f"{d['duplicates']:,}",
                      skipped, manifest.get("actions", {}).get(name, "kept"))
    console.print(table)
    for d in manifest.get("domains", {}).values():
        for problem in d.get("problems", []):
            console.print(f"[yellow]warning:[/] {problem}")


def cmd_verify(args: argparse.Namespace) -> int:
    """Every shard (training and held-out) of the profile's domains, and every image shard and caption
    shard of its image-text domains (each size built), every byte; exit 1 on a problem."""
    from engine.data.imageshards import FORMAT_VERSION as IMAGE_VERSION, verify_images
    from engine.data.shards import verify_shard
    from engine.data.tokenizer import file_hash, read_report
    from engine.errors import ShardError

    ws = Workspace.open(args.workspace)
    prof = ws.load_profile(args.profile)
    tok_path = ws.tokenizer_path(prof.tokenizer_name)
    tok_hash = file_hash(tok_path) if tok_path.exists() else None
    report = read_report(tok_path.with_suffix(".json"))
    vocab = report.vocab_size if report else None
    tok_dir = ws.tok_dir(prof.name)
    prefixes = [tok_dir / sub / d for d in prof.domains for sub in ("", "heldout")
                if (tok_dir / sub / f"{d}.bin").exists() or (tok_dir / sub / f"{d}.idx").exists()]
    img_root = ws.data_dir(prof.name) / "img"
    image_prefixes = [size_dir / sub / d for size_dir in sorted(img_root.glob("*px")) for d in prof.image_domains
                      for sub in ("", "heldout") if (size_dir / sub / f"{d}.img").exists()]
    if not prefixes and not image_prefixes:
        raise DataError(f"{tok_dir}: no shards yet (run `fcwork data pretokenize {prof.name}` first)")
    prefixes += [p.with_name(p.name + ".cap") for p in image_prefixes]
    total = sum((p.with_name(p.name + ext)).stat().st_size for p in prefixes for ext in (".bin", ".idx")
                if p.with_name(p.name + ext).exists())
    total += sum(p.with_name(p.name + ext).stat().st_size for p in image_prefixes for ext in (".img", ".pairs"))
    console = Console(stderr=True)
    table = Table("shard", "version", "tokens", "docs", "result", title=f"shards of {prof.name} ({tok_dir})")
    problems, done = 0, 0
    with rich_progress(console) as progress:

        def read(n: int) -> None:
            nonlocal done
            done += n
            progress("verify shards", done, total)

        for prefix in image_prefixes:
            name = str(prefix.relative_to(img_root))
            try:
                shard = verify_images(prefix, read)
                table.add_row(name + ".img", str(IMAGE_VERSION), f"{shard.n_images:,} images",
                              f"{shard.n_pairs:,} pairs", "[green]ok[/]")
            except ShardError as exc:
                problems += 1
                table.add_row(name + ".img", "?", "-", "-", f"[red]{exc}[/]")
        for prefix in prefixes:
            name = str(prefix.relative_to(tok_dir if prefix.is_relative_to(tok_dir) else img_root))
            check = verify_shard(prefix, tok_hash, vocab, read)
            problems += len(check.problems)
            result = "[green]ok[/]" if check.ok else "[red]" + "; ".join(check.problems) + "[/]"
            table.add_row(name, str(check.version or "?"), f"{check.n_tokens:,}", f"{check.n_docs:,}", result)
            for note in check.notes:
                console.print(f"[yellow]note[/] {note}")
    Console().print(table)
    if problems:
        print(f"fcwork: error: {problems} problem{'s' if problems != 1 else ''} in the shards of {prof.name}", file=sys.stderr)
        return 1
    return 0
