"""Vision stages in the trainer: align (decoder frozen, tower + projector learn from captions) and
joint (everything, images mixed with text), per-part learning rates, caption loss in the step and
eval events, checkpoints holding the tower, and exact resume after SIGKILL with images."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import torch

from engine.errors import FcError
from engine.eval.probes.vision import fen_squares, square_accuracy
from engine.jobs.rundir import RunDir
from engine.profile import loads_profile
from tests.train_fixtures import (
    ENGINE_ROOT, events_of, kill, log_tail, make_run, start_trainer, step_losses, train_here, wait_for,
)

MODEL = ("{ dim = 32, n_layers = 2, n_heads = 2, n_kv_heads = 1, ffn_dim = 64, max_seq_len = 64, "
         "vision_layers = 1, vision_width = 16, vision_heads = 2, vision_mlp_dim = 32, image_size = 16, "
         "patch_size = 4 }")
COMMON = f"""model = {MODEL}
seq_len = 48
lr = 3e-3
warmup_steps = 1
device = "cpu"
precision = "fp32"
compile = "off"
eval_batches = 2
keep_checkpoints = 4
seed = 11
"""
STAGES = f"""
[[stages]]
name = "align"
{COMMON}micro_batch = 1
grad_accum = 2
max_steps = 6
lr_decoder = 0
checkpoint_every = 3
eval_every = 6
[stages.mix]
caption = 1

[[stages]]
name = "joint"
{COMMON}micro_batch = 2
grad_accum = 2
max_steps = 8
lr_vision = 1e-3
checkpoint_every = 2
eval_every = 4
eval_probes = false
[stages.mix]
code = 0.3
science = 0.2
caption = 0.5
"""
SOURCES = """
[[sources]]
name = "charts"
domain = "caption"
format = "builtin:charts"
max_docs = 60

