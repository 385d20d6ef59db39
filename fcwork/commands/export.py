"""`fcwork export RUN [--step N] --format hf|gguf|mlx [--dtype f32|f16|bf16|q8] [--out DIR]`, or
`--adapters-only` for a LoRA run's adapters in PEFT's layout (the formats merge them into the base)."""

from __future__ import annotations

import argparse

from rich.console import Console

from engine.jobs.rundir import RunDir
from engine.workspace import Workspace


def register(sub: argparse._SubParsersAction) -> None:
    from engine.export.common import DTYPES, FORMATS

    p = sub.add_parser(
        "export", help="export a run's checkpoint for transformers (hf), llama.cpp (gguf) or mlx-lm (mlx)",
        description="Writes runs/<id>/exports/<format>-<dtype>-step<N>/ (or --out DIR) atomically.",
    )
    p.add_argument("run", help="run id (a folder under runs/) or path")
    p.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    p.add_argument("--format", choices=FORMATS, help="hf, gguf or mlx (a LoRA run: adapters merged into its base)")
    p.add_argument("--adapters-only", action="store_true",
                   help="a LoRA run: only its adapters, in PEFT's layout (adapter_config.json + adapter_model.safetensors)")
    p.add_argument("--dtype", default="f32", choices=DTYPES, help="weights: f32 (default), f16, bf16, q8 (gguf, mlx)")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/<id>/exports/<format>-<dtype>-step<N>)")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from engine.errors import FcError
    from engine.export import export_adapters, export_run

    if bool(args.format) == bool(args.adapters_only):
        raise FcError("export: expected --format hf|gguf|mlx or --adapters-only (one of them)")
    ws = Workspace.open(args.workspace)
    run_dir = RunDir.resolve(ws, args.run).path
    console = Console()
    if args.adapters_only:
        res = export_adapters(run_dir, args.step, args.out)
        console.print(f"exported {res.run_id} step {res.step} adapters to {res.path}")
        console.print("files: " + ", ".join(res.files), highlight=False)
        console.print("load with: PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(<hf export of the base>), "
                      f"{str(res.path)!r})", highlight=False)
        return 0
    with console.status(f"exporting {run_dir.name} as {args.format} {args.dtype}..."):
        res = export_run(run_dir, args.format, args.dtype, args.step, args.out)
    console.print(f"exported {res.run_id} step {res.step} as {res.format} {res.dtype} to {res.path}")
    console.print("files: " + ", ".join(res.files), highlight=False)
    hint = {
        "hf": f"AutoModelForCausalLM.from_pretrained({str(res.path)!r})",
        "gguf": f"llama-cli -m {res.path / 'model.gguf'}",
        "mlx": f"mlx_lm.generate --model {res.path} --prompt ...",
    }[res.format]
    console.print(f"load with: {hint}", highlight=False)
    return 0
