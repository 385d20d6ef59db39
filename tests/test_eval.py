"""Eval harness: bits per byte computed exactly, probes whose checkers use the real libraries,
evals.jsonl records, the CLI table and compare, and the refusals."""

from __future__ import annotations

import json
import os
import math
import subprocess
import sys
from pathlib import Path

import chess
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
import torch.nn.functional as F

from engine.errors import FcError, RunError, TokenizerError
from engine.eval.harness import EvalLimits, ModelLM, eval_run, evaluate_model, load_heldout, read_evals
from engine.eval.probes import chess as chess_probe
from engine.eval.probes import code as code_probe
from engine.eval.probes import data as data_probe
from engine.eval.probes import science as science_probe
from engine.eval.run_model import sha256_file
from tests.conftest import REPO
from tests.eval_fixtures import clone_run, load_run_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = EvalLimits(bpb_docs=2, bpb_tokens=600, chess=4, code=2, data=3, science=4, sample_tokens=12)
GAME = """[Event "Probe"]
[Result "1-0"]

1. e4 e5 2. Nf3 Nc6 3. Bb5 a6 4. Ba4 Nf6 5. O-O Be7 6. Re1 b5 7. Bb3 d6 8. c3 O-O 1-0
"""


def _tokenizer(ew):
    from engine.data.tokenizer import Tokenizer

    return Tokenizer.load(ew.tokenizer_path)


# -- bits per byte ----------------------------------------------------------------------------------

def test_bits_per_byte_is_summed_nll_over_utf8_bytes(eval_workspace):
    model = load_run_model(eval_workspace.run)
    tok = _tokenizer(eval_workspace)
    docs = ["naïve café: ünïcode costs more bytes than characters. " * 3, GAME]
    report = evaluate_model(model, tok, {"science": docs}, EvalLimits(bpb_docs=2, bpb_tokens=10_000, window=64,
                                                                       probes=(), samples=0))
    nats = 0.0
    for text in docs:  # by hand: each document after an EOS, in windows of 64 positions
        seq = [tok.eos_id, *tok.encode(text)]
        for start in range(0, len(seq) - 1, 64):
            chunk = torch.tensor([seq[start:start + 65]])
            with torch.no_grad():
                logits = model(chunk[:, :-1])
            nats += F.cross_entropy(logits[0].double(), chunk[0, 1:], reduction="sum").item()
    score = report.domains["science"]
    assert score.bytes == sum(len(t.encode("utf-8")) for t in docs) > sum(len(t) for t in docs)
    assert score.tokens == sum(len(tok.encode(t)) for t in docs)
    assert score.bpb == pytest.approx(nats / (math.log(2) * score.bytes), rel=1e-5)
    assert score.loss == pytest.approx(nats / score.tokens, rel=1e-5)


def test_token_budget_cuts_documents_and_counts_exact_bytes(eval_workspace):
    model = load_run_model(eval_workspace.run)
    tok = _tokenizer(eval_workspace)
    heldout = load_heldout(eval_workspace.run.parent.parent / "data" / "evalfx" / "tok", ["code"], 3)
    report = evaluate_model(model, tok, heldout, EvalLimits(bpb_docs=3, bpb_tokens=300, probes=(), samples=0))
    s = report.domains["code"]
    assert 250 < s.tokens <= 300 and s.bytes < sum(len(t.encode()) for t in heldout["code"])


# -- probes: items and checkers, with the real libraries ---------------------------------------------

def test_chess_items_replay_with_python_chess_and_the_checker_judges_moves():
    items = chess_probe.build_items([GAME] * 5, limit=5, seed=1)
    assert len(items) == 5
    for item in items:
        board = chess.Board(item.fen)
        assert board.parse_san(item.san).uci() == item.move
        assert not item.prompt.endswith(" ")
        assert chess_probe.check(item, f" {item.san} Nf6")["match"]
    item = items[0]
    legal_other = next(m for m in chess.Board(item.fen).legal_moves if m.uci() != item.move)
    other = chess.Board(item.fen).san(legal_other)
    assert chess_probe.check(item, f" {other} ") == {"move": other, "legal": True, "match": False}
    assert chess_probe.check(item, " 12. Ke9 ") == {"move": "Ke9", "legal": False, "match": False}
    assert chess_probe.check(item, "") == {"move": "", "legal": False, "match": False}
    assert [san for _, san, _ in chess_probe.plies(GAME)][:4] == ["e4", "e5", "Nf3", "Nc6"]


