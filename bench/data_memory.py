"""Memory and throughput of the data pipeline on real formats: does memory grow with the corpus?

Generates inputs of two sizes (MB of uncompressed text) in the formats a user brings:
science as .jsonl.zst records (title, abstract, nested meta.lang; template + where), code as
parquet with nested struct columns (row groups; template over file.path/file.content, where on
meta.lang), chess as .pgn.zst (min_elo filter), data notebooks as webdataset tars, chat as
.jsonl.zst with a messages list. Then, for each size, in a fresh workspace, runs the three CLI
steps as subprocesses: `fcwork data build`, `tokenizer train`, `data pretokenize`, and reports for
each the wall time, MB/s of input, and peak RSS: the largest single process (ru_maxrss of all
descendants) and the whole process tree summed (psutil, sampled every 0.1 s). The ratio of the
large run's peak to the small run's is the figure: 1.0 means memory does not grow with the corpus.

    nice python bench/data_memory.py --sizes 200 2000
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
OUT = REPO / "bench" / "out" / "data_memory"
SPLIT = {"science": 0.35, "code": 0.30, "chess": 0.10, "data": 0.15, "chat": 0.10}
FILE_MB = 64  # uncompressed MB per input file


class Words:
    """Documents cut from one big block of pseudo-words (fast to make; a unique id keeps them distinct)."""

    def __init__(self, seed: int, mb: int = 48) -> None:
        rng = np.random.default_rng(seed)
        letters = np.array(list("etaoinshrdlucmfwypvbgkjqxz"))
        vocab = ["".join(rng.choice(letters, size=rng.integers(2, 10))) for _ in range(20_000)]
        zipf = np.minimum(rng.zipf(1.3, size=mb * 180_000), len(vocab)) - 1
        words = np.array(vocab, dtype=object)[zipf]
        for i in range(0, len(words), 13):  # sentences
            words[i] = words[i].capitalize()
        self.block = " ".join(words.tolist())
        self.rng = random.Random(seed)

    def doc(self, n_chars: int) -> str:
        start = self.rng.randrange(0, len(self.block) - n_chars - 1)
        return self.block[start : start + n_chars]


def _zstd_writer(path: Path):
    import zstandard

    return zstandard.ZstdCompressor(level=3).stream_writer(open(path, "wb"), closefd=True)


def gen_science(root: Path, mb: float, w: Words) -> None:
    n_files = max(1, round(mb / FILE_MB))
    per_file, k = mb * 1e6 / n_files, 0
    for f in range(n_files):
        with _zstd_writer(root / f"science-{f:03d}.jsonl.zst") as out:
            done = 0
            while done < per_file:
                rec = {"title": f"Paper {k}: {w.doc(60)}", "abstract": w.doc(w.rng.randint(600, 2400)),
                       "meta": {"lang": "fr" if k % 10 == 0 else "en", "year": 2000 + k % 25}}
                line = json.dumps(rec) + "\n"
                out.write(line.encode())
                done += len(line)
                k += 1


def gen_code(root: Path, mb: float, w: Words) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n_files = max(1, round(mb / FILE_MB))
    per_file, k = mb * 1e6 / n_files, 0
    for f in range(n_files):
        writer = None
        done = 0
        while done < per_file:
            rows = []
            for _ in range(2000):
                body = "\n".join(f"    {line}" for line in w.doc(w.rng.randint(800, 3000)).split(" . "))
                content = f"def f{k}(x):\n{body}\n    return x\n"
                rows.append({"file": {"path": f"src/m{k}.py", "content": content},
                             "meta": {"lang": "python" if k % 8 else "c"}, "stars": k % 100})
                done += len(content) + 20
                k += 1
            table = pa.Table.from_pylist(rows)
            if writer is None:
                writer = pq.ParquetWriter(root / f"code-{f:03d}.parquet", table.schema)
            writer.write_table(table, row_group_size=2000)
        writer.close()


def gen_chess(root: Path, mb: float, seed: int) -> None:
    import chess

    rng = random.Random(seed)
    pool = []
    for _ in range(300):
        board, sans = chess.Board(), []
        for _ in range(rng.randint(30, 110)):
            legal = list(board.legal_moves)
            if not legal:
                break
            move = rng.choice(legal)
            sans.append(board.san(move))
            board.push(move)
        pool.append(" ".join((f"{i // 2 + 1}. " if i % 2 == 0 else "") + m + (" { [%clk 0:02:5" + str(i % 10) + "] }")
                             for i, m in enumerate(sans)))
    n_files = max(1, round(mb / FILE_MB))
    per_file, k = mb * 1e6 / n_files, 0
    for f in range(n_files):
        with _zstd_writer(root / f"lichess-{f:03d}.pgn.zst") as out:
            done = 0
            while done < per_file:
                tc = rng.choice(["60+0", "180+0", "180+2", "300+3", "600+5", "900+10"])
                game = (f'[Event "Rated game"]\n[Site "https://lichess.org/{k:010d}"]\n[White "w{k}"]\n'
                        f'[Black "b{k}"]\n[Result "*"]\n[WhiteElo "{rng.randint(1200, 2600)}"]\n'
                        f'[BlackElo "{rng.randint(1200, 2600)}"]\n[TimeControl "{tc}"]\n\n{rng.choice(pool)} *\n\n')
                out.write(game.encode())
                done += len(game)
                k += 1


def gen_data(root: Path, mb: float, w: Words) -> None:
    n_files = max(1, round(mb / FILE_MB))
    per_file, k = mb * 1e6 / n_files, 0
    for f in range(n_files):
        with tarfile.open(root / f"notebooks-{f:03d}.tar", "w") as tar:
            done = 0
            while done < per_file:
                text = f"# analysis {k}\n| a | b |\n|---|---|\n| {k} | {k * 3} |\n\n" + w.doc(w.rng.randint(500, 2500))
                data = text.encode()
                info = tarfile.TarInfo(f"{k:09d}.txt")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                done += len(data)
                k += 1


def gen_chat(root: Path, mb: float, w: Words) -> None:
    n_files = max(1, round(mb / FILE_MB))
    per_file, k = mb * 1e6 / n_files, 0
    for f in range(n_files):
        with _zstd_writer(root / f"chat-{f:03d}.jsonl.zst") as out:
            done = 0
            while done < per_file:
                msgs = [{"role": "user", "content": f"Question {k}: {w.doc(200)}?"},
                        {"role": "assistant", "content": w.doc(w.rng.randint(300, 1500))}]
                line = json.dumps({"id": k, "messages": msgs}) + "\n"
                out.write(line.encode())
                done += len(line)
                k += 1


def generate(root: Path, mb: float) -> None:
    stamp = root / "done"
    if stamp.exists():
        return
    root.mkdir(parents=True, exist_ok=True)
    w = Words(seed=int(mb))
    gen_science(root, mb * SPLIT["science"], w)
    gen_code(root, mb * SPLIT["code"], w)
    gen_chess(root, mb * SPLIT["chess"], int(mb))
    gen_data(root, mb * SPLIT["data"], w)
    gen_chat(root, mb * SPLIT["chat"], w)
    stamp.write_text("ok")


PROFILE = """
[profile]
name = "bench"
seed = 1
[mix]
science = 0.35
code = 0.30
chess = 0.10
data = 0.15
chat = 0.10
[data]
target_tokens = {tokens}
heldout_fraction = 0.01
chars_per_token = 3.6
shares = {{ science = 0.35, code = 0.30, chess = 0.10, data = 0.15, chat = 0.10 }}
[tokenizer]
vocab_size = 8000
sample_chars = 8_000_000
[[sources]]
name = "arxiv"
domain = "science"
format = "jsonl"
path = "{inputs}/science-*.jsonl.zst"
template = "{{title}}\\n\\n{{abstract}}"
where = {{ "meta.lang" = "en" }}
[[sources]]
name = "code"
domain = "code"
format = "parquet"
path = "{inputs}/code-*.parquet"
template = "# {{file.path}}\\n{{file.content}}"
where = {{ "meta.lang" = "python" }}
[[sources]]
name = "lichess"
domain = "chess"
format = "pgn"
path = "{inputs}/lichess-*.pgn.zst"
min_elo = 1400
comments = false
[[sources]]
name = "notebooks"
domain = "data"
format = "webdataset"
path = "{inputs}/notebooks-*.tar"
[[sources]]
name = "chat"
domain = "chat"
format = "jsonl"
path = "{inputs}/chat-*.jsonl.zst"
field = "messages"
"""


def _hwm(pid: int) -> int:
    """A process's own peak RSS so far (VmHWM), bytes; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure(cmd: list[str], env: dict) -> dict:
    """Run cmd to its end: seconds, and peak RSS of the largest process, of the whole tree at one moment
    (sampled), and the sum of every process's own peak (VmHWM: a bound that sampling cannot miss)."""
    import psutil

    peak_tree = 0
    hwm: dict[int, int] = {}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
    reader.start()
    top = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [top] + top.children(recursive=True)
            peak_tree = max(peak_tree, sum(p.memory_info().rss for p in tree if p.is_running()))
            for p in tree:
                hwm[p.pid] = max(hwm.get(p.pid, 0), _hwm(p.pid))
        except psutil.Error:
            pass
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    reader.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{b''.join(out).decode(errors='replace')[-3000:]}")
    return {"seconds": seconds, "tree_mb": peak_tree / 1e6, "hwm_sum_mb": sum(hwm.values()) / 1e6,
            "log": b"".join(out).decode(errors="replace")}


