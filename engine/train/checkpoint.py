"""Checkpoints: `ckpt/step-<N>/` with model.safetensors, optim.pt (tensors only) and state.json.

A checkpoint is written into `ckpt/.step-<N>.tmp/`, state.json last, then renamed into place, so
a kill at any moment leaves every earlier checkpoint whole and no half-written one that looks
complete. Loading never unpickles objects: safetensors for the weights, `torch.load(...,
weights_only=True)` of a flat {name: tensor} dict for the optimizer, JSON for the rest.

Before writing, the free space is checked against the size of the last checkpoint (or of the
tensors, for the first): a full disk fails with one line saying so, never with a half-written
folder left behind.

Debugging knob: FCWORK_CKPT_WRITE_DELAY=<seconds> sleeps between writing the weights and the
optimizer state, to widen the window in which a kill lands mid-checkpoint (used by the tests).
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from engine.atomic import atomic_write_text, fsync_dir, fsync_path
from engine.errors import FcError, ModelError, RunError
from engine.jobs.rundir import CKPT_PREFIX, CKPT_STATE, RunDir

MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optim.pt"
WRITE_DELAY_ENV = "FCWORK_CKPT_WRITE_DELAY"
SPACE_MARGIN = 16 << 20  # left free for events, logs and the queue after a checkpoint


class NoSpaceError(FcError):
    """The disk cannot hold the next checkpoint (a user's problem: free space, then resume)."""


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state on the CPU, each storage once (a tied lm head is saved as the embedding)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in model.state_dict().items():
        key = t.untyped_storage().data_ptr() if t.device.type != "meta" else id(t)
        if key in seen:
            continue
        seen.add(key)
        out[name] = t.detach().to("cpu").contiguous()
    return out


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter state as a flat {"<param index>.<key>": tensor} dict."""
    flat: dict[str, torch.Tensor] = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                value = torch.tensor(value)
            flat[f"{index}.{key}"] = value.detach().to("cpu").contiguous()
    return flat


def save_checkpoint(
    ckpt_root: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
    state: dict[str, Any], keep: int,
) -> Path:
    """Write checkpoint `step` atomically, then delete all but the newest `keep`; returns its folder.
    Refuses (NoSpaceError) when the disk cannot hold it, and never leaves its temp folder behind."""
    return write_checkpoint(ckpt_root, step, model_tensors(model), optimizer_tensors(optimizer), state, keep)


def write_checkpoint(
    ckpt_root: Path, step: int, weights: dict[str, torch.Tensor], moments: dict[str, torch.Tensor],
    state: dict[str, Any], keep: int,
) -> Path:
    """`save_checkpoint` of tensors already on the CPU in the files' layout (`model_tensors` and
    `optimizer_tensors`, or the same gathered from the ranks of a sharded model)."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"{CKPT_PREFIX}{step}"
    tmp = ckpt_root / f".{CKPT_PREFIX}{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    need = _expected_bytes(ckpt_root, [weights, moments])
    free = shutil.disk_usage(ckpt_root).free
    if free < need + SPACE_MARGIN:
        raise NoSpaceError(_no_space(ckpt_root, need, free))
    try:
        tmp.mkdir()
        save_file(weights, str(tmp / MODEL_FILE), metadata={"step": str(step)})
        delay = float(os.environ.get(WRITE_DELAY_ENV, "0") or 0)
        if delay > 0:
            time.sleep(delay)
        torch.save(moments, tmp / OPTIM_FILE)
        (tmp / CKPT_STATE).write_text(json.dumps(state, separators=(",", ":")) + "\n", encoding="utf-8")
        for name in (MODEL_FILE, OPTIM_FILE, CKPT_STATE):
            fsync_path(tmp / name)
        fsync_dir(tmp)
    except (OSError, RuntimeError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_no_space(exc):
            raise NoSpaceError(_no_space(ckpt_root, need, shutil.disk_usage(ckpt_root).free)) from None
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(ckpt_root)
    for _, old in RunDir(ckpt_root.parent).checkpoints()[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _expected_bytes(ckpt_root: Path, tensor_sets: list[dict[str, torch.Tensor]]) -> int:
    """The size of the newest complete checkpoint, or of the tensors to write when there is none."""
    done = RunDir(ckpt_root.parent).checkpoints()
    if done:
        with_files = [p for p in done[-1][1].iterdir() if p.is_file()]
        return sum(p.stat().st_size for p in with_files)
    return sum(t.numel() * t.element_size() for tensors in tensor_sets for t in tensors.values()) + (64 << 10)


def is_no_space(exc: BaseException) -> bool:
    """ENOSPC, or torch's and safetensors' words for a write that ran out of room."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left" in text or "unexpected pos" in text or "file write failed" in text


def _no_space(path: Path, need: int, free: int) -> str:
    mount = Path(path).resolve()
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    return (f"{path}: no space left on {mount} for a checkpoint of {_size(need)} (free: {_size(max(free, 0))}); "
            "free some space, then resume the stage")


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def remove_partial(ckpt_root: Path) -> list[Path]:
    """Delete temp folders a killed checkpoint write left behind; returns what was removed."""
    removed = []
    if ckpt_root.is_dir():
        for p in ckpt_root.iterdir():
            if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def update_state(ckpt: Path, changes: dict[str, Any]) -> None:
    """Rewrite fields of a checkpoint's state.json atomically (a stop request acted on right after
    the checkpoint of the same step must be recorded in it, or a resume would act on it again)."""
    state = read_state(ckpt)
    state.update(changes)
    atomic_write_text(ckpt / CKPT_STATE, json.dumps(state, separators=(",", ":")) + "\n")


def read_state(ckpt: Path) -> dict[str, Any]:
    """A checkpoint's state.json."""
    path = ckpt / CKPT_STATE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path}: missing (not a complete checkpoint)") from None
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: unreadable checkpoint state ({exc})") from None
    if not isinstance(state, dict):
        raise RunError(f"{path}: expected a JSON object")
    return state


