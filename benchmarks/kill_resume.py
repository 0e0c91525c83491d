"""kill -9 `python train.py task=demo` at random moments and resume with ckpt_path=last, until it finishes.

    python benchmarks/kill_resume.py [--steps 300] [--every 20] [--min-life 5] [--max-life 40] [--seed 0]

Every life is the same command (`ckpt_path=last` always, as a requeue script would pass it), killed
with SIGKILL after a uniformly random number of seconds; some lives also get the test hook that
SIGKILLs the process halfway through one of its checkpoint writes. The loop stops when a life exits
by itself. It then checks that every life started from a readable checkpoint (or fresh when none
existed yet) and that the final `last.ckpt` is readable and at `--steps`. Exits 1 if not.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mrlight.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from mrlight.checkpoint_io import KILL_DURING_SAVE_ENV  # noqa: E402


def _step(path: Path) -> int | None:
    """The checkpoint's global step; None if there is none; raises CheckpointError if unreadable."""
    return load_checkpoint(path)["global_step"] if path.is_file() else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="trainer.max_steps")
    parser.add_argument("--every", type=int, default=20, help="checkpoint.every_n_steps")
    parser.add_argument("--min-life", type=float, default=5.0, help="shortest life in seconds")
    parser.add_argument("--max-life", type=float, default=40.0, help="longest life before the kill")
    parser.add_argument("--kill-in-save", type=float, default=0.3, help="share of lives killed inside a write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-lives", type=int, default=60)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="kill_resume_"))
    out = work / "run"
    last = out / "checkpoints" / "last.ckpt"
    command = [sys.executable, str(REPO / "train.py"), "task=demo", f"output_dir={out}", f"data.root={work / 'data'}",
               f"trainer.max_steps={args.steps}", f"checkpoint.every_n_steps={args.every}", "ckpt_path=last",
               "logger.backend=none", "trainer.enable_progress_bar=false"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    print(f"run: {' '.join(command[1:])}\n" f"{'life':>4} {'from step':>9} {'killed after':>12} {'how':>14} "
          f"{'last.ckpt step':>14}", flush=True)
    started = time.monotonic()
    for life in range(1, args.max_lives + 1):
        before = _step(last)
        life_env = dict(env)
        in_save = rng.random() < args.kill_in_save
        if in_save:  # SIGKILL halfway through this life's 1st or 2nd checkpoint write
            life_env[KILL_DURING_SAVE_ENV] = str(rng.randint(1, 2))
        proc = subprocess.Popen(command, env=life_env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        life_time = rng.uniform(args.min_life, args.max_life)
        try:
            stderr = proc.communicate(timeout=life_time)[1]
            how = "in-save hook" if proc.returncode == -9 else f"exit {proc.returncode}"
        except subprocess.TimeoutExpired:
            proc.kill()
            stderr = proc.communicate()[1]
            how = "kill -9"
        try:
            after = _step(last)
        except CheckpointError as err:
            print(f"FAIL: unreadable last.ckpt after life {life}: {err}")
            return 1
        print(f"{life:>4} {str(before):>9} {life_time:>11.1f}s {how:>14} {str(after):>14}", flush=True)
        if proc.returncode not in (0, -9):
            print(f"FAIL: life {life} exited with {proc.returncode}:\n{stderr[-3000:]}")
            return 1
        if proc.returncode == 0:
            break
    final = _step(last)
    minutes = (time.monotonic() - started) / 60
    ok = final == args.steps
    print(f"{'OK' if ok else 'FAIL'}: {life} lives, {minutes:.1f} min; final last.ckpt readable at step {final} "
          f"(requested {args.steps}); run directory {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
