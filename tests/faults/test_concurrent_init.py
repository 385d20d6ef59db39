"""First use of a workspace from many processes at once (the TUI, the CLI and the supervisor
starting together): every one of them succeeds, and each profile is copied whole, once."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import REPO

ROUNDS, PROCESSES = 12, 24

# Real processes (forked, released together by a barrier), each running Workspace.init on the same
# fresh folder; prints one line per failure.
SCRIPT = textwrap.dedent("""
    import multiprocessing as mp, sys, traceback
    from pathlib import Path
    from engine.workspace import Workspace

    def init(root, barrier, out):
        barrier.wait()
        try:
            Workspace(Path(root)).init()
            out.put("")
        except BaseException:
            out.put(traceback.format_exc().strip().splitlines()[-1])

    if __name__ == "__main__":
        ctx = mp.get_context("fork")
        base, rounds, n = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
        for r in range(rounds):
            barrier, out = ctx.Barrier(n), ctx.Queue()
            procs = [ctx.Process(target=init, args=(str(base / f"ws{r}"), barrier, out)) for _ in range(n)]
            for p in procs:
                p.start()
            results = [out.get(timeout=60) for _ in procs]
            for p in procs:
                p.join()
            for line in filter(None, results):
                print(line)
""")


def test_concurrent_first_use_never_fails(tmp_path):
    from engine.workspace import SHIPPED_PROFILES

    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(ROUNDS), str(PROCESSES)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "", f"{len(done.stdout.splitlines())} of {ROUNDS * PROCESSES} inits failed:\n{done.stdout}"
    shipped = {p.name: p.read_bytes() for p in SHIPPED_PROFILES.glob("*.toml")}
    for r in range(ROUNDS):
        profiles = tmp_path / f"ws{r}" / "profiles"
        assert {p.name: p.read_bytes() for p in profiles.iterdir()} == shipped  # whole copies, no temp files left


def test_init_never_replaces_a_profile_the_user_has(tmp_path):
    from engine.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    ws.init()
    mine = ws.profiles_dir / "default.toml"
    mine.write_text("# my edits\n")
    ws.init()
    assert mine.read_text() == "# my edits\n"
