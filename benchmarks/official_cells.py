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
4. It re-runs the official rules with lambda computed from the interpolated alpha and sigma
   (`ConsistentGrid`): at times between DA-CLIP's integer grid points (karras-t, uniform-lambda) the
   official code interpolates lambda on its own, so e^h is not alpha_t sigma_s / (alpha_s sigma_t).
5. Seed means (seeds 0-4) of the flagged cells, official vs mrlight, with the W1 of returning mu
   itself: a run scoring above that has diverged, and comparing two diverged runs says nothing.
6. The global rule the cells suggest: every schedule ends at the official end point (linspace and
   uniform-lambda spread over [T, t_end], karras-t's t_min -> t_end) with ordinary steps and
   mrlight's order rules, on every official configuration at NFE 5 and 10.
7. The rule mrlight adopted instead, for the noise-form ODE only (mrlight/sampling/mr.py): its last
   step ends at u = 1/510. Summed W1 over the noise-form ODE-2/3 rows (5 schedules, NFE 5/10/20,
   both laws) for the u-space step it replaced, three end points, and with the UniC corrector.

8. The uniform-lambda schedule's t_min (its last positive time) for the remaining ODE-3 data cell:
   summed W1 over the uniform-lambda rows mrlight and the official code share (ODE 1-3 both forms,
   SDE 1-2 data form; NFE 5/10/20; both laws) and the cells still behind, per t_min.

    python benchmarks/official_cells.py      # about 8 minutes on one CPU core
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
from mrlight.sampling import get_times, sample  # noqa: E402
from mrlight.sampling.common import Denoiser  # noqa: E402
from mrlight.sampling import mr as mr_module  # noqa: E402
from mrlight.sampling.mr import _apply, _final_step_in_u, _taylor_weights, mr_step_coefficients, sample_mr  # noqa: E402
from mrlight.sde import MRSDE  # noqa: E402

# (order, parameterization, schedule, NFE): the finite cells of docs/results/sampler_quality_v2.md
CELLS = [(2, "noise", "linspace", 5), (3, "data", "uniform-lambda", 10), (1, "noise", "karras-t", 5)]
# (solver, order, parameterization, schedule, NFE): every cell behind by more than 2 x floor in
# docs/results/sampler_quality_2026-12-02.md, including the diverged noise-form SDE cells
FLAGGED = [("ode", 1, "noise", "karras-t", 5), ("ode", 2, "noise", "linspace", 5), ("ode", 3, "data", "uniform-lambda", 10),
           ("sde", 1, "noise", "linspace", 5), ("sde", 2, "noise", "linspace", 10), ("sde", 2, "noise", "uniform-lambda", 5)]
OFFICIAL_CONFIGS = [(solver, order, param, sched) for solver, order in (("ode", 1), ("ode", 2), ("ode", 3), ("sde", 1), ("sde", 2))
                    for param in ("data", "noise") for sched in ("linspace", "uniform-lambda", "karras-t")]


DACLIP = DaclipGrid()  # the official grid; the perfect network sees its interpolated alpha and sigma


class ConsistentGrid(DaclipGrid):
    """DA-CLIP's grid with lambda = log(alpha / sigma) of the interpolated alpha and sigma at every time."""

    def interp(self, x, xp, fp):
        if fp is self.lam:
            return torch.log(DaclipGrid.interp(x, xp, self.alpha)) - torch.log(DaclipGrid.interp(x, xp, self.sigma))
        return DaclipGrid.interp(x, xp, fp)


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


def finish_exactly(x, law, sde, mu, t_from: float, steps: int = 200):
    """Carry a state at t_from > 0 to t = 0 along the PF-ODE with many small third-order steps: is the
    official end point's gain the state reached there, or the noise of std 0.0022 left in it?"""
    times = torch.cat([torch.linspace(t_from, t_from / 100, steps, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)])
    return sample_mr(Denoiser(Oracle(law, sde), mu, sde, "noise"), x, mu, times, solver="ode", order=3,
                     parameterization="data")


def official_orders(n: int, order: int) -> list[int]:
    """The official order pattern: ramp up, lowered one step early below 10 steps, full-order last step."""
    orders = [min(i + 1, order) for i in range(n)]
    if n < 10:
        orders[:-1] = [min(o, n - 1 - i) if i >= order - 1 else o for i, o in enumerate(orders[:-1])]
    return orders


def w1_of(out, mu, law) -> float:
    return wasserstein1((out.clamp(0, 1) - mu).double(), law)


def official_w1(law, sde, mu, n, solver, order, param, sched, seed, grid=DACLIP) -> float:
    # the perfect network sees DA-CLIP's interpolated alpha, sigma in both grids; only the sampler's lambda differs
    out = official_mr_sample(Oracle(law, sde, schedule=DACLIP.at), mu, grid, n, solver=solver, order=order,
                             parameterization=param, schedule=sched, generator=torch.Generator().manual_seed(seed))
    return w1_of(out, mu, law)


def mrlight_w1(law, sde, mu, n, solver, order, param, sched, seed, times=None) -> float:
    """mrlight's sampler with its defaults, or (times given) `sample_mr` on those times from the same prior draw."""
    g = torch.Generator().manual_seed(seed)
    if times is None:
        out = sample(Oracle(law, sde), mu, sde, nfe=n, solver=solver, order=order, parameterization=param,
                     time_schedule=sched, generator=g)
    else:
        x = sde.prior_sample(mu, g)
        out = sample_mr(Denoiser(Oracle(law, sde), mu, sde, "noise"), x, mu, times, solver=solver, order=order,
                        parameterization=param, generator=g)
    return w1_of(out, mu, law)


def times_to_end(sde, sched, n, t_end):
    """mrlight's schedule `sched` ending at t_end > 0 instead of 0 (section 6)."""
    T = float(sde.T)
    if sched == "linspace":
        return torch.linspace(T, t_end, n + 1, dtype=torch.float64)
    if sched == "uniform-lambda":
        lam = torch.linspace(sde.half_log_snr(torch.tensor(T, dtype=torch.float64)).item(),
                             sde.half_log_snr(torch.tensor(t_end, dtype=torch.float64)).item(), n + 1, dtype=torch.float64)
        t = sde.t_from_lambda(lam)
        t[0], t[-1] = T, t_end
        return t
    t = get_times(sched, sde, n)
    t[-1] = t_end
    return t


def seed_means(sde, mu, seeds: int, floor: float):
    law = GaussianMixture()
    trivial = wasserstein1(torch.zeros(mu.numel(), dtype=torch.float64), law)
    print(f"\n### Seed means of the flagged cells (benchmark law, seeds 0-{seeds - 1})\n")
    print(f"Returning mu itself scores W1 {trivial:.4f}: a run above that has diverged.\n")
    print("| solver | order | param | schedule | NFE | official | official, consistent lambda | mrlight | "
          "mrlight - official per seed | verdict |\n|---|---|---|---|---|---|---|---|---|---|")
    for solver, order, param, sched, n in FLAGGED:
        off = [official_w1(law, sde, mu, n, solver, order, param, sched, s) for s in range(seeds)]
        con = [official_w1(law, sde, mu, n, solver, order, param, sched, s, ConsistentGrid()) for s in range(seeds)]
        mine = [mrlight_w1(law, sde, mu, n, solver, order, param, sched, s) for s in range(seeds)]
        m_off, m_con, m_mine = (sum(v) / seeds for v in (off, con, mine))
        diffs = [b - a for a, b in zip(off, mine)]
        if min(m_off, m_mine) > trivial:
            verdict = "both diverged"
        elif m_mine <= m_off + 2 * floor:
            verdict = "within 2 x floor"
        elif m_mine <= m_con + 2 * floor:
            verdict = "within 2 x floor of the official rules with consistent lambda"
        else:
            verdict = "official better"
        print(f"| {solver} | {order} | {param} | {sched} | {n} | {m_off:.4f} | {m_con:.4f} | {m_mine:.4f} | "
              f"{min(diffs):+.4f} .. {max(diffs):+.4f} | {verdict} |")


def global_end_point(sde, mu, t_end, seed, floor: float):
    law = GaussianMixture()
    print(f"\n### Every schedule ending at the official end point t = {t_end:.3f} (benchmark law, seed {seed})\n")
    print("Cells where either mrlight rule is behind the official rules by more than 2 x floor:\n")
    print("| solver | order | param | schedule | NFE | official | mrlight (to t = 0) | mrlight ending at t_end |\n"
          "|---|---|---|---|---|---|---|---|")
    behind = {"now": 0, "end": 0}
    for n in (5, 10):
        for solver, order, param, sched in OFFICIAL_CONFIGS:
            off = official_w1(law, sde, mu, n, solver, order, param, sched, seed)
            now = mrlight_w1(law, sde, mu, n, solver, order, param, sched, seed)
            end = mrlight_w1(law, sde, mu, n, solver, order, param, sched, seed, times_to_end(sde, sched, n, t_end))
            flags = {k: v > off + 2 * floor for k, v in (("now", now), ("end", end))}
            for k, f in flags.items():
                behind[k] += f
            if any(flags.values()):
                print(f"| {solver} | {order} | {param} | {sched} | {n} | {off:.4f} | {now:.4f} | {end:.4f} |")
    total = 2 * len(OFFICIAL_CONFIGS)
    print(f"\nBehind the official rules: {behind['now']} of {total} cells ending at t = 0, "
          f"{behind['end']} of {total} ending at t_end.")


def noise_form_end(sde, mu, seed):
    """Section 7: the noise-form end point, by patching the module's rule (restored afterwards)."""
    rule, end_u = mr_module.ends_at_noise_form_end, mr_module.NOISE_FORM_END_U
    variants = [("u-space step to t = 0 (before)", None), ("end at u = 1/1020", 0.5 / 510),
                ("end at u = 1/510 (adopted)", 1 / 510), ("end at u = 1/255", 1 / 255)]
    scheds = ["linspace", "uniform-lambda", "karras-t", "quadratic-t", "optimized"]
    laws = (GaussianMixture(), GaussianMixture(**SECOND_LAW))
    print(f"\n### The noise-form ODE's end point (seed {seed}; sums over ODE-2/3, {len(scheds)} schedules, "
          "NFE 5/10/20, both laws)\n")
    print("| final step | summed W1, no corrector | ODE-2 linspace NFE 5 | summed W1, UniC | "
          "ODE-2 linspace NFE 5, UniC |\n|---|---|---|---|---|")
    try:
        for label, u in variants:
            cells = []
            for corrector in ("none", "unic"):
                mr_module.ends_at_noise_form_end = (lambda s_, p_, c_: False) if u is None else (
                    lambda s_, p_, c_: (s_, p_) == ("ode", "noise"))
                if u is not None:
                    mr_module.NOISE_FORM_END_U = u
                total, cell = 0.0, None
                for law in laws:
                    for order in (2, 3):
                        for sched in scheds:
                            for n in (5, 10, 20):
                                out = sample(Oracle(law, sde), mu, sde, nfe=n, order=order, parameterization="noise",
                                             time_schedule=sched, corrector=corrector,
                                             generator=torch.Generator().manual_seed(seed))
                                w = w1_of(out, mu, law)
                                total += w
                                if cell is None:  # the first run: benchmark law, ODE-2, linspace, NFE 5
                                    cell = w
                cells += [f"{total:.4f}", f"{cell:.4f}"]
            print(f"| {label} | " + " | ".join(cells) + " |")
    finally:
        mr_module.ends_at_noise_form_end, mr_module.NOISE_FORM_END_U = rule, end_u


def uniform_lambda_t_min(sde, mu, seed, floor, t_mins=(3.0, 2.0, 1.0, 0.5)):
    """Section 8."""
    cfgs = [("ode", o, p) for o in (1, 2, 3) for p in ("data", "noise")] + [("sde", o, "data") for o in (1, 2)]
    laws = (GaussianMixture(), GaussianMixture(**SECOND_LAW))
    runs = [(li, s, o, p, n) for li in range(2) for s, o, p in cfgs for n in (5, 10, 20)]
    off = {r: official_w1(laws[r[0]], sde, mu, r[4], *r[1:4], "uniform-lambda", seed) for r in runs}
    print(f"\n### uniform-lambda's t_min (seed {seed}; {len(runs)} runs: ODE 1-3 both forms, SDE 1-2 data, "
          "NFE 5/10/20, both laws)\n")
    print("| t_min | summed W1 | ODE-3 data NFE 10, benchmark law | cells behind the official rules by > 2 x floor |\n"
          "|---|---|---|---|")
    for t_min in t_mins:
        total, behind, cell = 0.0, [], None
        for r in runs:
            li, solver, order, param, n = r
            out = sample(Oracle(laws[li], sde), mu, sde, nfe=n, solver=solver, order=order, parameterization=param,
                         time_schedule="uniform-lambda", t_min=t_min, generator=torch.Generator().manual_seed(seed))
            w = w1_of(out, mu, laws[li])
            total += w
            if w > off[r] + 2 * floor:
                behind.append(f"{'benchmark' if li == 0 else 'second'} law {solver.upper()}-{order} {param} NFE {n} "
                              f"({w:.4f} vs {off[r]:.4f})")
            if r == (0, "ode", 3, "data", 10):
                cell = w
        print(f"| {t_min:g} | {total:.4f} | {cell:.4f} | {'; '.join(behind) or 'none'} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pixels", type=int, default=60_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=5, help="seeds for the seed means of section 5")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    sde, grid = MRSDE(), DACLIP
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
            ("official rules, lambda consistent with the interpolated alpha and sigma", "consistent"),
            ("mrlight default: its times, full orders, u-space step to t = 0", (mine_t, full, "u")),
            ("replay: official times, orders and end point", (off_t, official_orders(n, order), "plain")),
            ("replay, its leftover noise then integrated away exactly (extra NFE)",
             (off_t, official_orders(n, order), "plain+exact")),
            ("official times and end point, full orders", (off_t, full, "plain")),
            ("official times, full orders, u-space step to t = 0", (off_t[:-1] + [0.0], full, "u")),
            ("mrlight times, end at the official end point, full orders", (mine_t[:-1] + [t_end], full, "plain")),
            ("mrlight times, full orders, lambda-space limit to t = 0", (mine_t, full, "lambda")),
        ]
        print("| run | times | benchmark law | second law |\n|---|---|---|---|")
        for label, spec in rows:
            cells = []
            for law in (GaussianMixture(), GaussianMixture(**SECOND_LAW)):
                if spec is None or spec == "consistent":
                    w = official_w1(law, sde, mu, n, "ode", order, param, sched, a.seed,
                                    ConsistentGrid() if spec else grid)
                else:
                    times, orders, final = spec
                    x = replay(law, sde, mu, times, orders, final.split("+")[0], parameterization=param, seed=a.seed)
                    if final.endswith("+exact"):
                        x = finish_exactly(x, law, sde, mu, times[-1])
                    w = w1_of(x, mu, law)
                cells.append(f"{w:.4f}")
            times = spec[0] if isinstance(spec, tuple) else off_t
            print(f"| {label} | {', '.join(f'{t:.2f}' for t in times)} | {cells[0]} | {cells[1]} |")
    law = GaussianMixture()
    floor = wasserstein1(law.sample((a.pixels,), torch.Generator().manual_seed(a.seed + 1)), law)
    seed_means(sde, mu, a.seeds, floor)
    global_end_point(sde, mu, t_end, a.seed, floor)
    noise_form_end(sde, mu, a.seed)
    uniform_lambda_t_min(sde, mu, a.seed, floor)


if __name__ == "__main__":
    main()
