"""`fcwork runs list|show`: the workspace's training runs, from their stage.toml and events."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Column, Table

from engine.errors import FcError
from engine.jobs.rundir import RunDir
from engine.workspace import Workspace
from fcwork.commands.train import eval_events
from engine.mix import describe
from fcwork.format import PROBE_ROWS, export_lines, fmt_bytes, fmt_num as _fmt_loss, mix_history_lines, suggestion_lines


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list training runs or show one")
    ps = p.add_subparsers(dest="runs_cmd", metavar="ACTION", required=True)
    ps.add_parser("list", help="every run with its state, step and loss").set_defaults(func=cmd_list)
    s = ps.add_parser("show", help="one run: stage, state, checkpoints, held-out loss by domain")
    s.add_argument("run", help="run id (a folder under runs/) or path")
    s.set_defaults(func=cmd_show)


def cmd_list(args: argparse.Namespace) -> int:
    ws = Workspace.open(args.workspace)
    table = Table(Column("run", overflow="fold"), "profile", "stage", "state", "step/total", "loss",
                  title=f"runs in {ws.runs_dir}")
    runs = RunDir.all(ws)
    for run in runs:
        try:
            h = run.summary()
        except (FcError, OSError) as exc:  # one damaged run is listed, not fatal
            table.add_row(run.id, "", "", f"[red]unreadable: {exc}[/]", "", "")
            continue
        table.add_row(run.id, h.profile, h.stage, h.status,
                      f"{h.step}/{h.max_steps}" if h.max_steps else str(h.step), _fmt_loss(h.loss))
    Console().print(table if runs else f"no runs yet in {ws.runs_dir}")
    return 0


def training_lines(st: dict, state: dict) -> list[str]:
    """What trains: SFT's loss and LoRA's adapters from the stage, and the trainable parameters and
    optimizer state measured by the latest checkpoint."""
    lines = []
    if st.get("sft"):
        lines.append("chat SFT: rows of whole conversations, loss on assistant turns only")
    if st.get("lora_rank"):
        lines.append(f"LoRA: rank {st['lora_rank']}, alpha {st.get('lora_alpha')}, dropout {st.get('lora_dropout')} "
                     f"on {', '.join(st.get('lora_targets', []))}; the base weights frozen")
    if state.get("trainable_params"):
        trainable, total = int(state["trainable_params"]), int(state.get("params") or 0)
        share = f" ({trainable / total:.2%})" if total else ""
        lines.append(f"trainable parameters: {trainable:,} of {total:,}{share}; optimizer state "
                     f"{fmt_bytes(int(state.get('optim_bytes', 0)))} (step {state.get('step')})")
    return lines


def cmd_show(args: argparse.Namespace) -> int:
    ws = Workspace.open(args.workspace)
    run = RunDir.resolve(ws, args.run)
    s = run.summary()
    stage = run.read_stage()
    st = stage.get("stage", {})
    console = Console()
    model = st.get("model", {})
    shape = ", ".join(f"{k}={model[k]}" for k in ("dim", "n_layers", "n_heads", "vocab_size") if k in model)
    console.print(f"[bold]{run.id}[/]  {s.profile} / {s.stage}")
    console.print(f"state {s.status}, step {s.step}/{s.max_steps or '?'}, last loss {_fmt_loss(s.loss)}")
    console.print(f"model: {shape}; seq_len {st.get('seq_len')}, batch {st.get('micro_batch')}x{st.get('grad_accum')}, "
                  f"lr {st.get('lr')}, {st.get('schedule')}")
    init = stage.get("paths", {}).get("init_from", "")
    if init:
        console.print(f"initialised from {init}")
    for line in training_lines(st, run.checkpoint_state()):
        console.print(line, highlight=False)
    ckpts = run.checkpoints()
    console.print("checkpoints: " + (", ".join(p.name for _, p in ckpts) if ckpts else "none")
                  + (f" (latest {ckpts[-1][1].name})" if ckpts else ""))
    if s.message:
        console.print(f"message: {s.message}", highlight=False)
    epochs = s.last.get("epochs") or {}
    if epochs and s.step:
        # Passes so far, and where the stage ends at this pace (the mix may still change it).
        whole = (s.max_steps or s.step) / s.step
        console.print("passes over each domain: " + ", ".join(
            f"{d} {e:.2f}x (about {e * whole:.1f}x by step {s.max_steps})" if s.max_steps else f"{d} {e:.2f}x"
            for d, e in epochs.items()))
    history = run.history()
    mixes = history.mixes
    console.print("mix history:" + ("".join(f"\n  {line}" for line in mix_history_lines(mixes)) if mixes
                                    else f" none recorded (stage.toml: {describe(run.meta().mix)})"), highlight=False)
    if history.suggestion:
        head, _ = suggestion_lines(history.suggestion, mixes[-1][1] if mixes else run.meta().mix)
        head = head.replace("a accepts", f"fcwork mix {run.id} --accept-suggestion")
        console.print(head + "".join(f"\n  {r}" for r in (history.suggestion.get("reasons") or {}).values()),
                      highlight=False, markup=False, soft_wrap=True)
    exports = run.exports()
    console.print(f"exports in {run.exports_dir}:" + "".join(f"\n  {line}" for line in export_lines(exports))
                  if exports else "exports: none (fcwork export RUN --format hf|gguf|mlx)", highlight=False, soft_wrap=True)
    evals = eval_events(run.path)
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
            rows = [(p, m, label) for p, m, label in PROBE_ROWS if any(m in e["probes"].get(p, {}) for e in probed)]
            pt = Table("step", *[label for _, _, label in rows], title="probes during training")
            for e in probed:
                pt.add_row(str(e.get("step")), *[_fmt_loss(e["probes"].get(p, {}).get(m)) for p, m, _ in rows])
            console.print(pt)
    else:
        console.print("no evals yet")
    return 0
