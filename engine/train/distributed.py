"""Past one device: the process group torchrun starts, the model spread over it (DDP or FSDP2),
and the few collectives the trainer needs.

The supervisor launches `python -m torch.distributed.run --nproc-per-node N -m engine.train RUN`
for a stage with `devices` (x `nodes`) above 1; every process runs the same trainer and this
module tells them apart. With one process, `Parallel()` has no process group and every method is
the identity or a no-op, so the single-device trainer is what it was.

- Data: each rank draws its own micro batches of the one counter-based stream (`sequence_index`),
  so N ranks train the global batches one process would with N times the grad_accum.
- DDP: DistributedDataParallel, gradients all-reduced once per optimizer step (no_sync while
  accumulating). FSDP: `fully_shard` on every block and on the root, bf16 parameters and fp32
  gradient reduction when the stage trains in bf16; gradients are reduce-scattered every micro batch.
- Rank 0 alone writes events, checkpoints and evals. Control requests are read by rank 0 and sent
  to all (`agree`), so a mix or a stop acts before the same step everywhere. Evals and probes run
  on rank 0 alone, on the model (DDP) or on an unsharded copy it keeps (FSDP: one more model's
  weights on rank 0's device) while the other ranks wait at the next step.
- Checkpoints are full state dicts in the usual files: a sharded model is gathered to rank 0 to
  save and scattered back from the full tensors to load, so checkpoints move between 1 and N devices.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import os
import signal
import sys
from pathlib import Path
from typing import Any, ContextManager

import torch
import torch.distributed as dist

from engine.errors import RunError
from engine.train import checkpoint as ckpt

WORLD_ENV, RANK_ENV, LOCAL_RANK_ENV = "WORLD_SIZE", "RANK", "LOCAL_RANK"  # set by torchrun
TIMEOUT = datetime.timedelta(minutes=30)  # a rank waits this long for the others (rank 0's evals)
_PR_SET_PDEATHSIG = 1


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 when not launched by torchrun)."""
    return int(os.environ.get(RANK_ENV, "0") or 0)


def sequence_index(step: int, micro: int, grad_accum: int, micro_batch: int, rank: int = 0, world: int = 1) -> int:
    """The sampler index of the first sequence of micro batch `micro` (of `grad_accum`) of optimizer
    step `step` (from 1) on `rank` of `world`. Global micro batch g = (step - 1) * grad_accum * world
    + micro * world + rank, so one process with grad_accum x world draws the same sequences per step."""
    return (((step - 1) * grad_accum + micro) * world + rank) * micro_batch


