"""Compute the stored tables of `time_schedule="optimized"` (mrlight/sampling/optimized_steps.json).

For IR-SDE's standard SDEs (T = 100, cosine, eps = 0.005, max_sigma 10 / 30 / 50 / 70) and every
NFE in 5 / 10 / 20, MR ODE order 1 / 2 / 3 (data form) and corrector none / unic, the steps of
`mrlight.sampling.optimize_times` on its calibration laws (none of them a law the benchmarks
evaluate on), with a bounded Nelder-Mead budget so the whole table fits in about an hour of one
CPU core.

    python benchmarks/tune_tables.py                       # all four max_sigma, writes the JSON
    python benchmarks/tune_tables.py --max-sigma 10 30 --out /tmp/part.json    # a part
    python benchmarks/tune_tables.py --merge /tmp/a.json /tmp/b.json          # parts -> the JSON
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mrlight.sampling import optimize_times  # noqa: E402
from mrlight.sampling.optimize import BUDGETS  # noqa: E402
from mrlight.sampling.step_tables import TABLE_NFES, TABLE_ORDERS, TABLE_PATH, entry_key, sde_key  # noqa: E402
from mrlight.sde import MRSDE  # noqa: E402

MAX_SIGMAS = (10, 30, 50, 70)
PIXELS = {n: b[0] for n, b in BUDGETS.items()}
MAX_EVALS = {n: b[1] for n, b in BUDGETS.items()}


def tune(max_sigmas, out: Path) -> dict:
    tables = json.loads(out.read_text()) if out.exists() else {}
    for ms in max_sigmas:
        sde = MRSDE(max_sigma=ms)
        block = tables.setdefault(sde_key(sde), {"times": {}, "distance": {}})
        for nfe in TABLE_NFES:
            for order in TABLE_ORDERS:
                for corrector in ("none", "unic"):
                    key = entry_key(nfe, order, corrector)
                    if key in block["times"]:
                        continue
                    t0 = time.perf_counter()
                    times, info = optimize_times(sde, nfe, order=order, corrector=corrector, pixels=PIXELS[nfe],
                                                 max_evals=MAX_EVALS[nfe])
                    block["times"][key] = [round(t, 6) for t in times]
                    block["distance"][key] = {k: round(v, 7) for k, v in info.items()}
                    out.write_text(json.dumps(tables, indent=1))
                    print(f"max_sigma {ms} {key}: {info['before']:.5f} -> {info['after']:.5f} "
                          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return tables


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-sigma", type=float, nargs="+", default=list(MAX_SIGMAS))
    p.add_argument("--out", type=Path, default=TABLE_PATH)
    p.add_argument("--merge", type=Path, nargs="+", default=None, help="merge these part files into --out")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    if a.merge:
        tables = {}
        for part in a.merge:
            tables.update({k: v for k, v in json.loads(part.read_text()).items() if not k.startswith("_")})
    else:
        tables = tune(a.max_sigma, a.out)
    tables["_note"] = (f"Computed by benchmarks/tune_tables.py: mrlight.sampling.optimize_times on its calibration "
                       f"laws, pixels per NFE {PIXELS}, Nelder-Mead budget per NFE {MAX_EVALS} evaluations, start karras-t-tmin, "
                       f"data-form MR ODE; 'distance' is the mean |x - x_ref| to the DOP853 reference before "
                       f"(karras-t-tmin) and after. Machine: {platform.machine()} CPU, 1 thread, torch {torch.__version__}.")
    a.out.write_text(json.dumps(tables, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