[[sources]]
name = "boards"
domain = "caption"
format = "builtin:chess-diagrams"
max_docs = 60
"""


@pytest.fixture(scope="module")
def vision_workspace(train_workspace):
    """The trainer fixture's workspace with image-text sources built at the tower's 16 px."""
    from engine.data.imagedata import prepare_images

    tw = train_workspace
    text = tw.profile.path.read_text().replace("chess = 0.2", "chess = 0.2\ncaption = 0")
    text = text.replace("[tokenizer]", "[data]\nimage_size = 16\nheldout_fraction = 0.15\n\n[tokenizer]") + SOURCES + STAGES
    path = tw.profile.path
    path.write_text(text)
    prof = loads_profile(text, str(path), path)
    prepare_images(tw.ws, prof)
    tw.profile = prof
    return tw


def _weights(run, step):
    from safetensors.torch import load_file

    return load_file(str(run / "ckpt" / f"step-{step}" / "model.safetensors"))


def test_align_trains_tower_and_projector_only_and_reports_caption_loss(vision_workspace):
    run = make_run(vision_workspace, "align")
    assert train_here(run) == 0, log_tail(run)
    first, last = _weights(run, 3), _weights(run, 6)
    assert any(k.startswith("vision.encoder") for k in last) and "projector.linear_2.weight" in last
    for name, t in last.items():
        moved = not torch.equal(t, first[name])
        if name.startswith(("vision.", "projector.")) and "post_layernorm" not in name:
            assert moved, name
        else:
            assert not moved, name  # the frozen decoder (and the unused post_layernorm) stay as they were
    steps = events_of(run, "step")
    assert set(steps[-1]["domain_loss"]) == {"caption"}
    evals = events_of(run, "eval")
    assert evals and evals[-1]["domain_loss"]["caption"] > 0 and evals[-1]["domain_bpb"]["caption"] > 0
    probes = evals[-1]["probes"]  # read off held-out boards and charts, checked against their ground truth
    assert 0 <= probes["fen"]["square_accuracy"] <= 1 and 0 <= probes["chart"]["exact"] <= 1
    assert 0 <= probes["fen"]["blind"] <= 1 and 0 <= probes["chart"]["blind"] <= 1  # the same on a blank image
    _generate_with_an_image(vision_workspace, run)
    # `fcwork eval` scores the same: caption bits per byte beside the text domains, and the image probes.
    from engine.eval.harness import EvalLimits, eval_run

    rec = eval_run(run, limits=EvalLimits(bpb_docs=4, samples=0, chess=2, code=2, data=2, science=2), save=False)
    assert rec["metrics"]["domain_bpb"]["caption"] > 0 and "code" in rec["metrics"]["domain_bpb"]
    assert {"fen", "chart"} <= set(rec["metrics"]["probes"]) and rec["probe_versions"]["vision"] == 1


def _generate_with_an_image(tw, run):
    """`fcwork generate RUN --image FILE PROMPT` gives what the model gives in this process."""
    from PIL import Image

    from engine.data.tokenizer import Tokenizer
    from engine.model.generate import SamplingConfig, generate
    from fcwork.commands.generate import image_prompt
    from tests.eval_fixtures import load_run_model

    picture = run / "board.png"
    Image.new("RGB", (40, 24), (200, 30, 30)).save(picture)
    model, tok = load_run_model(run), Tokenizer.load(tw.tokenizer_path)
    ids, pixels = image_prompt(model, tok, "FEN:", str(picture))
    assert ids[:16] == [model.image_token_id] * 16 and len(ids) > 16
    want = tok.decode(generate(model, ids, SamplingConfig(6), images=pixels).tokens)
    cli = [sys.executable, "-m", "fcwork.cli", "--workspace", str(tw.ws.root), "generate", run.name, "FEN:",
           "--image", str(picture), "-n", "6", "-t", "0", "--device", "cpu"]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=300, cwd=ENGINE_ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip("\n") == want.rstrip("\n")
    with pytest.raises(FcError, match=r"^--image .*none\.png: cannot read \(No such file or directory\)$"):
        image_prompt(model, tok, "FEN:", str(run / "none.png"))
    (run / "notes.png").write_text("not an image")
    with pytest.raises(FcError, match=r"notes\.png: not an image \(expected a PNG, JPEG"):
        image_prompt(model, tok, "FEN:", str(run / "notes.png"))


def test_joint_mixes_text_and_images_and_resumes_exactly_after_sigkill(vision_workspace):
    reference = make_run(vision_workspace, "joint")
    assert train_here(reference) == 0, log_tail(reference)
    assert "images through the tower together, up to 16 at a time" in reference.joinpath("trainer.log").read_text()
    ref = step_losses(reference)
    domains = set().union(*(e["domain_loss"] for e in events_of(reference, "step")))
    assert {"caption", "code"} <= domains
    assert set(events_of(reference, "eval")[-1]["domain_loss"]) >= {"caption", "code", "science"}
    # The Metrics pane draws from this fold: caption's training and held-out curves beside the text domains'.
    history = RunDir(reference).history()
    assert "caption" in history.domains() and {"loss/caption", "eval/caption", "loss/code"} <= set(history.series)

    run = make_run(vision_workspace, "joint")
    proc = start_trainer(run)
    wait_for(lambda: (run / "ckpt" / "step-4").exists(), 120, "checkpoint 4")
    kill(proc)
    assert proc.returncode == -signal.SIGKILL
    assert train_here(run) == 0, log_tail(run)
    assert step_losses(run) == ref
    final, expected = _weights(run, 8), _weights(reference, 8)
    assert all(torch.equal(final[k], expected[k]) for k in expected)


def test_fen_square_accuracy_counts_each_square():
    start = "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR"
    assert square_accuracy(start, start) == 1.0
    assert square_accuracy("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR", start) == 62 / 64
    assert square_accuracy("rnbqkbnr/pppp", start) == 12 / 64  # cut short: the squares it wrote still count
    assert square_accuracy("not a board", start) == 0.0
    assert fen_squares("8/8/8/8/8/8/8/9") is None and fen_squares(start)[36] == "P"