def test_code_items_compile_with_their_own_bodies_and_garbage_does_not():
    source = (
        "import os\n\n\ndef area(w, h):\n    return w * h\n\n\nclass Box:\n    def __init__(self, w):\n"
        "        self.w = w\n\n    def grow(self,\n             by):\n        self.w += by\n        return self\n"
    )
    items = code_probe.build_items([source], limit=5, seed=0)
    assert sorted(i.head.strip().split("(")[0] for i in items) == ["def __init__", "def area", "def grow"]
    for item in items:
        assert item.prompt.endswith(item.head) and code_probe.check(item, item.body)["compiles"]
        deeper = " " * (item.indent + 4)
        after = f"{deeper}x = 1\n{deeper}return x\n{' ' * item.indent}def next(): pass\n"
        assert code_probe.check(item, after)["compiles"]
        assert not code_probe.check(item, f"{deeper}return (1,\n")["compiles"]
        assert not code_probe.check(item, "return 1\n")["compiles"]  # not indented: no body
    assert len(code_probe.build_items([source, "def f(:\n  pass\n", source], limit=4, seed=0)) == 4


def test_data_answers_equal_what_python_prints_for_the_notebook_cells():
    """Every question's answer is what its cell prints when run after the notebook's own load cell."""
    import contextlib
    import io
    import re

    from engine.data.builtin import iter_builtin

    docs = [d for _, d in zip(range(30), iter_builtin("data-notebooks", 5, 10**7))]
    items = data_probe.build_items(docs, 30, seed=0)
    assert len(items) == 30 and {i.kind for i in items} == {"mean", "max", "count"}
    for item in items:
        cells = re.findall(r"```python\n(.*?)\n```", item.prompt, re.S)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            namespace: dict = {}
            exec(cells[0], namespace)  # the corpus' own load cell (built-in, generated by us)
            exec(cells[-1], namespace)  # the probe's question cell
        printed = out.getvalue().splitlines()[-1]
        assert data_probe.check(item, printed + "\n")["exact"], (item.question, printed, item.answer)
        assert item.prompt.endswith("```text\n")
    md = ("# Sales\n\n| shop | units | price |\n|---|---|---|\n| A | 3 | 2.5 |\n| B | 5 | 1.25 |\n| A | 10 | 4.0 |\n")
    table = data_probe.find_table(md)
    assert table.columns == ["shop", "units", "price"] and table.numeric() == ["units", "price"]
    assert table.categorical() == ["shop"]
    item = data_probe.DataItem("", "mean", "q", 2.58)
    assert data_probe.check(item, "2.58\n")["exact"] and not data_probe.check(item, "2.6\n")["exact"]
    assert not data_probe.check(item, "no number")["exact"]


def test_science_items_offer_the_true_word_among_distinct_options():
    text = ("The enzyme lowers the activation energy of the reaction in the living cell. "
            "Photons carry energy proportional to their frequency across the whole spectrum of light. "
            "Planets orbit their star along elliptical paths described by Kepler in his laws.")
    items = science_probe.build_items([text], limit=6, seed=0)
    assert items
    for item in items:
        assert len(set(item.options)) == 4 and item.options[item.answer] in text
        cont = science_probe.pairs(item)[item.answer]
        assert (cont[0] + cont[1]) == text[: len(cont[0]) + len(cont[1])]
        scores = [0.0] * 4
        scores[item.answer] = 1.0
        assert science_probe.check(item, scores)["correct"]


