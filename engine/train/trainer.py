"""The training loop of one run: read the frozen stage, resume or initialise, train, report, stop.

Components do the work (device, data, checkpoint, lr_schedule, evaluate, watch, distributed); this
file wires them and keeps the loop short. Everything that matters is in RUN_DIR: stage.toml in,
events.jsonl and ckpt/ out, requests/ watched. Launched by torchrun, every rank runs this loop on its
share of each step's micro batches and rank 0 alone writes (engine/train/distributed.py). `main` maps the outcome to the exit code the supervisor
reads: 0 finished or stopped, 2 a user/config error, 1 a crash.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import traceback
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.errors import DataError, FcError, RunError, differing_prefixes
from engine.eval.harness import EvalLimits, evaluate_for_run, load_heldout, probe_docs
from engine.eval.probes.vision import caption_eval
from engine.jobs.events import EventWriter
from engine.jobs.control import ControlRequest, request_path
from engine.jobs.protocol import EXIT_OK, EXIT_USER_ERROR, Answer, Event, MixPolicy, RunState, Source
from engine.jobs.rundir import RunDir
from engine.jobs.spec import RunSpec
from engine.mix import normalise
from engine.data.chat_template import ASSISTANT, END, SYSTEM, USER
from engine.data.sampler import ChatIds, MixSchedule, Sampler
from engine.data.tokenizer import Tokenizer
from engine.train import checkpoint as ckpt
from engine.train import distributed
from engine.train import images as vision
from engine.train.image_window import ImageWindow
from engine.train.data import heldout_windows, open_training_shards, window_bytes
from engine.train.device import DeviceInfo, eager, pick_device
from engine.train.evaluate import evaluate
from engine.train.lr_schedule import lr_at, schedule_info
from engine.train.suggest import AutoMix, Bounds, PolicyState, suggest
from engine.train.watch import ControlWatcher, Rejected, StopSignals
from engine.model.info import IMAGES_AT_ONCE, train_flops
from engine.model.transfer import to_device
from engine.model.lora import trainable_counts

log = logging.getLogger("fcwork.trainer")
THREADS_ENV = "FCWORK_TRAIN_THREADS"   # pin torch's CPU threads (same value => same sums => exact resume)
EXIT_CRASH = 1  # an uncaught exception: the supervisor restarts the trainer


class Trainer:
    """One run's training state and the loop over it."""

    def __init__(self, run_dir: Path, events: EventWriter) -> None:
        self.run_dir = run_dir
        self.run = RunDir(run_dir)
        self.events = events
        self.spec: RunSpec | None = None
        self.dev: DeviceInfo | None = None
        self.par = distributed.Parallel()
        self.step = 0
        self.stop_reason = ""

    # -- status -------------------------------------------------------------------------

    def status(self, state: str, message: str = "", exit_code: int | None = None) -> None:
        """A status event; a final one says the exit code (torchrun's own says only that a rank failed)."""
        fields: dict[str, Any] = {
            "state": state, "step": self.step, "max_steps": self.spec.stage.max_steps if self.spec else 0,
            "pid": os.getpid(), "device": self.par.describe(self.dev.name) if self.dev else "",
        }
        if message:
            fields["message"] = message
        if exit_code is not None:
            fields["exit_code"] = exit_code
        self.events.write(Event.STATUS, **fields)

    # -- setup --------------------------------------------------------------------------

    def setup(self) -> None:
        """Everything before the first step; a problem here is the user's (exit 2) unless it is a bug."""
        self.signals = StopSignals()  # first: a SIGTERM during a slow start-up still stops cleanly
        self.spec = spec = self.run.spec()
        st = spec.stage
        self.par = distributed.start(st, origin=f"{self.run.stage_file}: stage")  # first: it picks the GPU
        self.dev = pick_device(st.device, st.precision, origin=f"{self.run.stage_file}: stage")
        done = self.run.checkpoints()
        self.step = done[-1][0] if done else 0
        self.status(RunState.STARTING)
        # Exact resume on the CPU needs the same reduction order: a fixed thread count. The CPU ops
        # used here are deterministic as they are; torch.use_deterministic_algorithms would add
        # ~3 s of start-up (it imports torch._inductor) for nothing.
        threads = int(os.environ.get(THREADS_ENV, "0") or 0)
        if threads > 0:
            torch.set_num_threads(threads)
        shards = self.build_data()
        compile_on = st.compile == "on" or (st.compile == "auto" and self.dev.type == "cuda")
        self.build_model(compile_on)
        origin, last_request = self.restore(done)
        self.chat = chat_ids(Tokenizer.load(spec.tokenizer)) if st.sft else None
        if spec.image_domains:
            tok = Tokenizer.load(spec.tokenizer)
            self.sampler = vision.ImageBatches(spec, shards, self.schedule, self.model.image_token_id, tok.eos_id)
        else:
            self.sampler = vision.TextBatches(Sampler(shards, st.seq_len, st.seed, self.schedule), self.chat)
        self.domain_names = list(self.sampler.domains)  # domain ids index this list
        # Rank 0 reads the requests and hands them to the others (check_control).
        self.watcher = ControlWatcher(self.run.requests_dir, spec.domains, last_request) if self.par.main else None
        # One process puts a step's images through the tower together (engine.train.image_window); under
        # DDP and FSDP the ranks' gradients are reduced inside the last micro-batch's backward, so each
        # micro-batch takes its own image there.
        self.windowed = bool(spec.image_domains) and self.par.world == 1
        if spec.image_domains:
            log.info("images through the tower %s", f"together, up to {IMAGES_AT_ONCE} at a time" if self.windowed
                     else "one a micro-batch (several processes)")
        trainable, total = trainable_counts(self.model)
        log.info("run %s: stage %s, %s params (%s trainable), %s on %s (%s), compile %s", spec.run_id, st.name,
                 f"{total:,}", f"{trainable:,}", origin, self.par.describe(self.dev.name), self.dev.precision,
                 "on" if compile_on else "off")
        self.status(RunState.RUNNING, origin)

    def build_data(self) -> dict:
        """Training shards (checked against the run's tokenizer) and the fixed held-out windows."""
        spec, st = self.spec, self.spec.stage
        shards = open_training_shards(spec.shards, spec.text_domains, spec.tokenizer_hash, spec.model.vocab_size)
        self.eval_windows, self.eval_bytes, self.probe_text, self.eval_pairs = {}, None, {}, {}
        if st.eval_every:
            self.eval_windows = heldout_windows(spec.shards, spec.text_domains, spec.tokenizer_hash,
                                                spec.model.vocab_size, st.seq_len, st.eval_batches * st.micro_batch)
            if spec.image_domains:
                self.eval_pairs = vision.open_image_pairs(spec, heldout=True)
            self.eval_bytes = window_bytes(self.eval_windows, spec.tokenizer) if self.eval_windows else None
            if st.eval_probes and self.par.main:
                # Rows per forward as in a training micro batch: the memory the stage already budgets for.
                self.probe_limits = replace(EvalLimits.during_training(), batch=min(8, st.micro_batch))
                self.probe_text = load_heldout(spec.shards, spec.text_domains, probe_docs(self.probe_limits))
                self.probe_tokenizer = Tokenizer.load(spec.tokenizer) if self.probe_text else None
        self.tokens_per_step = st.micro_batch * st.grad_accum * self.par.world * st.seq_len
        return shards

    def build_model(self, compile_on: bool) -> None:
        """The model (seeded, so every rank builds the same), spread over the ranks (`self.net` is what
        a training step calls), its optimizer, and the FLOPs per token that MFU is measured against."""
        from engine.model.decoder import Transformer

        cfg, st = self.spec.model, self.spec.stage
        torch.manual_seed(st.seed)
        if self.spec.image_domains:
            self.model = vision.build_model(self.spec, self.dev.device)
        else:
            with torch.device(self.dev.device):
                self.model = Transformer(cfg)
        self.lora = None
        if st.lora_rank:  # the base weights before the adapters, so every rank wraps the same model
            from engine.model.lora import LoraSpec, apply_lora

            self.lora = LoraSpec(st.lora_rank, st.lora_alpha, st.lora_dropout, tuple(st.lora_targets))
            self.load_base(self.spec.init_from)
            apply_lora(self.model, self.lora)
        self.model.set_activation_checkpointing(st.activation_checkpointing)
        if self.dev.precision == "fp8":
            from engine.train.fp8 import convert_to_fp8

            log.info("fp8 (%s): %d linears in float8", st.fp8_recipe, convert_to_fp8(self.model, st.fp8_recipe))
        self.net = self.par.wrap(self.model, self.dev.precision, compile_on)
        self.optimizer = build_optimizer(self.model, st, self.dev)
        # The decoder's per token, the tower's per image: counting the tower's weights every token
        # overstated fc450 joint's MFU by a fifth.
        trained = {part: any(p.requires_grad for p in params)
                   for part, params in vision.part_params(self.model).items()}
        self.flops_per_token, self.flops_per_image = train_flops(cfg, st.seq_len, trained["vision"],
                                                                 trained["projector"])
        self.images_seen = 0  # images trained on by every rank, for MFU

    def restore(self, done: list[tuple[int, Path]]) -> tuple[str, int]:
        """Resume from the newest loadable checkpoint, else start from init_from or scratch; then put
        back mix changes acknowledged after it. Returns (how it started, last control request id)."""
        self.schedule = MixSchedule([(0, dict(self.spec.mix))])
        self.tokens_drawn = {d: 0 for d in self.spec.domains}
        self.saved_step = -1
        self.policy = PolicyState()
        self.replayed_auto: set[int] = set()  # steps of auto mixes put back from events.jsonl
        self.outbox: list[AutoMix] = []  # rank 0's auto mixes, handed to the other ranks before the next step
        ckpt.remove_partial(self.run.ckpt_dir)
        origin, last_request = "from scratch", 0
        for i, (step, where) in enumerate(reversed(done)):
            try:
                last_request = self.resume(where)
            except FcError as exc:
                if i == len(done) - 1:
                    raise
                log.warning("cannot resume from %s (%s); trying the one before", where.name, exc)
                continue
            origin, self.saved_step = f"resumed from {where.name}", step
            break
        else:
            if self.spec.init_from:
                if self.lora is None:  # a LoRA stage loaded its base in build_model
                    self.init_from(self.spec.init_from)
                origin = f"initialised from {self.spec.init_from}"
            if self.spec.stage.vision_init and hasattr(self.model, "vision"):
                n = vision.load_siglip(self.spec.stage.vision_init, self.model)
                origin += f", tower from {self.spec.stage.vision_init} ({n} tensors)"
        return origin, self.replay_requests(last_request)

    def resume(self, where: Path) -> int:
        """Load a checkpoint of this run; returns the last control request id it had acted on."""
        state = ckpt.read_state(where)
        try:
            step, schedule = int(state["step"]), MixSchedule.from_list(state["mix_schedule"])
            last_request = int(state.get("last_request_id", 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise RunError(f"{where / 'state.json'}: missing or malformed field ({exc})") from None
        if self.lora is not None:
            self.load_adapters(where)
        else:
            self.par.load_weights(where, self.model, self.dev.device)
        self.par.load_optimizer(where, self.model, self.optimizer, self.dev.device)
        self.step, self.schedule = step, schedule
        self.tokens_drawn.update(state.get("tokens_drawn", {}))
        self.policy = PolicyState.from_dict(state.get("mix_policy"))
        ckpt.set_rng_state(state.get("rng", {}))
        return last_request

    def init_from(self, where: Path) -> None:
        """Start from an earlier stage's final weights (same tokenizer and shape, else exit 2)."""
        state = ckpt.read_state(where)
        theirs = state.get("tokenizer_hash", "")
        if theirs != self.spec.tokenizer_hash:
            theirs_p, ours_p = differing_prefixes(str(theirs), self.spec.tokenizer_hash)
            raise RunError(
                f"{where}: init_from checkpoint was trained with tokenizer {theirs_p or '?'}..., this run uses "
                f"{ours_p}... (retrain the earlier stage with this tokenizer)"
            )
        if "lora" in state:  # an SFT run's adapters on its own base: the merged weights
            self.model.load_state_dict(self.base_weights(where), strict=False)
        elif self.spec.image_domains and not self.par.sharded:
            log.info("initialised the %s from %s", vision.init_weights(where, self.model, self.dev.device), where)
        else:
            self.par.load_weights(where, self.model, self.dev.device)

    def base_weights(self, where: Path) -> dict[str, torch.Tensor]:
        """The whole decoder of a checkpoint (a LoRA run's merged onto its base), checked against our shape."""
        from engine.eval.run_model import checkpoint_weights, split_decoder

        decoder, _ = split_decoder(checkpoint_weights(where), self.spec.model, str(where))
        return {k: v.to(self.dev.device) for k, v in decoder.items()}

    def load_base(self, where: Path) -> None:
        """A LoRA stage's frozen base: init_from's weights (the tokenizer checked as for init_from)."""
        self.init_from(where)

    def load_adapters(self, where: Path) -> None:
        """A LoRA checkpoint's adapters (its model.safetensors holds nothing else)."""
        from engine.model.lora import adapter_tensors

        expected = {n: tuple(t.shape) for n, t in adapter_tensors(self.model).items()}
        tensors = ckpt.read_weights(where, expected, self.dev.device)
        self.model.load_state_dict(tensors, strict=False)

    def replay_requests(self, last_request: int) -> int:
        """Requests answered after the checkpoint we resumed from stay answered: their mixes go back in
        the schedule at the steps they took effect, so the resumed run trains exactly what the killed
        one did, and none is answered twice. Mixes the policy applied itself (mix_policy = "auto") go
        back the same way, in the order they were written, and are not applied again when the resumed
        run reaches their eval. Returns the last request id acted on."""
        events, _ = self.run.read_events()
        newest = last_request
        for ev in events:
            rid, step = ev.get("request_id"), ev.get("step", 0)
            if (ev.get("type") == Event.MIX and ev.get("source") == MixPolicy.AUTO and isinstance(step, int)
                    and step > self.step):
                self.schedule.add(step, {d: float(w) for d, w in ev["mix"].items()})
                self.replayed_auto.add(step)
                continue
            if not isinstance(rid, int) or rid <= last_request or not isinstance(step, int) or step <= self.step:
                continue
            if ev.get("type") == Event.MIX:
                self.schedule.add(step, {d: float(w) for d, w in ev["mix"].items()})
            if ev.get("type") in (Event.MIX, Event.ANSWER):
                newest = max(newest, rid)
        return newest

    # -- the loop -----------------------------------------------------------------------

    def train(self) -> int:
        """Train to max_steps (or until asked to stop), then checkpoint; returns the exit code."""
        try:
            if not self.run_until(self.spec.stage.max_steps):
                return self.stop()
            if self.saved_step != self.step:
                self.save()
            self.status(RunState.FINISHED, exit_code=EXIT_OK)
            return EXIT_OK
        finally:
            self.close()

    def run_until(self, last_step: int) -> bool:
        """The loop: steps up to `last_step` with their events, evals and checkpoints; False if asked to stop."""
        st = self.spec.stage
        self.reset_speed()
        while self.step < last_step:
            if self.check_control(self.step + 1):
                return False
            self.step += 1
            metrics = self.train_step(self.step)
            if metrics is not None:
                self.events.write(Event.STEP, **metrics)
            last = self.step == st.max_steps
            if st.eval_every and self.eval_windows and (self.step % st.eval_every == 0 or last):
                self.run_eval()
            if self.step % st.checkpoint_every == 0 or last:
                self.save()
        return True

    def close(self) -> None:
        """Stop watching control requests, give the signals back and leave the process group (also
        after a failed setup)."""
        watcher, signals = getattr(self, "watcher", None), getattr(self, "signals", None)
        if watcher is not None:
            watcher.close()
        if signals is not None:
            signals.restore()
        self.watcher = self.signals = None
        self.par.close()

    def train_step(self, step: int) -> dict[str, Any] | None:
        """One optimizer step over grad_accum micro batches (on each rank); the step event's fields on
        log steps, with the losses of all ranks."""
        st, dev, model, par = self.spec.stage, self.dev, self.model, self.par
        lr = lr_at(step, st)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        logging_step = step % st.log_every == 0 or step == st.max_steps
        n_dom = len(self.domain_names)
        loss_sum = torch.zeros((), device=dev.device)
        dom_sum = torch.zeros(n_dom, device=dev.device)  # per-sequence mean losses, summed by domain
        dom_count = np.zeros(n_dom, dtype=np.int64)
        kept = torch.zeros((), device=dev.device)  # SFT: target tokens that carried loss
        batches = [self.sampler.batch(step, distributed.sequence_index(step, micro, st.grad_accum, st.micro_batch,
                                                                       par.rank, par.world), st.micro_batch)
                   for micro in range(st.grad_accum)]
        window = ImageWindow(model, [mb.image for mb in batches], dev.device) if self.windowed else None
        for micro, mb in enumerate(batches):
            domain_ids = mb.domain_ids
            dom_count += np.bincount(domain_ids, minlength=n_dom)
            x = to_device(mb.tokens, dev.device)
            with par.accumulating(self.net, micro == st.grad_accum - 1):
                with dev.autocast():
                    if window is None:
                        per_token = token_losses(self.net, x, vision.pixels(mb.image, dev.device), mb.loss_mask)
                    else:
                        per_token = token_losses(self.net, x, None, mb.loss_mask, window.embeddings(micro))
                if mb.loss_mask is None:
                    loss = per_token.mean()
                else:  # image placeholders, padding and SFT's prompts are not predicted: the mean over the rest
                    n = int(mb.loss_mask.sum())
                    loss = per_token.sum() / max(n, 1)
                    kept += n
                (loss / st.grad_accum).backward()  # DDP and FSDP average the ranks' gradients
                if window is not None:
                    window.backward(micro)
            loss_sum += loss.detach()
            if logging_step:
                dom_sum.index_add_(0, torch.as_tensor(domain_ids).to(dev.device), row_losses(per_token, mb.domain_mask))
        every = None
        if par.world > 1:  # the whole step's domains, from the sampler's hashes alone: no collective
            first = distributed.sequence_index(step, 0, st.grad_accum, st.micro_batch, 0, par.world)
            every = self.sampler.domain_counts(step, first, st.grad_accum * par.world * st.micro_batch)
        if every is not None:
            dom_count = every
        elif par.world > 1:  # image micro-batches: each rank knows its own rows; one small all-reduce
            dom_count = par.sum(torch.as_tensor(dom_count, device=dev.device)).cpu().numpy()
        for i, d in enumerate(self.domain_names):
            self.tokens_drawn[d] = self.tokens_drawn.get(d, 0) + int(dom_count[i]) * (st.seq_len + 1)
            if d in self.spec.image_domains:  # one image a row of an image domain
                self.images_seen += int(dom_count[i])
        grads = [p for p in model.parameters() if p.grad is not None]
        grad_norm = par.clip_grads(grads, st.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if not logging_step:
            return None
        sums = par.sum(torch.cat([loss_sum[None], kept[None], dom_sum])).tolist()  # waits for the device
        loss_value, kept_all, sums = sums[0] / (st.grad_accum * par.world), sums[1], sums[2:]
        domain_loss = {d: sums[i] / int(dom_count[i]) for i, d in enumerate(self.domain_names) if dom_count[i]}
        fields = self.step_event(step, loss_value, domain_loss, lr, float(grad_norm))
        if self.chat is not None:
            fields["loss_share"] = round(kept_all / (st.grad_accum * par.world * st.micro_batch * st.seq_len), 4)
        return fields

    def reset_speed(self) -> None:
        """Measure tokens/s and MFU from now and this step on."""
        self.mark = (time.perf_counter(), self.step, self.images_seen)

    def step_event(self, step: int, loss: float, domain_loss: dict[str, float], lr: float, grad_norm: float) -> dict:
        """The step event's fields, with speed averaged over the steps since the last one."""
        now = time.perf_counter()
        (t0, s0, images0), self.mark = self.mark, (now, step, self.images_seen)
        steps = max(step - s0, 1)
        elapsed = max(now - t0, 1e-9)
        tokens_per_s = self.tokens_per_step * steps / elapsed
        fields: dict[str, Any] = {
            "step": step, "tokens": step * self.tokens_per_step, "loss": loss, "domain_loss": domain_loss,
            "lr": lr, "grad_norm": grad_norm, "tokens_per_s": round(tokens_per_s, 2),
            "step_time": round(elapsed / steps, 6), "mem_bytes": self.dev.memory_bytes(),
            "epochs": {d: round(e, 4) for d, e in self.sampler.epochs(self.tokens_drawn).items()},
            "mix": self.schedule.weights_at(step),
        }
        if self.dev.peak_flops:
            peak = self.dev.peak_flops * self.par.world  # tokens/s counts every device's tokens
            images_per_s = (self.images_seen - images0) / elapsed
            flops = self.flops_per_token * tokens_per_s + self.flops_per_image * images_per_s
            fields["mfu"] = float(f"{flops / peak:.4g}")
        return fields

    def check_control(self, next_step: int) -> bool:
        """Act on new control requests (in id order) or a signal before `next_step`; True means stop
        now. Every request gets one answer; of several mixes drained together the last one wins."""
        mine = (self.watcher.poll() if self.watcher else []) + self.outbox
        self.outbox = []
        requests, signal_name = self.par.agree(mine, self.signals.requested)
        last_mix = max((r.request_id for r in requests if isinstance(r, ControlRequest) and r.mix is not None),
                       default=None)
        for r in requests:
            if isinstance(r, AutoMix):  # rank 0 put it in force at its eval; the others do it here
                if not self.par.main:
                    self.schedule.add(r.step, r.mix)
                continue
            if isinstance(r, Rejected):
                self.answer(r.request_id, Answer.REJECTED, next_step, message=r.message)
                continue
            note = {}
            if r.mix is not None and r.request_id != last_mix:
                if not r.stop:
                    self.answer(r.request_id, Answer.SUPERSEDED, next_step, by=last_mix,
                                message=f"superseded by request {last_mix}")
                    continue
                note = {"message": f"its mix was superseded by request {last_mix}"}
            elif r.mix is not None:
                why = self.apply_mix(next_step, r.mix, r.request_id)
                if why:
                    self.answer(r.request_id, Answer.REJECTED, next_step, message=why)
                    continue
            if r.stop:
                self.stop_reason = f"stop requested (control request {r.request_id})"
            self.answer(r.request_id, Answer.APPLIED, next_step, **note)
        if signal_name and not self.stop_reason:
            self.stop_reason = f"{signal_name} received"
        return bool(self.stop_reason)

    def answer(self, request_id: int, outcome: str, step: int, **fields: Any) -> None:
        """The one answer event a control request gets."""
        self.events.write(Event.ANSWER, request_id=request_id, outcome=outcome, step=step, **fields)
        if outcome == Answer.REJECTED:
            log.warning("control request %d rejected: %s", request_id, fields.get("message", ""))

    def apply_mix(self, step: int, mix: dict[str, float], request_id: int) -> str:
        """Put a requested mix in force from `step` (recorded in the schedule, so a resume replays it);
        returns why it cannot be, or "" when it is in force."""
        shares = normalise(mix)
        weights = {d: shares.get(d, 0.0) for d in self.spec.domains}
        try:
            self.sampler.check(weights)  # e.g. a domain whose shard is shorter than one window
        except DataError as exc:
            return f"{request_path(self.run.requests_dir, request_id)}: {exc}"
        self.schedule.add(step, weights)
        self.events.write(Event.MIX, step=step, mix=weights, request_id=request_id)
        log.info("mix from step %d: %s", step, weights)
        return ""

    def stop(self) -> int:
        self.status(RunState.STOPPING, self.stop_reason)
        if self.saved_step != self.step:
            self.save()
        elif self.par.main:  # this step's checkpoint exists: record the requests acted on since it was written
            ckpt.update_state(self.run.checkpoint_path(self.step), {
                "mix_schedule": self.schedule.to_list(), "last_request_id": self.watcher.last_request_id})
        self.status(RunState.STOPPED, self.stop_reason, exit_code=EXIT_OK)
        return EXIT_OK

    def run_eval(self) -> None:
        """Held-out loss on the fixed windows; with eval_probes, the probes too (a record in evals.jsonl).
        Rank 0 evaluates the whole model; the other ranks go on to the next step and wait for it there."""
        model = self.par.eval_model(self.model, self.dev.device)
        if model is None:
            return
        res = evaluate(model, self.eval_windows, self.spec.stage.micro_batch, self.dev, self.eval_bytes)
        fields: dict[str, Any] = {"step": self.step, "loss": res.loss, "domain_loss": res.domain_loss}
        if res.domain_bpb:
            fields["domain_bpb"] = res.domain_bpb
        if self.eval_pairs:  # caption loss and bits per byte on held-out image-text pairs, beside the text domains
            st = self.spec.stage
            captions = caption_eval(model, self.eval_pairs, st.eval_batches * st.micro_batch, st.seq_len,
                                    Tokenizer.load(self.spec.tokenizer).eos_id, self.dev.autocast)
            fields["domain_loss"] = {**res.domain_loss, **{d: c["loss"] for d, c in captions.items()}}
            fields["domain_bpb"] = {**(res.domain_bpb or {}), **{d: c["bpb"] for d, c in captions.items()}}
            if not res.domain_loss:
                fields["loss"] = sum(fields["domain_loss"].values()) / max(len(fields["domain_loss"]), 1)
        if self.probe_text:
            fields.update(self.run_probes(model))
        if self.eval_pairs and self.spec.stage.eval_probes:
            fields["probes"] = {**fields.get("probes", {}), **self.image_probes(model)}
        self.events.write(Event.EVAL, **fields)
        if self.spec.stage.mix_policy != MixPolicy.FIXED:
            self.consider_mix(res.domain_bpb or res.domain_loss, "bpb" if res.domain_bpb else "loss")
        self.reset_speed()  # keep eval time out of the next tokens/s

    def consider_mix(self, held_out: dict[str, float], unit: str) -> None:
        """Rank 0, after an eval: remember its per-domain held-out figures and, every suggest_every steps,
        write the policy's suggestion; a mix_policy = "auto" stage puts it in force from the next step
        (a `mix` event with source "auto", in the schedule before this step's checkpoint is written).
        Everything here follows from the checkpointed state and the eval, so a resumed run repeats it."""
        st, step = self.spec.stage, self.step
        self.policy.add(step, held_out)
        if step >= st.max_steps or step % (st.suggest_every or st.eval_every):
            return
        current = self.schedule.weights_at(step)
        sug = suggest(self.policy, current, self.sampler.epochs(self.tokens_drawn), Bounds.of_stage(st), unit)
        if sug is None or step + 1 in self.replayed_auto:  # replayed: written and in force before the kill
            return
        self.events.write(Event.SUGGESTION, **sug.event_fields(), auto=st.mix_policy == MixPolicy.AUTO)
        if st.mix_policy != MixPolicy.AUTO:
            return
        weights = {d: sug.mix.get(d, 0.0) for d in self.spec.domains}
        try:
            self.sampler.check(weights)
        except DataError as exc:
            log.warning("step %d: suggested mix not applied: %s", step, exc)
            return
        self.schedule.add(step + 1, weights)
        self.outbox.append(AutoMix(step + 1, weights))
        self.events.write(Event.MIX, step=step + 1, mix=weights, source=MixPolicy.AUTO)
        log.info("mix from step %d (auto): %s", step + 1, weights)

    def image_probes(self, model: torch.nn.Module) -> dict[str, Any]:
        """FEN read from held-out board diagrams and values read from held-out charts (engine.eval.probes.vision)."""
        from engine.eval.probes.vision import image_probes

        try:
            with eager():
                found = image_probes(model, Tokenizer.load(self.spec.tokenizer), self.eval_pairs, self.spec.images)
        except Exception:  # noqa: BLE001 - a probe bug must not cost the run
            log.exception("step %d: image probes failed", self.step)
            return {}
        return {name: {k: v for k, v in p.items() if k != "n"} for name, p in found.items()}

    def run_probes(self, model: torch.nn.Module) -> dict[str, Any]:
        """The eval harness on the weights in memory: probe scores for the eval event, the full record
        appended to evals.jsonl. A failing probe is logged and reported, never fatal to training."""
        start = time.perf_counter()
        try:
            with eager():
                rec = evaluate_for_run(model, self.spec, self.step, self.probe_limits,
                                       self.probe_tokenizer, self.probe_text, self.dev.name)
        except Exception as exc:  # noqa: BLE001 - a probe bug must not cost the run
            log.exception("step %d: probes failed", self.step)
            return {"probe_error": f"{type(exc).__name__}: {exc}"}
        summary = {name: {k: v for k, v in p.items() if k != "n"} for name, p in rec["metrics"]["probes"].items()}
        return {"probes": summary, "bpb": rec["metrics"]["bpb"], "probe_seconds": round(time.perf_counter() - start, 2)}

    def oom_message(self) -> str:
        """What to change when the stage ran out of memory, with the estimate `fcwork model info` gives."""
        from engine.model.info import memory_estimate

        st = self.spec.stage
        tips = [f"micro_batch = {st.micro_batch // 2}"] if st.micro_batch > 1 else []
        tips += [] if st.activation_checkpointing else ["activation_checkpointing = true"]
        tip = " or ".join(tips) or "a shorter seq_len or a smaller model"
        message = f"out of memory at micro-batch {st.micro_batch}: try {tip}"
        device = self.dev.type if self.dev else "auto"
        precision = self.dev.precision if self.dev else "auto"
        try:
            est = memory_estimate(self.spec.model, st.seq_len, st.micro_batch, st.activation_checkpointing,
                                  precision, device, include_vision=bool(self.spec.image_domains),
                                  devices=st.world_size, strategy=st.strategy, grad_accum=st.grad_accum)
        except FcError:
            return message
        return (f"{message} (`fcwork model info` estimates {est['total'] / 2**30:,.2f} GiB for this stage "
                f"on {est['device']}, {est['precision']})")

    def save(self) -> None:
        """Checkpoint (every rank calls it: a sharded model is gathered; rank 0 writes)."""
        st = self.spec.stage
        weights, moments = self.par.full_state(self.model, self.optimizer)
        self.saved_step = self.step
        if not self.par.main:
            return
        trainable, total = trainable_counts(self.model)
        extra: dict[str, Any] = {"trainable_params": trainable, "params": total,
                                 "optim_bytes": sum(t.numel() * t.element_size() for t in moments.values())}
        if self.lora is not None:  # only the adapters: the base is init_from's checkpoint
            from engine.model.lora import is_adapter

            weights = {n: t for n, t in weights.items() if is_adapter(n)}
            extra.update(lora=self.lora.to_dict(), lora_base=str(self.spec.init_from))
        state = {
            "step": self.step,
            "tokens": self.step * self.tokens_per_step,
            "sequence_cursor": self.step * st.grad_accum * self.par.world * st.micro_batch,
            "world_size": self.par.world,
            "tokens_drawn": self.tokens_drawn,
            "epochs": self.sampler.epochs(self.tokens_drawn),
            "rng": ckpt.rng_state(),
            "mix_schedule": self.schedule.to_list(),
            "last_request_id": self.watcher.last_request_id,
            "mix_policy": self.policy.to_dict(),
            "lr_schedule": schedule_info(st),
            "tokenizer_hash": self.spec.tokenizer_hash,
            "model": asdict(self.spec.model),
            "run_id": self.spec.run_id,
            "time": time.time(),
            **extra,
        }
        where = ckpt.write_checkpoint(self.run.ckpt_dir, self.step, weights, moments, state, st.keep_checkpoints)
        self.events.write(Event.CHECKPOINT, step=self.step, path=str(where))
        log.info("checkpoint %s", where.name)
        self.reset_speed()  # keep checkpoint time out of the next tokens/s


def token_losses(net: torch.nn.Module, tokens: torch.Tensor, images: torch.Tensor | None = None,
                 loss_mask: np.ndarray | None = None, image_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token next-token loss [B, T] of rows of T + 1 tokens, through `net`'s own call (DDP's
    gradient hooks are armed there); the same numbers as Transformer.loss(..., reduction="none").
    With `images` (or their `image_embeds`), they fill the rows' `<image>` positions; targets outside
    `loss_mask` give 0."""
    from engine.model.decoder import cross_entropy

    targets = vision.masked_targets(tokens, loss_mask)
    if image_embeds is not None:
        logits = net(tokens[:, :-1], image_embeds=image_embeds)
    else:
        logits = net(tokens[:, :-1]) if images is None else net(tokens[:, :-1], images)
    return cross_entropy(logits.flatten(0, 1), targets.flatten()).view(targets.shape)


def row_losses(per_token: torch.Tensor, mask: np.ndarray | None) -> torch.Tensor:
    """Each row's mean loss over its own domain's targets (all of them without a mask; an image row's
    caption), detached: what the step event's loss per domain averages."""
    per_token = per_token.detach()
    if mask is None:
        return per_token.mean(dim=1)
    m = torch.as_tensor(mask, device=per_token.device, dtype=per_token.dtype)
    return (per_token * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)


# What CUDA's and MPS's allocators say when a tensor does not fit (torch.OutOfMemoryError is CUDA's;
# MPS raises a plain RuntimeError), and the CPU allocator's refusal.
OOM_PHRASES = ("out of memory", "DefaultCPUAllocator: can't allocate memory")


def out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is the device running out of memory (not a bug, not worth a restart)."""
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and any(p in str(exc) for p in OOM_PHRASES)


def chat_ids(tok: Tokenizer) -> ChatIds:
    """The ids an SFT stage's loss mask needs, from the run's tokenizer."""
    roles = tuple(tok.symbol_id(s) for s in (SYSTEM, USER, ASSISTANT))
    return ChatIds(tok.eos_id, tok.symbol_id(ASSISTANT), tok.symbol_id(END), roles)


def build_optimizer(model: torch.nn.Module, st, dev: DeviceInfo) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices (2-D and up) only; fused kernels on CUDA. A model with a
    tower gets groups per part, at the part's learning rate (engine.train.images.param_groups)."""
    if hasattr(model, "vision"):
        groups = vision.param_groups(model, st)
    else:
        decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
        groups = [{"params": decay, "weight_decay": st.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    extra = {"fused": True} if dev.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=st.lr, betas=(st.beta1, st.beta2), eps=1e-8, **extra)


# -- entry point ----------------------------------------------------------------------------

def _setup_logging(run_dir: Path, rank: int = 0) -> list[logging.Handler]:
    """Log to stderr; also to RUN_DIR/trainer.log unless stderr already is that file (the supervisor's).
    Ranks other than 0 log warnings and errors only, marked with their rank."""
    log.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    log.propagate = False
    who = f"trainer[%(process)d] rank {rank}" if rank else "trainer[%(process)d]"
    fmt = logging.Formatter(f"%(asctime)s {who} %(levelname)s %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    log_path = RunDir(run_dir).trainer_log
    try:
        same = os.path.samestat(os.fstat(sys.stderr.fileno()), os.stat(log_path))
    except (OSError, ValueError, AttributeError):
        same = False
    if not same:
        handlers.append(logging.FileHandler(log_path, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(fmt)
        log.addHandler(handler)
    return handlers


def main(run_dir: str | os.PathLike) -> int:
    """Train the run in `run_dir` (resuming it if it has checkpoints); returns the exit code."""
    run = RunDir(Path(run_dir).resolve())
    if not run.exists():
        print(f"fcwork-train: error: {run.path}: not a run folder (no {run.stage_file.name})", file=sys.stderr)
        return EXIT_USER_ERROR
    rank = distributed.launched_rank()
    handlers = _setup_logging(run.path, rank)
    try:
        with run.writer() if rank == 0 else distributed.NoEvents() as events:
            return _run(Trainer(run.path, events))
    finally:
        for handler in handlers:
            log.removeHandler(handler)
            handler.close()


def _fail(trainer: Trainer, message: str, code: int, detail: str = "") -> int:
    """Say why the trainer ends (log, error event, failed status) as far as the disk allows; return `code`.
    `detail` (the exception's own words) goes to the log only."""
    log.error("%s [%s]", message, detail) if detail else log.error("%s", message)
    rank = distributed.launched_rank()
    if rank and code == EXIT_USER_ERROR:  # torchrun's exit says only that a rank failed: say why, and whose
        with contextlib.suppress(OSError):
            trainer.run.record_rank_failure(rank, message, code)
    try:
        trainer.events.write(Event.ERROR, message=message, source=Source.TRAINER)
        trainer.status(RunState.FAILED, message, exit_code=code)
    except OSError as exc:  # a full disk: the exit code still tells the supervisor
        log.error("cannot record the failure in the events: %s", exc)
    return code


def _run(trainer: Trainer) -> int:
    try:
        trainer.setup()
        return trainer.train()
    except FcError as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return _fail(trainer, message, EXIT_USER_ERROR)
    except BaseException as exc:  # a crash: traceback to the log, one line to the events
        if ckpt.is_no_space(exc):  # not a crash a restart could heal: the user frees space, then resumes
            where = getattr(exc, "filename", None) or trainer.run_dir
            return _fail(trainer, f"{where}: no space left on device; free some space, then resume the stage",
                         EXIT_USER_ERROR)
        if out_of_memory(exc):  # the stage does not fit the device: a restart would only fail again
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return _fail(trainer, trainer.oom_message(), EXIT_USER_ERROR, detail)
        log.error("crash:\n%s", traceback.format_exc())
        first = (str(exc).strip().splitlines() or [""])[0]
        message = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        if trainer.par.world > 1 and distributed.lost_peer(exc):
            message = f"another rank of the group ended (torchrun says which in trainer.log): {message}"
        return _fail(trainer, message, EXIT_CRASH)
    finally:
        trainer.close()
