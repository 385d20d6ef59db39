"""Run a suite: the run's HF export scored by lm-eval (`simple_evaluate` with lm-eval's HFLM), one
evals.jsonl record. The only module that imports lm_eval, and only when a suite runs.

The HF export's logits are checked against our model's (tests/test_export.py), so these are the
numbers lm-eval gives any Llama checkpoint. Task data comes as lm-eval fetches it (the Hugging
Face hub, cached); our local tasks (LOCAL_TASKS) read jsonl beside their YAML and need no network.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from engine.atomic import read_json_object
from engine.eval.harness import append_eval
from engine.eval.run_model import RunCheckpoint, find_checkpoint
from engine.export import export_run
from engine.export.common import MANIFEST
from engine.jobs.rundir import RunDir
from engine.lmeval import LOCAL_TASKS, SUITE_KIND, SuiteError, aggregate, centred, main_metric, suite_tasks

Progress = Callable[[str, int, int], None]  # (what now, parts done, parts in all)
EXAMPLES = 3  # scored items kept per task in the record, to see what the model was asked


def hf_export(ckpt: RunCheckpoint) -> tuple[Path, dict[str, Any]]:
    """The run's f32 HF export of this checkpoint: an earlier one made from the same weights, else a new one.
    Returns the folder and its fcwork-export.json."""
    folder = RunDir(ckpt.spec.run_dir).exports_dir / f"hf-f32-step{ckpt.step}"
    manifest = read_json_object(folder / MANIFEST)
    if manifest.get("checkpoint_sha256") != ckpt.sha256 or not (folder / "model.safetensors").exists():
        folder = export_run(ckpt.spec.run_dir, "hf", "f32", ckpt.step).path
        manifest = read_json_object(folder / MANIFEST)
    return folder, manifest


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else ""
    line = line if len(line) <= 240 else line[:240] + "..."
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def load_tasks(names: Sequence[str], task_paths: Sequence[Path] = (), allow_code: bool = False):
    """(TaskManager, {task: Task}) for the named tasks or groups, their data loaded. lm-eval's own
    index (thousands of YAML files, seconds to build) is read only when a name is not ours.
    Each failure is one line naming the task and why."""
    from lm_eval.tasks import TaskManager

    paths = [LOCAL_TASKS, *task_paths]
    for p in task_paths:
        if not Path(p).is_dir():
            raise SuiteError(f"task folder {p}: not a folder")
    tm = TaskManager(include_path=[str(p) for p in paths], include_defaults=False)
    if any(n not in tm.all_tasks for n in names):
        tm = TaskManager(include_path=[str(p) for p in paths])
    unknown = [n for n in names if n not in tm.all_tasks]
    if unknown:
        raise SuiteError(f"task {unknown[0]}: not a task lm-eval knows, nor one in {', '.join(map(str, paths))}")
    for name in names:  # before loading: a code task's own module runs code as it loads
        cfg = getattr(getattr(tm, "_index", {}).get(name), "cfg", None) or {}
        if cfg.get("unsafe_code") and not allow_code:
            raise SuiteError(_unsafe(name))
    if allow_code:
        os.environ.setdefault("HF_ALLOW_CODE_EVAL", "1")  # lm-eval's code tasks run their tests through `evaluate`
    tasks: dict[str, Any] = {}
    for name in names:
        try:
            loaded = tm.load([name])["tasks"]
        except Exception as exc:  # noqa: BLE001 - the hub, datasets and a task's own code raise anything
            raise SuiteError(f"task {name}: cannot load it ({_one_line(exc)})") from None
        for task_name, task in loaded.items():
            if task.get_config("unsafe_code") and not allow_code:
                raise SuiteError(_unsafe(task_name))
            tasks[task_name] = task
    return tm, tasks


def _unsafe(task: str) -> str:
    return f"task {task}: runs the model's programs on this machine to score them; pass --allow-code to allow it"


def _task_scores(results: dict[str, Any], name: str) -> dict[str, float]:
    """{metric: value} of one task from lm-eval's results ("acc,none" -> "acc"; stderr kept as acc_stderr)."""
    return {key.partition(",")[0]: float(value) for key, value in (results.get("results", {}).get(name) or {}).items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def _chance(task, samples: list[dict[str, Any]]) -> float:
    """Mean 1/(number of choices) over the scored items of a multiple-choice task; 0 for generation."""
    if task.get_config("output_type") != "multiple_choice" or not samples:
        return 0.0
    return sum(1 / max(1, len(s.get("arguments") or [None])) for s in samples) / len(samples)


def _examples(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first scored items: the context, the choices and their log-likelihoods, or the generated answer."""
    out = []
    for s in samples[:EXAMPLES]:
        args = [a for a in s.get("arguments") or [] if isinstance(a, (list, tuple)) and a]
        item: dict[str, Any] = {"context": str(args[0][0])[-300:] if args else "", "target": str(s.get("target"))[:200]}
        resps = s.get("filtered_resps") or []
        if len(args) > 1 or (args and len(args[0]) == 2 and isinstance(args[0][1], str)):
            item["choices"] = [str(a[1])[:100] for a in args]
            item["loglikelihoods"] = [round(float(r[0]), 4) if isinstance(r, (list, tuple)) else None for r in resps]
        else:
            item["response"] = str(resps[0] if resps else "")[:300]
        out.append(item)
    return out


def run_suite(run_dir: str | os.PathLike, suite: str, step: int | None = None, limit: int | None = None,
              device: str = "cpu", batch: int = 8, num_fewshot: int | None = None, allow_code: bool = False,
              extra_suites: dict[str, Sequence[str]] | None = None, task_paths: Sequence[Path] = (),
              save: bool = True, progress: Progress | None = None) -> dict[str, Any]:
    """Score checkpoint `step` (the latest when None) of a run on a suite; append the record to evals.jsonl.
    `limit` caps the items per task (None: all of them)."""
    tell = progress or (lambda label, done, total: None)
    names = suite_tasks(suite, extra_suites)
    if limit is not None and limit < 1:
        raise SuiteError(f"--limit: expected a positive integer, got {limit}")
    ckpt = find_checkpoint(run_dir, step)
    start = time.perf_counter()
    tell(f"loading the tasks of suite {suite} ({', '.join(names)})", 0, 3)
    try:
        import lm_eval
    except ImportError:
        raise SuiteError("--suite: lm-evaluation-harness is not installed (pip install 'fcwork[eval]')") from None
    quiet = _quiet_logs()
    try:
        tm, tasks = load_tasks(names, task_paths, allow_code)  # before transformers loads: a task may fail first
        from lm_eval.models.huggingface import HFLM

        tell(f"exporting {ckpt.spec.run_id} step {ckpt.step} for transformers", 1, 3)
        folder, manifest = hf_export(ckpt)
        lm = HFLM(pretrained=str(folder), device=device, batch_size=batch, dtype="float32")
        cap = max(1, lm.max_length // 2)
        for task in tasks.values():  # a generation may not take more than half of a small model's context
            if task.get_config("output_type") == "generate_until":
                gen = dict(task.get_config("generation_kwargs") or {})
                gen["max_gen_toks"] = min(int(gen.get("max_gen_toks", 256)), cap)
                task.set_config("generation_kwargs", gen)
        tell(f"scoring {len(tasks)} tasks on {device}", 2, 3)
        try:
            results = lm_eval.simple_evaluate(
                model=lm, tasks=list(tasks.values()), task_manager=tm, limit=limit, num_fewshot=num_fewshot,
                log_samples=True, bootstrap_iters=0, confirm_run_unsafe_code=allow_code)
        except Exception as exc:  # noqa: BLE001 - a task's metric or filter code fails in its own way
            raise SuiteError(f"suite {suite}: lm-eval failed ({_one_line(exc)})") from None
    finally:
        quiet()
    rec = suite_record(results, tasks, suite, ckpt, folder, manifest, device,
                       {"limit": limit, "num_fewshot": num_fewshot, "batch": batch, "max_gen_toks": cap},
                       time.perf_counter() - start, lm_eval.__version__)
    tell("done", 3, 3)
    if save:
        append_eval(ckpt.spec.run_dir, rec)
    return rec


def suite_record(results: dict[str, Any], tasks: dict[str, Any], suite: str, ckpt: RunCheckpoint, folder: Path,
                 manifest: dict[str, Any], device: str, limits: dict[str, Any], seconds: float,
                 version: str) -> dict[str, Any]:
    """The evals.jsonl line of a suite (docs/formats.md): per task its metrics, main score, chance and
    centred score; the suite's centred aggregate."""
    scores: dict[str, Any] = {}
    examples: dict[str, Any] = {}
    notes = []
    for name, task in tasks.items():
        metrics = _task_scores(results, name)
        samples = (results.get("samples") or {}).get(name) or []
        main = main_metric({k: v for k, v in metrics.items() if not k.endswith("_stderr")})
        score = metrics.get(main) if main else None
        chance = _chance(task, samples)
        scores[name] = {"metric": main, "score": score, "chance": round(chance, 6), "centred": centred(score, chance),
                        "n": len(samples), "num_fewshot": (results.get("n-shot") or {}).get(name),
                        "version": (results.get("versions") or {}).get(name), "metrics": metrics}
        examples[name] = _examples(samples)
        if score is None:
            notes.append(f"{name}: no score (lm-eval reported {', '.join(metrics) or 'nothing'})")
    run = RunDir(ckpt.spec.run_dir)
    try:
        export = str(folder.relative_to(run.path))
    except ValueError:
        export = str(folder)
    return {
        "kind": SUITE_KIND,
        "suite": suite,
        "run": ckpt.spec.run_id,
        "stage": ckpt.spec.stage.name,
        "step": ckpt.step,
        "checkpoint": str(ckpt.path.relative_to(ckpt.spec.run_dir)),
        "checkpoint_sha256": ckpt.sha256,
        "export": export,
        "export_manifest": {k: v for k, v in manifest.items() if k not in ("model", "created")},
        "merged_lora": "lora" in ckpt.state,  # an SFT run's adapters, merged into its base by the export
        "time": time.time(),
        "seconds": round(seconds, 3),
        "device": device,
        "lm_eval_version": version,
        "limits": limits,
        "metrics": {"tasks": scores, "centred": aggregate(scores)},
        "examples": examples,
        "notes": notes,
    }


def _quiet_logs() -> Callable[[], None]:
    """lm-eval, datasets and transformers log at INFO/WARNING on every run; only errors reach the user.
    Returns the undo."""
    names = ("lm_eval", "datasets", "transformers", "evaluate", "huggingface_hub")
    before = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)

    def undo() -> None:
        for n, level in before.items():
            logging.getLogger(n).setLevel(level)

    return undo