def test_probes_run_on_a_real_model_and_score_in_range(eval_workspace):
    model = load_run_model(eval_workspace.run)
    lm = ModelLM(model, _tokenizer(eval_workspace))
    heldout = load_heldout(eval_workspace.run.parent.parent / "data" / "evalfx" / "tok",
                           ["chess", "code", "data", "science"], 20)
    for mod in (chess_probe, code_probe, data_probe, science_probe):
        res = mod.run(lm, heldout[mod.DOMAIN], 3, seed=0)
        assert res.n > 0 and res.examples, mod.NAME
        assert all(0.0 <= v <= 1.0 for v in res.metrics.values()), res.metrics
    # score() is the sum of log-probabilities: a continuation's score is the sum of its parts'
    full = lm.score([("1. e4", " e5 2. Nf3")])[0]
    assert full < 0
    assert lm.score([("1. e4", " e5 2. Nf3"), ("1. e4", " e5 2. Nf3")]) == pytest.approx([full, full], rel=1e-6)


class OracleLM:
    """A stand-in for a perfect model: it continues a prompt with what follows it in the held-out
    text (character by character, honouring the probe's stop test) and scores a continuation 0 when
    the text goes on that way, else -1. Through the probes' own run() it must score 1.0."""

    def __init__(self, texts):
        self.texts = texts

    def _after(self, prompt):
        for t in self.texts:
            i = t.find(prompt)
            if i >= 0:
                return t[i + len(prompt):]
        return ""

    def complete_many(self, prompts, max_new_tokens, stops, sampling=None):
        from engine.eval.probes import Completion

        out = []
        for prompt, stop in zip(prompts, stops):
            text = ""
            for ch in self._after(prompt)[:4000]:
                text += ch
                if stop is not None and stop(text):
                    break
            out.append(Completion(text, "stop"))
        return out

    def complete(self, prompt, max_new_tokens, stop=None, sampling=None):
        return self.complete_many([prompt], max_new_tokens, [stop])[0]

    def score(self, pairs):
        return [0.0 if any(c + k in t for t in self.texts) else -1.0 for c, k in pairs]


def test_a_perfect_model_scores_one_on_the_probes(eval_workspace):
    """The probes' whole path (items from held-out text, prompts, stop tests, checks) gives full
    marks to a model that knows the text. (The data probe asks questions the text does not contain,
    so it has no oracle here: its answers are checked against Python above.)"""
    heldout = load_heldout(eval_workspace.run.parent.parent / "data" / "evalfx" / "tok", ["chess", "code", "science"], 20)
    for mod, metric in ((chess_probe, "legal"), (chess_probe, "match"), (code_probe, "compile"),
                        (science_probe, "accuracy")):
        res = mod.run(OracleLM(heldout[mod.DOMAIN]), heldout[mod.DOMAIN], 6, seed=0)
        assert res.n > 0 and res.metrics[metric] == 1.0, (mod.NAME, res.metrics, res.examples[:1])


# -- runs, evals.jsonl, CLI ----------------------------------------------------------------------------

def test_eval_run_appends_a_record_with_metrics_probes_and_samples(eval_workspace, tmp_path):
    run = clone_run(eval_workspace.run, tmp_path / "run")
    rec = eval_run(run, limits=FAST)
    assert rec["run"] == eval_workspace.run.name and rec["step"] == 20 and rec["checkpoint"] == "ckpt/step-20"
    assert rec["checkpoint_sha256"] == sha256_file(run / "ckpt" / "step-20" / "model.safetensors")
    assert set(rec["probe_versions"]) == {"bpb", "chess", "code", "data", "science", "chat"}
    m = rec["metrics"]
    assert set(m["domain_bpb"]) == {"code", "science", "chess", "data", "chat"}
    assert all(v > 0 for v in m["domain_bpb"].values()) and m["bpb"] > 0
    assert {"legal", "match"} <= set(m["probes"]["chess"]) and m["probes"]["science"]["chance"] == 0.25
    assert all(m["probes"][p]["n"] > 0 for p in ("chess", "code", "data", "science"))
    assert set(rec["samples"]) == set(m["domain_bpb"]) and all(s[0]["prompt"] for s in rec["samples"].values())
    eval_run(run, step=10, limits=EvalLimits(bpb_docs=1, bpb_tokens=200, probes=(), samples=0))
    recs = read_evals(run)
    assert [r["step"] for r in recs] == [20, 10] and recs[1]["metrics"]["probes"] == {}
    assert json.loads((run / "evals.jsonl").read_text().splitlines()[0]) == rec
    again = eval_run(run, limits=FAST, save=False)
    assert again["metrics"] == rec["metrics"] and again["samples"] == rec["samples"]  # deterministic


