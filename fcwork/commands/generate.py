"""`fcwork generate RUN [PROMPT]`: continue a prompt (or answer it, with --chat) with a run's
checkpoint, streaming the text as it is generated; `--image FILE` shows the model an image first
(a run whose checkpoint has a vision tower)."""

from __future__ import annotations

import argparse
import sys
import time

from rich.console import Console

from engine.errors import FcError
from engine.jobs.rundir import RunDir
from engine.workspace import Workspace


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate", help="continue a prompt with a run's checkpoint (KV cache, streamed)",
        description="Prints the continuation as it is generated; a summary line (tokens, tokens/s, why it "
                    "stopped) goes to stderr. A prompt of '-' is read from stdin.",
    )
    p.add_argument("run", help="run id (a folder under runs/) or path")
    p.add_argument("prompt", help="text to continue, or - to read it from stdin")
    p.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    p.add_argument("--image", metavar="FILE",
                   help="an image (PNG, JPEG, ...) put at <image> in the prompt, else before it (vision runs)")
    p.add_argument("--chat", action="store_true",
                   help="wrap the prompt as a user turn and stop at the end of the assistant's turn")
    p.add_argument("--system", default="", help="with --chat: a system turn first")
    p.add_argument("-n", "--max-new-tokens", type=int, default=128, help="at most this many tokens (default 128)")
    p.add_argument("-t", "--temperature", type=float, default=0.8, help="0 is greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=40, help="sample from the k most likely (0: all; default 40)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus cut (1: none; default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"),
                   help="where to run (default auto: as for fcwork eval)")
    p.set_defaults(func=cmd_generate)


def read_prompt(arg: str) -> str:
    """The prompt argument, or stdin for '-' (refusing an interactive terminal with nothing typed)."""
    if arg != "-":
        return arg
    if sys.stdin.isatty():
        raise FcError("prompt: '-' reads stdin, which is a terminal here (e.g. echo 'def f(' | fcwork generate RUN -)")
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FcError(f"prompt: stdin is not UTF-8 text ({exc.reason} at byte {exc.start:,}: "
                      f"{data[exc.start:exc.start + 4]!r})") from None


def cmd_generate(args: argparse.Namespace) -> int:
    from engine.data.chat_template import END, chat_prompt
    from engine.model.generate import SamplingConfig, TextStream, generate
    from engine.eval.run_model import find_checkpoint, load_model, load_tokenizer
    from engine.data.tokenizer import EOS_ID
    from fcwork.commands.eval import eval_device

    ws = Workspace.open(args.workspace)
    run_dir = RunDir.resolve(ws, args.run).path
    text = read_prompt(args.prompt)
    if args.system and not args.chat:
        raise FcError("--system: expected together with --chat")
    cfg = SamplingConfig(args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.seed)
    cfg.check()
    err = Console(stderr=True)
    device = eval_device(ws, args.device, err)
    ckpt = find_checkpoint(run_dir, args.step)
    tok = load_tokenizer(ckpt)
    model = load_model(ckpt, device)
    prompt = chat_prompt(text, args.system) if args.chat else text
    ids = [EOS_ID, *tok.encode(prompt)]  # EOS: the document boundary the model saw before every text
    images = None
    if args.image:
        ids, images = image_prompt(model, tok, prompt, args.image)
    stop_ids = [EOS_ID]
    if args.chat:
        stop_ids += [i for i in tok.encode(END) if tok.decode([i]) == END]
    stream = TextStream(tok.decode)

    def show(token: int) -> None:
        sys.stdout.write(stream.add(token))
        sys.stdout.flush()

    start = time.perf_counter()
    out = generate(model, ids, cfg, stop_ids=stop_ids, on_token=show, images=images)
    seconds = time.perf_counter() - start
    sys.stdout.write(stream.flush() + ("\n" if not stream.shown.endswith("\n") else ""))
    sys.stdout.flush()
    why = {"eos": "end of text", "length": "--max-new-tokens", "context": "the model's context is full"}.get(
        out.reason, out.reason)
    if args.chat and out.reason == "eos":
        why = "end of turn"
    err.print(f"[dim]{ckpt.spec.run_id} step {ckpt.step} on {device}: {len(out.tokens)} tokens in {seconds:.2f} s "
              f"({len(out.tokens) / max(seconds, 1e-9):.1f} tok/s), {out.prompt_tokens} prompt tokens; "
              f"stopped at {why}[/]", highlight=False)
    return 0


def image_prompt(model, tok, prompt: str, path: str):
    """(token ids, pixel values) of a prompt with an image: the image's positions at `<image>` in the
    prompt, else first (as the image-text pairs were trained: image, then caption). The image is
    letterboxed to the tower's size as the image shards were."""
    from pathlib import Path

    import torch

    from engine.data.imagesources import decode_image
    from engine.data.tokenizer import EOS_ID
    from engine.eval.run_model import IMAGE_PIECE
    from engine.model.multimodal import expand_image_tokens
    from engine.model.vision import to_pixels

    if not hasattr(model, "image_token_id"):
        raise FcError(f"--image {path}: this run's checkpoint has no vision tower (train an align or joint stage)")
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise FcError(f"--image {path}: cannot read ({exc.strerror})") from None
    pixels = decode_image(data, model.cfg.image_size, 100_000_000)
    if isinstance(pixels, str):
        raise FcError(f"--image {path}: {pixels} (expected a PNG, JPEG, WebP or other image Pillow reads)")
    image_id, n = model.image_token_id, model.cfg.image_tokens
    ids = tok.encode(prompt)
    if ids.count(image_id) > 1:
        raise FcError(f"prompt: {IMAGE_PIECE} appears {ids.count(image_id)} times; one --image fills one")
    ids = [EOS_ID, *ids] if image_id in ids else [image_id, *ids]
    return expand_image_tokens(ids, image_id, n), to_pixels(torch.from_numpy(pixels.copy())[None])