class NoEvents:
    """The event writer of the ranks other than 0: rank 0 alone writes events.jsonl."""

    def write(self, type: str, **fields: Any) -> dict[str, Any]:
        return {"type": type, **fields}

    def __enter__(self) -> "NoEvents":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class Parallel:
    """The trainer's view of its processes: one (no process group), or the ranks torchrun started."""

    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0, strategy: str = "ddp",
                 cpu_group: Any = None) -> None:
        self.rank, self.world, self.local_rank = rank, world, local_rank
        self.strategy = strategy if world > 1 else "single"
        self._cpu_group = cpu_group  # gloo: small objects and flags, off the GPU's stream
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._tied: dict[str, str] = {}
        self._eval_copy: torch.nn.Module | None = None

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes events, checkpoints and evals."""
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.strategy == "fsdp"

    def describe(self, device_name: str) -> str:
        """The device as the status event says it: `cpu`, or `cuda:0 (...) x 8 (fsdp)`."""
        return device_name if self.world == 1 else f"{device_name} x {self.world} ({self.strategy})"

    # -- the model -----------------------------------------------------------------------------

    def wrap(self, model: torch.nn.Module, precision: str, compile_on: bool) -> torch.nn.Module:
        """Spread `model` over the ranks; returns the module to call in training (the model itself for
        one process and for FSDP, which shards it in place; a DDP wrapper around it for DDP). Compiles
        its blocks first when asked (compile_blocks)."""
        self._shapes, self._tied = ckpt.model_tensors_shapes(model), ckpt.tied_names(model)
        if compile_on:
            compile_blocks(model)
        if self.world == 1:
            return model
        if self.strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            on_gpu = next(model.parameters()).device.type == "cuda"
            # A model with a tower leaves it unused in a micro-batch without an image (and a frozen
            # part has no gradients at all): DDP must look for unused parameters every step.
            return DistributedDataParallel(model, device_ids=[self.local_rank] if on_gpu else None,
                                           gradient_as_bucket_view=True,
                                           find_unused_parameters=hasattr(model, "vision"))
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
            if precision in ("bf16", "fp8") else MixedPrecisionPolicy()
        # The mesh on the model's own device: left to itself FSDP takes the GPU whenever there is one,
        # and would move a stage that trains on the CPU there.
        mesh = init_device_mesh(next(model.parameters()).device.type, (self.world,))
        last = len(model.layers) - 1
        for i, block in enumerate(model.layers):
            # The last block's parameters are needed again at once by the backward: keep them gathered.
            fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=i < last)
        fully_shard(model, mesh=mesh, mp_policy=policy)
        return model

    def accumulating(self, wrapped: torch.nn.Module, last_micro: bool) -> ContextManager:
        """DDP skips its gradient all-reduce on all but the last micro batch of a step."""
        if self.strategy == "ddp" and not last_micro:
            return wrapped.no_sync()
        return contextlib.nullcontext()

    def clip_grads(self, params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
        """The gradients' total norm (over all shards), and clip to `max_norm` when > 0; what
        torch.nn.utils.clip_grad_norm_ does, with the norm of sharded gradients made whole."""
        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads)
        if hasattr(norm, "full_tensor"):  # a DTensor: each rank holds the norm of its shards
            norm = norm.full_tensor()
        if max_norm > 0:
            torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
        return norm

    # -- collectives ---------------------------------------------------------------------------

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over the ranks, in place (nothing to do for one process)."""
        if self.world > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def agree(self, requests: list, signal_name: str | None) -> tuple[list, str | None]:
        """Rank 0's control requests and any rank's stop signal, the same on every rank; called by all
        ranks before every step, so what they decide acts before the same step everywhere."""
        if self.world == 1:
            return requests, signal_name
        flags = torch.tensor([1 if requests else 0, signal.Signals[signal_name].value if signal_name else 0])
        dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self._cpu_group)
        if flags[0]:
            box = [requests if self.main else None]
            dist.broadcast_object_list(box, src=0, group=self._cpu_group)
            requests = box[0]
        return requests, signal.Signals(int(flags[1])).name if flags[1] else None

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier(group=self._cpu_group)

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()

    # -- full state dicts ------------------------------------------------------------------------

    def full_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
        """Weights and optimizer state on the CPU in the checkpoint files' layout, on rank 0 (empty
        elsewhere). Every rank must call it: a sharded model is gathered."""
        if not self.sharded:
            if not self.main:
                return {}, {}
            return ckpt.model_tensors(model), ckpt.optimizer_tensors(optimizer)
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        weights = get_model_state_dict(model, options=options)
        osd = get_optimizer_state_dict(model, optimizer, options=options)
        if not self.main:
            return {}, {}
        index = {name: i for i, name in enumerate(self._param_names(model, optimizer))}
        moments = {f"{index[name]}.{key}": t.detach().to("cpu").contiguous()
                   for name, state in osd["state"].items() for key, t in state.items()}
        return {n: weights[n].contiguous() for n in self._shapes}, moments

    def load_weights(self, where: Path, model: torch.nn.Module, device: torch.device) -> None:
        """A checkpoint's weights into the model (every rank reads the same files)."""
        if not self.sharded:
            return ckpt.load_weights(where, model, device)
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        full = ckpt.read_weights(where, self._shapes, device)
        full.update({name: full[source] for name, source in self._tied.items()})
        set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True))

    def load_optimizer(self, where: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                       device: torch.device) -> None:
        """A checkpoint's optimizer state into the optimizer (sharded like the parameters under FSDP)."""
        if not self.sharded:
            return ckpt.load_optimizer(where, optimizer, device)
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        names = self._param_names(model, optimizer)
        state = ckpt.read_optimizer(where, len(names), device)
        groups, k = [], 0
        for group in optimizer.param_groups:
            n = len(group["params"])
            groups.append({**{key: v for key, v in group.items() if key != "params"}, "params": names[k:k + n]})
            k += n
        full = {"state": {names[i]: s for i, s in state.items()}, "param_groups": groups}
        set_optimizer_state_dict(model, optimizer, full, options=StateDictOptions(full_state_dict=True))

    @staticmethod
    def _param_names(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
        """Parameter names in the optimizer's order (the index its state_dict and optim.pt use)."""
        names = {id(p): n for n, p in model.named_parameters()}
        return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]

    def eval_model(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module | None:
        """The whole model for rank 0's evals and probes (None on other ranks): the model itself, or
        under FSDP an unsharded copy refreshed from the gathered weights (every rank must call it)."""
        if not self.sharded:
            return model if self.main else None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        weights = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.main:
            return None
        if self._eval_copy is None:
            from engine.model.decoder import Transformer

            with torch.device(device):
                self._eval_copy = Transformer(model.cfg)
        self._eval_copy.load_state_dict(weights)
        return self._eval_copy


def lost_peer(exc: BaseException) -> bool:
    """Whether `exc` is a collective failing because another rank is gone (gloo's closed connection,
    a NCCL communicator error): the cause is that rank's, said in trainer.log by torchrun."""
    text = str(exc)
    return isinstance(exc, dist.DistBackendError) or any(
        words in text for words in ("Connection reset by peer", "Connection closed by peer", "Broken pipe"))


def start(stage: Any, origin: str) -> Parallel:
    """Join the process group torchrun started for this stage, or `Parallel()` for one process.
    The stage's devices x nodes must be the processes torchrun started (RunError otherwise)."""
    world = int(os.environ.get(WORLD_ENV, "1") or 1)
    if world != stage.world_size:
        raise RunError(
            f"{origin}.devices: the stage trains in {stage.world_size} processes (devices {stage.devices} x nodes "
            f"{stage.nodes}), but the trainer runs in {world} (start it through the queue or `fcwork train`, "
            "which launch torchrun as the stage says)")
    if world == 1:
        return Parallel()
    _die_with_parent()
    rank, local_rank = launched_rank(), int(os.environ.get(LOCAL_RANK_ENV, "0") or 0)
    cuda = stage.device == "cuda" or (stage.device == "auto" and torch.cuda.is_available())
    if stage.device == "auto" and not cuda and torch.backends.mps.is_available():
        raise RunError(f"{origin}.devices: expected 1 on MPS (a Mac has one GPU), got {stage.devices} "
                       "(device = \"cpu\" runs the ranks on the CPU)")
    if cuda and torch.cuda.is_available():  # (a "cuda" stage on a machine without: pick_device says so)
        if stage.devices > torch.cuda.device_count():
            raise RunError(f"{origin}.devices: expected at most the {torch.cuda.device_count()} CUDA GPUs this "
                           f"machine has, got {stage.devices}")
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", timeout=TIMEOUT, device_id=torch.device("cuda", local_rank))
        cpu_group = dist.new_group(backend="gloo", timeout=TIMEOUT)
    else:
        dist.init_process_group("gloo", timeout=TIMEOUT)
        cpu_group = None
    return Parallel(rank, world, local_rank, stage.strategy, cpu_group)


def _die_with_parent() -> None:
    """Linux: end with the torchrun launcher (SIGKILL when it dies). The launcher holds the run's
    trainer lock, so a free lock means no rank of the run is left training."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the launcher died before we asked
        os.kill(os.getpid(), signal.SIGKILL)


def compile_blocks(model: torch.nn.Module) -> None:
    """torch.compile each decoder block, as torchtitan does: the blocks share one compiled graph, so a
    24-layer model compiles in seconds instead of a minute, and runs as fast as compiled whole
    (bench/train_mfu.py); FSDP2 wants its units compiled this way too. A vision model's image_embeddings
    (patches, tower, projector) is compiled as one function: its kernels are small, and what it costs
    beyond them is host time, launches and the compiled wrappers' per call, so the fewer calls the
    better (bench/vision_stage.py, H100: one image a micro-batch 11% faster than with the encoder alone
    compiled; one process puts a step's images through it together, engine.train.image_window)."""
    for block in model.layers:
        block.compile()
    if getattr(model, "vision", None) is not None:
        model.image_embeddings = torch.compile(type(model).image_embeddings.__get__(model))