def max_rss_of(cmd: list[str], env: dict) -> dict:
    """measure() in a fresh child of a fresh interpreter, so ru_maxrss covers this step's processes only."""
    code = ("import json, resource, sys; sys.path.insert(0, %r); from data_memory import measure; "
            "r = measure(%r, %r); r['max_mb'] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e3; "
            "r.pop('log'); print(json.dumps(r))") % (str(REPO / "bench"), cmd, env)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    if res.returncode != 0:
        raise SystemExit(res.stdout[-2000:] + res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def input_bytes(root: Path) -> int:
    """Bytes on disk of the generated inputs (compressed where they are)."""
    return sum(p.stat().st_size for p in root.iterdir() if p.name != "done")


def run_size(mb: int, workers: int) -> dict:
    import shutil

    inputs = OUT / f"inputs-{mb}"
    t0 = time.perf_counter()
    generate(inputs, mb)
    gen_s = time.perf_counter() - t0
    ws = OUT / f"ws-{mb}"
    shutil.rmtree(ws, ignore_errors=True)
    (ws / "profiles").mkdir(parents=True)
    tokens = int(mb * 1e6 / 3.6 * 1.5)  # more than the inputs hold: every source is read to the end
    (ws / "profiles" / "bench.toml").write_text(PROFILE.format(tokens=tokens, inputs=inputs))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cli = [sys.executable, "-m", "fcwork.cli", "--workspace", str(ws)]
    steps = {
        "data build": cli + ["data", "build", "bench", "--workers", str(workers)],
        "tokenizer train": cli + ["tokenizer", "train", "bench"],
        "data pretokenize": cli + ["data", "pretokenize", "bench", "--workers", str(workers)],
    }
    result = {"mb": mb, "disk_mb": input_bytes(inputs) / 1e6, "generate_s": gen_s, "steps": {}}
    for name, cmd in steps.items():
        r = max_rss_of(cmd, env)
        r["mb_per_s"] = mb / r["seconds"]
        result["steps"][name] = r
        print(f"  {mb:>5} MB  {name:<17} {r['seconds']:7.1f} s  {r['mb_per_s']:6.2f} MB/s  "
              f"largest process {r['max_mb']:7.1f} MB  tree {r['tree_mb']:7.1f} MB  "
              f"sum of process peaks {r['hwm_sum_mb']:7.1f} MB", flush=True)
    manifest = json.loads((ws / "data" / "bench" / "raw" / "manifest.json").read_text())
    result["corpus_chars"] = sum(d["chars"] + d["heldout_chars"] for d in manifest["domains"].values())
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs=2, default=[200, 2000], metavar=("SMALL_MB", "LARGE_MB"))
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"data pipeline memory, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"workers {args.workers}", flush=True)
    small, large = (run_size(mb, args.workers) for mb in args.sizes)
    print()
    for name in small["steps"]:
        s, l = small["steps"][name], large["steps"][name]
        print(f"{name:<17} peak largest process {l['max_mb']:.0f} / {s['max_mb']:.0f} MB = {l['max_mb'] / s['max_mb']:.2f}x; "
              f"tree {l['tree_mb']:.0f} / {s['tree_mb']:.0f} MB = {l['tree_mb'] / s['tree_mb']:.2f}x; "
              f"sum of process peaks {l['hwm_sum_mb']:.0f} / {s['hwm_sum_mb']:.0f} MB = "
              f"{l['hwm_sum_mb'] / s['hwm_sum_mb']:.2f}x; {s['mb_per_s']:.1f} / {l['mb_per_s']:.1f} MB/s")
    s_peak = max(v["hwm_sum_mb"] for v in small["steps"].values())
    l_peak = max(v["hwm_sum_mb"] for v in large["steps"].values())
    print(f"pipeline peak (sum of process peaks): {l_peak:.0f} MB at {args.sizes[1]} MB vs {s_peak:.0f} MB at {args.sizes[0]} MB "
          f"= {l_peak / s_peak:.2f}x (target <= 1.2x); corpus {small['corpus_chars'] / 1e6:.0f}M and "
          f"{large['corpus_chars'] / 1e6:.0f}M chars; inputs on disk {small['disk_mb']:.0f} and {large['disk_mb']:.0f} MB")
    (OUT / "result.json").write_text(json.dumps({"small": small, "large": large}, indent=2))


if __name__ == "__main__":
    main()