def load_weights(ckpt: Path, model: torch.nn.Module, device: torch.device | str = "cpu") -> None:
    """Load model.safetensors into `model`, refusing a missing, extra or misshapen tensor (ModelError)."""
    tensors = read_weights(ckpt, model_tensors_shapes(model), device)
    missing, _ = model.load_state_dict(tensors, strict=False)
    untied = [m for m in missing if m not in _tied_names(model)]
    if untied:
        raise ModelError(f"{ckpt / MODEL_FILE}: {untied[0]}: missing")


def read_weights(ckpt: Path, expected: dict[str, tuple[int, ...]], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """model.safetensors as tensors, checked against `expected` names and shapes (`model_tensors_shapes`
    of the model they are for): a missing, extra or misshapen tensor is a ModelError."""
    path = ckpt / MODEL_FILE
    try:
        tensors = load_file(str(path), device=str(device))
    except FileNotFoundError:
        raise ModelError(f"{path}: missing") from None
    except Exception as exc:  # safetensors raises its own error types for a damaged file
        raise ModelError(f"{path}: not a readable safetensors file ({exc})") from None
    for name, shape in expected.items():
        if name not in tensors:
            raise ModelError(f"{path}: {name}: missing (the checkpoint is of another model shape)")
        got = tuple(tensors[name].shape)
        if got != shape:
            raise ModelError(f"{path}: {name}: shape {list(got)} does not match the model's {list(shape)}")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise ModelError(f"{path}: {extra[0]}: not a tensor of this model (the checkpoint is of another model shape)")
    return tensors


def model_tensors_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """The names and shapes that `model_tensors` saves for this model."""
    tied = _tied_names(model)
    return {n: tuple(t.shape) for n, t in model.state_dict().items() if n not in tied}


def tied_names(model: torch.nn.Module) -> dict[str, str]:
    """{name: the name it is saved under} of the tensors that share another's storage (a tied lm head)."""
    first: dict[int, str] = {}
    tied = {}
    for name, t in model.state_dict().items():
        key = t.untyped_storage().data_ptr()
        if key in first:
            tied[name] = first[key]
        first.setdefault(key, name)
    return tied


def _tied_names(model: torch.nn.Module) -> set[str]:
    return set(tied_names(model))


def load_optimizer(ckpt: Path, optimizer: torch.optim.Optimizer, device: torch.device | str = "cpu") -> None:
    """Load optim.pt (a flat dict of tensors, read with weights_only=True) into `optimizer`."""
    current = optimizer.state_dict()
    state = read_optimizer(ckpt, sum(len(g["params"]) for g in current["param_groups"]), device)
    optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})


def read_optimizer(ckpt: Path, n_params: int, device: torch.device | str = "cpu") -> dict[int, dict[str, torch.Tensor]]:
    """optim.pt as {parameter index: {key: tensor}}; RunError when unreadable or for more than `n_params`
    parameters. Indices count the optimizer's parameters group after group, as its state_dict does."""
    path = ckpt / OPTIM_FILE
    try:
        flat = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise RunError(f"{path}: missing (not a complete checkpoint)") from None
    except Exception as exc:
        raise RunError(f"{path}: unreadable optimizer state ({exc})") from None
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in flat.items():
        index, _, key = name.partition(".")
        state.setdefault(int(index), {})[key] = tensor
    if len(state) and max(state) >= n_params:
        raise RunError(f"{path}: optimizer state for parameter {max(state)}, but the model has fewer")
    return state


# -- random number generators as JSON --------------------------------------------------------

def rng_state() -> dict[str, Any]:
    """torch (and CUDA), numpy and Python RNG states as JSON-able lists."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state().tolist(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` saved."""
    if "torch" in state:
        torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "numpy" in state:
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])
