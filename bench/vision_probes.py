"""Image probes of a trained vision run against an untrained model of the same config, and blind.

Loads a run's latest checkpoint and scores the image probes (engine.eval.probes.vision: FEN per-square
accuracy on held-out board diagrams, exact chart values) three ways on the same held-out items: the
trained weights on the images, the same weights on a blank image (`blind`: the decoder's prior
alone), and a freshly initialised model of the run's config (seed 0: what training started from
before any stage). Prints each score, the trained/untrained and trained/blind differences, the
device and the seconds; then the trained model's caption loss (nats per caption token) on the
held-out pairs with each pair's own image, a blank one and another pair's: a tower that is read
gives the lowest loss with the pair's own image.

    flock /tmp/bench.lock .venv/bin/python bench/vision_probes.py RUN_DIR [--limit 16] [--device cpu]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine.data.imagesampler import image_row  # noqa: E402
from engine.eval.probes.vision import caption_kind, image_probes, masked_targets, open_image_pairs, read_meta  # noqa: E402
from engine.model.vision import to_pixels  # noqa: E402
from engine.eval.run_model import find_checkpoint, image_token_id, load_model, load_tokenizer  # noqa: E402
from engine.model.multimodal import VisionLanguageModel  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--device", default="cpu")
    p.add_argument("--limit", type=int, default=16, help="held-out boards and charts scored (each)")
    args = p.parse_args()
    ckpt = find_checkpoint(args.run_dir)
    tok = load_tokenizer(ckpt)
    pairs = open_image_pairs(ckpt.spec, heldout=True)
    if not pairs:
        sys.exit(f"{args.run_dir}: no held-out image-text pairs")
    start = time.perf_counter()
    model = load_model(ckpt, args.device)
    trained = image_probes(model, tok, pairs, ckpt.spec.images, args.limit)
    torch.manual_seed(0)
    with torch.device(args.device):
        fresh = VisionLanguageModel(ckpt.spec.model, image_token_id(tok, ckpt.spec.tokenizer)).eval()
    untrained = image_probes(fresh, tok, pairs, ckpt.spec.images, args.limit)
    seconds = time.perf_counter() - start
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{platform.machine()} cpu"
    print(f"{ckpt.spec.run_id} step {ckpt.step} ({ckpt.spec.stage.name}), {device}, {seconds:.1f} s")
    print(f"{'probe':<24} {'items':>5} {'trained':>8} {'blind':>8} {'untrained':>9} {'-untrained':>10} {'-blind':>8}")
    for name, metric in (("fen", "square_accuracy"), ("chart", "exact")):
        if name not in trained:
            continue
        t, u = trained[name], untrained[name]
        print(f"{name + ' ' + metric:<24} {t['n']:>5} {t[metric]:>8.3f} {t['blind']:>8.3f} {u[metric]:>9.3f} "
              f"{t[metric] - u[metric]:>+10.3f} {t[metric] - t['blind']:>+8.3f}")
    losses = caption_losses(model, pairs, ckpt.spec, tok.eos_id, args.device)
    print(f"\ncaption loss by the image given {'pairs':>6} {'own':>7} {'blank':>7} {'other':>7}")
    for kind, by_image in losses.items():
        n = len(by_image["own"])
        print(f"{kind:<30} {n:>6} " + " ".join(f"{sum(v) / n:>7.3f}" for v in by_image.values()))
    return 0


def caption_losses(model, pairs: dict, spec, eos_id: int, device: str) -> dict[str, dict[str, list[float]]]:
    """{caption kind: {"own" | "blank" | "other": [nats per caption token of each held-out pair]}};
    kinds: fen, chart, sentence (a diagram's sentence)."""
    out: dict[str, dict[str, list[float]]] = {}
    with torch.no_grad():
        for domain, side in pairs.items():
            meta = read_meta(spec.images, domain)
            for p in range(side.n_pairs):
                rec = meta[p] if p < len(meta) else {}
                kind = caption_kind(rec)
                row, mask, _ = image_row(side, p, spec.stage.seq_len, model.image_token_id, model.cfg.image_tokens,
                                         eos_id)
                x = torch.as_tensor(row[None]).to(device)
                own = torch.from_numpy(side.image(p).copy())[None]
                other = torch.from_numpy(side.image((p + side.n_pairs // 2) % side.n_pairs).copy())[None]
                for name, image in (("own", own), ("blank", torch.full_like(own, 128)), ("other", other)):
                    per_token = model.loss(x[:, :-1], masked_targets(x, mask[None]), "none",
                                           images=to_pixels(image).to(device))
                    out.setdefault(kind, {"own": [], "blank": [], "other": []})[name].append(
                        float(per_token.sum()) / max(int(mask.sum()), 1))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