def test_trainer_hook_evaluates_a_model_in_memory(eval_workspace, tmp_path):
    from engine.eval.harness import evaluate_for_run
    from engine.jobs.rundir import RunDir

    run = clone_run(eval_workspace.run, tmp_path / "run")
    model = load_run_model(run).train()
    rec = evaluate_for_run(model, RunDir(run).spec(), 7, EvalLimits(bpb_docs=1, bpb_tokens=200, chess=2, code=1,
                                                                      data=1, science=2, samples=0))
    assert model.training  # handed back in the mode it came in
    assert rec["step"] == 7 and rec["checkpoint_sha256"] == "" and rec["device"] == "cpu"
    assert read_evals(run)[-1] == rec and rec["metrics"]["probes"]["chess"]["n"] == 2


def test_eval_refuses_a_changed_tokenizer_missing_checkpoints_and_bad_limits(eval_workspace, tmp_path):
    changed = tmp_path / "tok.model"
    changed.write_bytes(eval_workspace.tokenizer_path.read_bytes()[:-1])
    run = clone_run(eval_workspace.run, tmp_path / "run", tokenizer=changed)
    with pytest.raises(TokenizerError, match=r"changed since run"):
        eval_run(run, limits=FAST)
    with pytest.raises(RunError, match=r"no checkpoint at step 5 \(have steps 10, 20\)"):
        eval_run(eval_workspace.run, step=5)
    with pytest.raises(FcError, match=r"eval limits: probes: 'poetry' is not a probe"):
        eval_run(eval_workspace.run, limits=EvalLimits(probes=("poetry",)))
    empty = clone_run(eval_workspace.run, tmp_path / "empty")
    for ckpt in (empty / "ckpt").iterdir():
        for f in ckpt.iterdir():
            f.unlink()
        ckpt.rmdir()
    with pytest.raises(RunError, match=r"has no checkpoint yet"):
        eval_run(empty)


def _fcwork(ws_root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fcwork.cli", *args, "--workspace", str(ws_root)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env={**__import__("os").environ,
                                                                            "COLUMNS": "160"})


def test_cli_eval_shows_a_table_and_compare_puts_runs_side_by_side(eval_workspace, capsys):
    from fcwork.cli import main

    root = eval_workspace.ws.root
    a = clone_run(eval_workspace.run, eval_workspace.ws.runs_dir / "cli-eval-a")
    b = clone_run(eval_workspace.tied_run, eval_workspace.ws.runs_dir / "cli-eval-b")
    eval_run(b, limits=FAST)
    done = _fcwork(root, "eval", a.name, "--docs", "1", "--tokens", "300", "--items", "2", "--sample-tokens", "8",
                   "--threads", "1")
    assert done.returncode == 0, done.stderr
    assert "bits/byte" in done.stdout and "chess: legal next move" in done.stdout and "science" in done.stdout
    shown = _fcwork(root, "eval", a.name, "--show")
    assert shown.returncode == 0 and "held-out" in shown.stdout
    cmp = _fcwork(root, "eval", "compare", a.name, b.name)
    assert cmp.returncode == 0, cmp.stderr
    assert "cli-eval-a" in cmp.stdout and "cli-eval-b" in cmp.stdout and "bits/byte, chess" in cmp.stdout
    # Refusals in-process (the same CLI code; five fewer interpreter start-ups, one of them importing torch).
    capsys.readouterr()
    code = main(["eval", a.name, "--step", "3", "--workspace", str(root)])
    err = capsys.readouterr().err
    assert code == 2 and "no checkpoint at step 3" in err and err.count("\n") == 1, err
    code = main(["eval", "compare", a.name, "--step", "999", "--workspace", str(root)])
    err = capsys.readouterr().err
    assert code == 2 and "no eval at step 999" in err, err
    for args, message in ((("--items", "-3"), "--items: expected a non-negative integer, got -3"),
                          (("--sample-tokens", "-1"), "--sample-tokens: expected a non-negative integer, got -1"),
                          (("--probes", "chess,poetry"), "--probes: 'poetry' is not a probe")):
        code = main(["eval", a.name, *args, "--workspace", str(root)])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1, err


