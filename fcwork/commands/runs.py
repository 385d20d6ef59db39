"""`fcwork runs list|show`: the workspace's training runs, from their stage.toml and events."""

from __future__ import annotations

import argparse
from engine.compat import tomllib
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Column, Table

from engine.workspace import Workspace
from fcwork.commands.train import eval_events, resolve_run


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list training runs or show one")
    ps = p.add_subparsers(dest="runs_cmd", metavar="ACTION", required=True)
    ps.add_parser("list", help="every run with its state, step and loss").set_defaults(func=cmd_list)
    s = ps.add_parser("show", help="one run: stage, state, checkpoints, held-out loss by domain")
    s.add_argument("run", help="run id (a folder under runs/) or path")
    s.set_defaults(func=cmd_show)


def _get(obj: Any, key: str, default: Any = None) -> Any:
    """A field of a run summary, whether the summary is a dict or a dataclass."""
    value = obj.get(key, default) if isinstance(obj, dict) else getattr(obj, key, default)
    return default if value is None else value


def _fmt_loss(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def _frozen(run_dir: Path) -> dict:
    """The run's stage.toml ({} when unreadable: the summary then says what is wrong)."""
    try:
        return tomllib.loads((run_dir / "stage.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def cmd_list(args: argparse.Namespace) -> int:
    from engine.jobs.runs import list_runs, read_run

    ws = Workspace.open(args.workspace)
    table = Table(Column("run", overflow="fold"), "profile", "stage", "state", "step/total", "loss",
                  title=f"runs in {ws.runs_dir}")
    runs = list_runs(ws)
    for item in runs:
        run_dir = item if isinstance(item, Path) else Path(_get(item, "path", None) or _get(item, "run_dir", None) or item)
        if not run_dir.is_absolute():
            run_dir = ws.runs_dir / run_dir
        try:
            s = read_run(run_dir)
        except Exception as exc:  # one damaged run is listed, not fatal
            table.add_row(run_dir.name, "", "", f"[red]unreadable: {exc}[/]", "", "")
            continue
        frozen = _frozen(run_dir)
        profile = _get(s, "profile", "") or frozen.get("run", {}).get("profile", "")
        stage = _get(s, "stage", "") or frozen.get("run", {}).get("stage", "")
        total = _get(s, "max_steps", 0) or frozen.get("stage", {}).get("max_steps", 0)
        step = _get(s, "step", 0)
        table.add_row(run_dir.name, str(profile), str(stage), str(_get(s, "state", "")),
                      f"{step}/{total}" if total else str(step), _fmt_loss(_get(s, "loss")))
    Console().print(table if runs else f"no runs yet in {ws.runs_dir}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from engine.jobs.runs import latest_checkpoint, read_run

    ws = Workspace.open(args.workspace)
    run_dir = resolve_run(ws, args.run)
    s = read_run(run_dir)
    stage = tomllib.loads((run_dir / "stage.toml").read_text(encoding="utf-8"))
    st = stage.get("stage", {})
    console = Console()
    model = st.get("model", {})
    shape = ", ".join(f"{k}={model[k]}" for k in ("dim", "n_layers", "n_heads", "vocab_size") if k in model)
    console.print(f"[bold]{run_dir.name}[/]  {stage.get('run', {}).get('profile', '')} / {st.get('name', '')}")
    console.print(f"state {_get(s, 'state', '?')}, step {_get(s, 'step', 0)}/{st.get('max_steps', '?')}, "
                  f"last loss {_fmt_loss(_get(s, 'loss'))}")
    console.print(f"model: {shape}; seq_len {st.get('seq_len')}, batch {st.get('micro_batch')}x{st.get('grad_accum')}, "
                  f"lr {st.get('lr')}, {st.get('schedule')}")
    init = stage.get("paths", {}).get("init_from", "")
    if init:
        console.print(f"initialised from {init}")
    ckpts = sorted((p for p in (run_dir / "ckpt").glob("step-*") if p.is_dir() and p.name[5:].isdigit()),
                   key=lambda p: int(p.name[5:]))
    latest = latest_checkpoint(run_dir)
    console.print("checkpoints: " + (", ".join(p.name for p in ckpts) if ckpts else "none")
                  + (f" (latest {Path(latest).name})" if latest else ""))
    message = _get(s, "message", "")
    if message:
        console.print(f"message: {message}")
    evals = eval_events(run_dir)
    if evals:
        domains = list(dict.fromkeys(d for e in evals for d in e.get("domain_loss", {})))
        table = Table("step", "loss", *domains, title="held-out loss by domain" + (" (bits per byte)" if any(
            e.get("domain_bpb") for e in evals) else ""))
        for e in evals:
            bpb = e.get("domain_bpb") or {}
            cells = [_fmt_loss(e.get("domain_loss", {}).get(d)) + (f" ({bpb[d]:.3f})" if d in bpb else "") for d in domains]
            table.add_row(str(e.get("step")), _fmt_loss(e.get("loss")), *cells)
        console.print(table)
        probed = [e for e in evals if e.get("probes")]
        if probed:
            from fcwork.commands.eval import PROBE_ROWS

            rows = [(p, m, label) for p, m, label in PROBE_ROWS if any(m in e["probes"].get(p, {}) for e in probed)]
            pt = Table("step", *[label for _, _, label in rows], title="probes during training")
            for e in probed:
                pt.add_row(str(e.get("step")), *[_fmt_loss(e["probes"].get(p, {}).get(m)) for p, m, _ in rows])
            console.print(pt)
    else:
        console.print("no evals yet")
    return 0
