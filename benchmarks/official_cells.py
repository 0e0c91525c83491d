"""Why the official MR Sampler rules still beat mrlight on a few configurations (issue 9, item 3).

benchmarks/sampler_quality.py lists the configurations where the official rules
(benchmarks/reference_samplers.py) are ahead of mrlight by more than twice the exact-sample floor.
This script takes the finite ones apart, with a perfect network on the two laws of that benchmark:

1. It re-runs each cell with the official rules and with mrlight's default sampler.
2. It replays the official run with mrlight's own step coefficients (`mr_step_coefficients`) on the
   official times, the official order pattern, and the official end point: DA-CLIP's grid does not
   subtract theta_0, so its t = 0 has a finite lambda (6.11 for max_sigma 50) and its last step is an
   ordinary full-order step to that lambda, returning a state that still holds noise of std 0.0022.
   If the replay matches the official number, the update formulas are not the cause.
3. It varies one cause at a time on mrlight's side: the end point (t = 0 through the u-space final
   step, or the official finite lambda), the final step's form (u-space polynomial in eps vs the
   noise form's own lambda-space limit, which is finite at every order), and the order pattern.

    python benchmarks/official_cells.py      # about 2 minutes on one CPU core
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_samplers import DaclipGrid, official_mr_sample, official_times  # noqa: E402
from sampler_quality import SECOND_LAW  # noqa: E402

from mrlight.analytic import GaussianMixture, Oracle, wasserstein1  # noqa: E402
from mrlight.sampling import get_times  # noqa: E402
from mrlight.sampling.common import Denoiser  # noqa: E402
from mrlight.sampling.mr import _apply, _final_step_in_u, _taylor_weights, mr_step_coefficients  # noqa: E402
from mrlight.sde import MRSDE  # noqa: E402

# (order, parameterization, schedule, NFE): the finite cells of docs/results/sampler_quality_v2.md
CELLS = [(2, "noise", "linspace", 5), (3, "data", "uniform-lambda", 10), (1, "noise", "karras-t", 5)]


def replay(law, sde, mu, times, orders, final, parameterization, seed):
    """The MR ODE with mrlight's coefficients, the step orders given per step, and the final step
    `final`: "u" (u-space polynomial in eps to t = 0), "lambda" (the noise form's lambda-space
    limit at t = 0: every Taylor term integrates to 1 against e^{-v}) or "plain" (a full-order lambda
    step; needs a last time > 0)."""
    g = torch.Generator().manual_seed(seed)
    x = sde.prior_sample(mu, g)
    den = Denoiser(Oracle(law, sde), mu, sde, "noise")
    times = torch.as_tensor(times, dtype=torch.float32)
    lam, a, sb = (f(times).tolist() for f in (sde.half_log_snr, sde.alpha, sde.sigma_bar))
    hist_q, hist_lam, hist_eps = [], [], []
    for i in range(len(times) - 1):
        s = times[i].item()
        out = den(x, s, i)
        eps = den.noise(out, x, s)
        hist_q.insert(0, den.data(out, x, s) if parameterization == "data" else eps)
        hist_lam.insert(0, lam[i])
        hist_eps.insert(0, eps)
        k = min(orders[i], len(hist_q))
        if sb[i + 1] > 0:
            coeffs = mr_step_coefficients("ode", parameterization, hist_lam[:k], lam[i + 1], a[i], a[i + 1], sb[i], sb[i + 1])
            x = _apply(x, mu, hist_q[:k], coeffs, None)
        elif final == "u" and k > 1:
            x = _final_step_in_u(x, mu, a[i], hist_lam[:k], hist_eps[:k])
        elif final == "lambda" or k == 1:
            E = a[i + 1] * sb[i] / a[i]  # sigma_bar_t e^h as t -> 0
            rows = _taylor_weights(hist_lam[:k], hist_lam[0])
            w = [-E * sum(rows[j][m] for j in range(k)) for m in range(k)]
            x = _apply(x, mu, hist_eps[:k], (a[i + 1] / a[i], 1 - a[i + 1] / a[i], w, 0.0), None)
        else:
            raise ValueError(f"final step {final!r} into t = 0")
    return x


def official_orders(n: int, order: int) -> list[int]:
    """The official order pattern: ramp up, lowered one step early below 10 steps, full-order last step."""
    orders = [min(i + 1, order) for i in range(n)]
    if n < 10:
        orders[:-1] = [min(o, n - 1 - i) if i >= order - 1 else o for i, o in enumerate(orders[:-1])]
    return orders


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pixels", type=int, default=60_000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    sde, grid = MRSDE(), DaclipGrid()
    mu = torch.full((a.pixels // 100, 1, 10, 10), 0.5)
    t_end = sde.t_from_lambda(grid.lam[:1]).item()  # mrlight's time at the official end point's lambda
    print(f"W1 to the true law, {a.pixels} pixels, seed {a.seed}, torch {torch.__version__}, 1 thread; "
          f"official end point lambda(0) = {grid.lam[0].item():.2f} on DA-CLIP's grid = t {t_end:.3f} on mrlight's")
    for order, param, sched, n in CELLS:
        print(f"\n### ODE order {order}, {param} form, {sched}, NFE {n}\n")
        # the official times, moved to mrlight's grid by their lambda (both grids agree to 0.05 in lambda)
        off = official_times(grid, n, sched)
        off_t = [float(sde.T)] + sde.t_from_lambda(grid.interp(off[1:], grid.t, grid.lam)).tolist()
        mine_t = get_times(sched, sde, n).tolist()
        full = [min(i + 1, order) for i in range(n)]
        rows = [
            ("official rules (DA-CLIP grid)", None),
            ("mrlight default: its times, full orders, u-space step to t = 0", (mine_t, full, "u")),
            ("replay: official times, orders and end point", (off_t, official_orders(n, order), "plain")),
            ("official times and end point, full orders", (off_t, full, "plain")),
            ("official times, full orders, u-space step to t = 0", (off_t[:-1] + [0.0], full, "u")),
            ("mrlight times, end at the official end point, full orders", (mine_t[:-1] + [t_end], full, "plain")),
            ("mrlight times, full orders, lambda-space limit to t = 0", (mine_t, full, "lambda")),
        ]
        print("| run | times | benchmark law | second law |\n|---|---|---|---|")
        for label, spec in rows:
            cells = []
            for law in (GaussianMixture(), GaussianMixture(**SECOND_LAW)):
                if spec is None:
                    out = official_mr_sample(Oracle(law, sde, schedule=grid.at), mu, grid, n, solver="ode", order=order,
                                             parameterization=param, schedule=sched,
                                             generator=torch.Generator().manual_seed(a.seed))
                else:
                    out = replay(law, sde, mu, *spec, parameterization=param, seed=a.seed)
                cells.append(f"{wasserstein1((out.clamp(0, 1) - mu).double(), law):.4f}")
            times = off_t if spec is None else spec[0]
            print(f"| {label} | {', '.join(f'{t:.2f}' for t in times)} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