def test_eval_line_shows_loss_bpb_and_probe_scores():
    from fcwork.live import eval_line

    ev = {"type": "eval", "step": 40, "loss": 3.21, "bpb": 1.234,
          "probes": {"chess": {"legal": 0.25, "match": 0.0}, "science": {"accuracy": 0.5, "chance": 0.25}}}
    line = eval_line(ev)
    assert line == ("eval at step 40: held-out loss 3.2100, 1.234 bits/byte; chess: legal next move 0.250, "
                    "chess: game's move 0.000, science: cloze accuracy 0.500")
    assert eval_line({"step": 2, "loss": 5.0, "probe_error": "ValueError: x"}).endswith("; probes failed: ValueError: x")


@given(st.lists(st.sampled_from(["alpha", "beta", "gamma", "delta", "omega", "theta", "kappa", "sigma", "lambda",
                                 "epsilon", "zeta", "iota"]), min_size=30, max_size=200), st.integers(0, 50))
def test_science_distractors_match_the_answer_in_length_and_frequency(words, seed):
    """A model that only prefers common words must not beat chance: each distractor is among the
    NEAREST candidates in log-frequency, within one letter of the answer's length."""
    import random
    from collections import Counter

    counts = Counter(words)
    word = words[0]
    got = science_probe.distractors(word, counts, random.Random(seed))
    pool = [w for w in counts if abs(len(w) - len(word)) <= 1 and w != word]
    if len(pool) < 3:
        assert got is None
        return
    assert len(set(got)) == 3 and word not in got and all(w in pool for w in got)
    gap = sorted(abs(math.log(counts[w]) - math.log(counts[word])) for w in pool)
    limit = gap[min(len(gap), science_probe.NEAREST) - 1]
    assert all(abs(math.log(counts[w]) - math.log(counts[word])) <= limit for w in got)


def test_eval_device_auto_and_refusals(workspace):
    from rich.console import Console

    from fcwork.commands.eval import eval_device

    console = Console(file=open(os.devnull, "w"))
    has_cuda, has_mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    assert eval_device(workspace, "cpu", console) == "cpu"
    assert eval_device(workspace, "auto", console) == ("cuda" if has_cuda else "mps" if has_mps else "cpu")
    if not has_cuda:
        with pytest.raises(FcError, match=r"^--device cuda: this machine has no CUDA device \(expected auto, cpu"):
            eval_device(workspace, "cuda", console)


def test_eval_device_auto_leaves_a_training_accelerator_alone(workspace, monkeypatch):
    from rich.console import Console

    from engine.jobs.queue import StageQueue
    from fcwork.commands.eval import eval_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # pretend there is a GPU
    console = Console(file=open(os.devnull, "w"))
    assert eval_device(workspace, "auto", console) == "cuda"
    q = StageQueue(workspace)
    entry = q.add("default", "base")
    q.update(entry.id, state="running")
    assert eval_device(workspace, "auto", console) == "cpu"
    assert eval_device(workspace, "cuda", console) == "cuda"  # asked for explicitly


