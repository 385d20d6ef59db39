"""`python -m engine.train RUN_DIR`: train (or resume) the run in RUN_DIR.

Exit codes: 0 finished or stopped cleanly, 2 a user/config error, 1 a crash (traceback in
RUN_DIR/trainer.log). Environment knobs: FCWORK_TRAIN_THREADS pins torch's CPU threads;
FCWORK_CKPT_WRITE_DELAY (seconds) slows checkpoint writes, for testing kills mid-write.
"""

from __future__ import annotations

import argparse
import sys


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.train", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run folder made by `fcwork train` or the queue (holds stage.toml)")
    args = parser.parse_args(argv)
    from engine.train.trainer import main

    return main(args.run_dir)


if __name__ == "__main__":
    sys.exit(cli())