def test_cli_generate_streams_greedy_text_and_refuses_bad_input(eval_workspace, capsys):
    from engine.data.chat_template import chat_prompt
    from fcwork.cli import main
    from engine.model.generate import SamplingConfig, generate
    from engine.data.tokenizer import EOS_ID

    root, run = eval_workspace.ws.root, eval_workspace.run
    tok = _tokenizer(eval_workspace)
    model = load_run_model(run)
    want = tok.decode(generate(model, [EOS_ID, *tok.encode("def add(")], SamplingConfig(12), stop_ids=(EOS_ID,)).tokens)
    done = _fcwork(root, "generate", run.name, "def add(", "-n", "12", "-t", "0", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert done.stdout == want + ("" if want.endswith("\n") else "\n")
    assert "tok/s" in done.stderr and "prompt tokens" in done.stderr
    piped = subprocess.run([sys.executable, "-m", "fcwork.cli", "generate", run.name, "-", "-n", "12", "-t", "0",
                            "--workspace", str(root)], cwd=REPO, input="def add(", capture_output=True, text=True,
                           timeout=300)
    assert piped.returncode == 0 and piped.stdout == done.stdout, piped.stderr
    chat = _fcwork(root, "generate", run.name, "--chat", "hi", "-n", "40", "-t", "0")
    end = tok.encode("<|end|>")
    full = generate(model, [EOS_ID, *tok.encode(chat_prompt("hi"))], SamplingConfig(40), stop_ids=(EOS_ID, *end))
    assert chat.returncode == 0 and chat.stdout.rstrip("\n") == tok.decode(full.tokens).rstrip("\n"), chat.stderr
    # Refusals in-process (the same CLI code; three fewer interpreter start-ups).
    for args, message in ((("x", "-t", "-1"), "temperature: expected a number >= 0, got -1.0"),
                          (("x", "--system", "s"), "--system: expected together with --chat"),
                          (("x", "--step", "7"), "no checkpoint at step 7")):
        code = main(["generate", run.name, *args, "--workspace", str(root)])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1, err


def test_complete_many_is_complete_for_each_prompt(eval_workspace):
    """The probes' batched completions are the one-by-one ones: same text and reason, stops per prompt."""
    from engine.model.generate import SamplingConfig

    lm = ModelLM(load_run_model(eval_workspace.run), _tokenizer(eval_workspace), batch=3)
    prompts = ["1. e4 e5 2. Nf3", "def mean(xs):\n    ", "| a | b |\n|---|---|\n| 1 | 2 |\nmax of a:", "The", "x = ["]
    stops = [lambda t: " " in t.strip(), None, lambda t: "\n" in t, None, lambda t: "]" in t]
    many = lm.complete_many(prompts, 12, stops)
    assert many == [lm.complete(p, 12, stop=s) for p, s in zip(prompts, stops)]
    cfg = SamplingConfig(10, 0.8, 40, 0.95, 7)
    sampled = lm.complete_many(prompts, 10, [None] * len(prompts), sampling=cfg)
    assert sampled == [lm.complete(p, 10, sampling=SamplingConfig(10, 0.8, 40, 0.95, 7 + i))
                       for i, p in enumerate(prompts)]


# -- suites of standard benchmarks through lm-eval (engine.lmeval) ------------------------------------

def test_local_suite_runs_end_to_end_on_the_hf_export_and_compare_lines_it_up(eval_workspace, capsys):
    from engine.eval.harness import DomainScore, EvalReport, append_eval, record
    from engine.lmeval import centred, is_suite_record
    from fcwork.cli import main

    root = eval_workspace.ws.root
    run = clone_run(eval_workspace.run, eval_workspace.ws.runs_dir / "suite-a")
    held_out = EvalReport({"code": DomainScore(1, 100, 300, 300 * math.log(2) * 1.25)}, {}, {})
    append_eval(run, record(held_out, run.name, 20, "ckpt/step-20", "cd" * 32, FAST, "cpu"))
    assert main(["--workspace", str(root), "eval", run.name, "--suite", "local", "--limit", "20",
                 "--threads", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "fc_tiny_mc" in out and "acc_norm" in out and "centred mean" in out
    rec = read_evals(run)[-1]
    assert is_suite_record(rec) and rec["suite"] == "local" and rec["step"] == 20
    assert rec["export"] == "exports/hf-f32-step20" and rec["merged_lora"] is False
    task = rec["metrics"]["tasks"]["fc_tiny_mc"]
    assert task["n"] == 20 and task["chance"] == 0.25 and task["metric"] == "acc_norm"
    assert 0 <= task["score"] <= 1 and (task["score"] * 20).is_integer()
    assert task["centred"] == pytest.approx(centred(task["score"], 0.25)) == rec["metrics"]["centred"]
    assert set(task["metrics"]) >= {"acc", "acc_norm"} and rec["checkpoint_sha256"] == sha256_file(
        run / "ckpt" / "step-20" / "model.safetensors")
    example = rec["examples"]["fc_tiny_mc"][0]
    assert example["choices"] == [" 3", " 6", " [1, 2, 3]", " 1"]
    # lm-eval's log-likelihoods on the export are our model's, split as lm-eval splits context and continuation.
    tok, model = _tokenizer(eval_workspace), load_run_model(run)
    for choice, theirs in zip(example["choices"], example["loglikelihoods"]):
        ctx = tok.encode(example["context"])
        ids = ctx + tok.encode(example["context"] + choice)[len(ctx):]
        with torch.no_grad():
            logp = F.log_softmax(model(torch.tensor([ids[:-1]])).float()[0], dim=-1)
        ours = sum(logp[i - 1, ids[i]].item() for i in range(len(ctx), len(ids)))
        assert ours == pytest.approx(theirs, abs=2e-3)
    assert (run / "exports" / "hf-f32-step20" / "config.json").exists()
    # The held-out eval stays what `--show` and the harness columns read; compare lines both up.
    assert main(["--workspace", str(root), "eval", run.name, "--show"]) == 0
    assert "held-out" in capsys.readouterr().out
    assert main(["--workspace", str(root), "eval", "compare", run.name]) == 0
    table = capsys.readouterr().out
    assert "1.2500" in table and "bits/byte, all" in table and "local: centred" in table and "fc_tiny_mc acc_norm" in table
    assert f"{task['score']:.3f}" in table


def test_suite_errors_are_one_line(eval_workspace, tmp_path, capsys):
    """A task whose data cannot be downloaded, a code task not allowed, an unknown suite: one line, no traceback."""
    from fcwork.cli import main

    root = eval_workspace.ws.root
    run = clone_run(eval_workspace.run, eval_workspace.ws.runs_dir / "suite-errors")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "offline.yaml").write_text(
        "task: arc_easy_here\ndataset_path: allenai/ai2_arc\ndataset_name: ARC-Easy\noutput_type: multiple_choice\n"
        "test_split: test\ndoc_to_text: '{{question}}'\ndoc_to_target: 0\ndoc_to_choice: '{{choices.text}}'\n")
    (tasks / "unsafe.yaml").write_text(
        "task: runs_code\ncustom_dataset: !function engine.lmeval.tasks.local_data.load\n"
        "dataset_kwargs:\n  file: fc_tiny_mc.jsonl\nunsafe_code: true\noutput_type: generate_until\n"
        "test_split: test\ndoc_to_text: '{{question}}'\ndoc_to_target: '{{answer}}'\n")
    profile = eval_workspace.ws.profiles_dir / "evalfx.toml"
    before = profile.read_text(encoding="utf-8")
    profile.write_text(before + f'\n[eval]\ntask_paths = ["{tasks}"]\n'
                       '[eval.suites]\noffline = ["arc_easy_here"]\ncode_here = ["runs_code"]\n', encoding="utf-8")
    try:
        # Offline (as on this machine), a task lm-eval would download: one line, in a process of its own so
        # that datasets reads HF_DATASETS_OFFLINE as it loads.
        done = subprocess.run([sys.executable, "-m", "fcwork.cli", "--workspace", str(root), "eval", run.name,
                               "--suite", "offline", "--device", "cpu"], cwd=REPO, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
                              stdin=subprocess.DEVNULL)
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
        assert lines[-1].startswith("fcwork: error: task arc_easy_here: cannot load it (") and \
            "allenai/ai2_arc" in lines[-1], done.stderr[-3000:]
        for suite, message in (("code_here", "task runs_code: runs the model's programs on this machine to score "
                                             "them; pass --allow-code to allow it"),
                               ("nope", "--suite 'nope': expected one of core, code, local, offline, code_here")):
            assert main(["--workspace", str(root), "eval", run.name, "--suite", suite]) == 2
            err = capsys.readouterr().err
            assert err == f"fcwork: error: {message}\n"
    finally:
        profile.write_text(before, encoding="utf-8")
    assert not (run / "evals.jsonl").exists()
