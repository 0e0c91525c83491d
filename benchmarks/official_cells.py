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
   step ends at u = 1/510 (issue 9 then carried the state to t = 0 with the newest eps; since
   issue 18 it stops there). Summed W1 over the noise-form ODE-2/3 rows (5 schedules, NFE 5/10/20,
   both laws) for the u-space step it replaced, three end points, and with the UniC corrector.

8. The t_min (last positive time) of mrlight's own uniform-lambda grid, `uniform-lambda-tmin` (named
   `uniform-lambda` until issue 18), for the ODE-3 data cell: summed W1 over the uniform-lambda rows
   mrlight and the official code share (ODE 1-3 both forms, SDE 1-2 data form; NFE 5/10/20; both
   laws) and the cells still behind, per t_min.

Issue 18 (since which `uniform-lambda` is the official grid itself, exactly as the official code
builds it, and mrlight's former grid is `uniform-lambda-tmin`); seed means over seeds 0-4 on three
laws (the two above and the held-out law of tests/test_sampler_v2.py):

9. uniform-lambda against uniform-lambda-tmin on every configuration the official code runs on that grid.
10. Every configuration the official code supports (ODE 1-3, SDE 1-2, both forms, linspace /
    uniform-lambda / karras-t) at NFE 5, 10 and 20: official rules vs mrlight's `sample()`.
11. The noise-form SDE-2 cells: the step into t = 0 and the times taken apart (replays of mrlight's
    sampler with the official last step and on the official times), the spread of the output for
    single Gaussian laws, and the stability of the noise-form SDE-2 recursion for a point mass.

12. karras-t (since issue 18's second round the official grid: rho 7 from T down to t = 1; since the
    third round it stops there, as the official sampler does) against karras-t-tmin (mrlight's
    default, named karras-t before) on every configuration the official code runs on its karras-t grid.
13. The third-order coefficient: mrlight's ODE-3 noise form with its exact coefficient of the second
    derivative against the same sampler with that coefficient halved, as the official code's phi_3
    term has it, on mrlight's own grids, four laws, NFE 5/10/20 (the one cell behind the official
    rules at NFE 10 is an ODE-3 noise cell).

    python benchmarks/official_cells.py                  # all sections, about 40 minutes on one CPU core
    python benchmarks/official_cells.py --sections 9 10 11 12 13   # issue 18 only
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_samplers import DaclipGrid, official_mr_sample, official_times  # noqa: E402
from sampler_quality import SECOND_LAW  # noqa: E402

from mrlight.analytic import GaussianMixture, Oracle, wasserstein1  # noqa: E402
from mrlight.sampling import get_times, sample  # noqa: E402
from mrlight.sampling.common import Denoiser, randn_like  # noqa: E402
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
    rule, end_u, carry = mr_module.ends_at_noise_form_end, mr_module.NOISE_FORM_END_U, mr_module.NOISE_FORM_END_CARRY
    # (label, end point u, then carried to t = 0 with the newest eps): issue 9 carried, issue 18 stops
    variants = [("u-space step to t = 0 (before issue 9)", None, True), ("end at u = 1/1020, carry", 0.5 / 510, True),
                ("end at u = 1/510, carry (issue 9)", 1 / 510, True), ("end at u = 1/255, carry", 1 / 255, True),
                ("end at u = 1/510, stop (issue 18)", 1 / 510, False)]
    scheds = ["linspace", "uniform-lambda-tmin", "karras-t-tmin", "quadratic-t", "optimized"]  # as run in issue 9
    laws = (GaussianMixture(), GaussianMixture(**SECOND_LAW))
    print(f"\n### The noise-form ODE's end point (seed {seed}; sums over ODE-2/3, {len(scheds)} schedules, "
          "NFE 5/10/20, both laws)\n")
    print("| final step | summed W1, no corrector | ODE-2 linspace NFE 5 | summed W1, UniC | "
          "ODE-2 linspace NFE 5, UniC |\n|---|---|---|---|---|")
    try:
        for label, u, carry_on in variants:
            mr_module.NOISE_FORM_END_CARRY = carry_on
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
        mr_module.NOISE_FORM_END_CARRY = carry


def uniform_lambda_t_min(sde, mu, seed, floor, t_mins=(3.0, 2.0, 1.0, 0.5)):
    """Section 8."""
    cfgs = [("ode", o, p) for o in (1, 2, 3) for p in ("data", "noise")] + [("sde", o, "data") for o in (1, 2)]
    laws = (GaussianMixture(), GaussianMixture(**SECOND_LAW))
    runs = [(li, s, o, p, n) for li in range(2) for s, o, p in cfgs for n in (5, 10, 20)]
    off = {r: official_w1(laws[r[0]], sde, mu, r[4], *r[1:4], "uniform-lambda", seed) for r in runs}
    print(f"\n### uniform-lambda-tmin's t_min (seed {seed}; {len(runs)} runs: ODE 1-3 both forms, SDE 1-2 data, "
          "NFE 5/10/20, both laws)\n")
    print("| t_min | summed W1 | ODE-3 data NFE 10, benchmark law | cells behind the official rules by > 2 x floor |\n"
          "|---|---|---|---|")
    for t_min in t_mins:
        total, behind, cell = 0.0, [], None
        for r in runs:
            li, solver, order, param, n = r
            out = sample(Oracle(laws[li], sde), mu, sde, nfe=n, solver=solver, order=order, parameterization=param,
                         time_schedule="uniform-lambda-tmin", t_min=t_min, generator=torch.Generator().manual_seed(seed))
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
    p.add_argument("--seeds", type=int, default=5, help="seeds for the seed means of sections 5 and 9-11")
    p.add_argument("--cache", type=Path, default=None,
                   help="JSON file of the W1 runs of sections 9-11, read first and written after each section")
    p.add_argument("--sections", type=int, nargs="+", default=list(range(1, 14)), choices=range(1, 14),
                   help="sections to run (1-3 and 4 run together; default: all)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    sde, grid = MRSDE(), DACLIP
    mu = torch.full((a.pixels // 100, 1, 10, 10), 0.5)
    t_end = sde.t_from_lambda(grid.lam[:1]).item()  # mrlight's time at the official end point's lambda
    print(f"W1 to the true law, {a.pixels} pixels, seed {a.seed}, torch {torch.__version__}, 1 thread; "
          f"official end point lambda(0) = {grid.lam[0].item():.2f} on DA-CLIP's grid = t {t_end:.3f} on mrlight's")
    for order, param, sched, n in CELLS if set(a.sections) & {1, 2, 3, 4} else []:
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
    sections = {5: lambda: seed_means(sde, mu, a.seeds, floor), 6: lambda: global_end_point(sde, mu, t_end, a.seed, floor),
                7: lambda: noise_form_end(sde, mu, a.seed), 8: lambda: uniform_lambda_t_min(sde, mu, a.seed, floor),
                9: lambda: uniform_lambda_grids(sde, mu, a.seeds), 10: lambda: all_cells(sde, mu, a.seeds),
                11: lambda: noise_sde2_cells(sde, mu, a.seeds), 12: lambda: karras_t_grids(sde, mu, a.seeds),
                13: lambda: third_order_coefficient(sde, mu, a.seeds)}
    if a.cache is not None and a.cache.is_file():
        _RUNS.update({tuple(json.loads(k)): v for k, v in json.loads(a.cache.read_text()).items()})
    for k in sorted(set(a.sections) & set(sections)):
        sections[k]()
        if a.cache is not None:
            a.cache.write_text(json.dumps({json.dumps(k): v for k, v in _RUNS.items()}))


# -- issue 18 -----------------------------------------------------------------------------------------

# The laws of sections 9-11: the two of benchmarks/sampler_quality.py and the held-out law of
# tests/test_sampler_v2.py (HELD_OUT), on which the noise-form SDE-2 gaps of issue 18 were found.
LAWS = {"benchmark": dict(), "second": SECOND_LAW,
        "held-out": dict(weights=[0.6, 0.4], means=[-0.1, 0.15], stds=[0.05, 0.05])}
# Narrower than the noise left at linspace's last positive time (sigma_bar(5) = 0.015 at NFE 20).
NARROW_LAW = dict(weights=[0.5, 0.5], means=[-0.1, 0.1], stds=[0.01, 0.01])
NFES = (5, 10, 20)
_RUNS: dict = {}


def _law(law_name) -> GaussianMixture:
    return GaussianMixture(**(NARROW_LAW if law_name == "narrow" else LAWS[law_name]))


def _run(family, law_name, solver, order, param, sched, n, seed, sde, mu) -> float:
    """W1 of one run, memoised: family "official" (the official rules) or "mrlight" (`sample`)."""
    key = (family, law_name, solver, order, param, sched, n, seed, mu.numel())
    if key not in _RUNS:
        law = _law(law_name)
        if family == "official":
            _RUNS[key] = official_w1(law, sde, mu, n, solver, order, param, sched, seed)
        else:
            _RUNS[key] = mrlight_w1(law, sde, mu, n, solver, order, param, sched, seed)
    return _RUNS[key]


def _law_scales(law_name, pixels, seeds):
    """(seed mean of the exact-sample floor, W1 of returning mu itself) for a law."""
    law = _law(law_name)
    floor = sum(wasserstein1(law.sample((pixels,), torch.Generator().manual_seed(s + 1)), law) for s in range(seeds)) / seeds
    return floor, wasserstein1(torch.zeros(pixels, dtype=torch.float64), law)


# How a table cell marks each verdict of `_verdict`.
_MARK = {"both diverged": " (both diverged)", "mrlight better": "", "equal within 2 x floor": " (=)",
         "**official better**": " **(official better)**"}


def _verdict(mine, off, floor, trivial):
    if min(mine, off) > trivial:
        return "both diverged"
    if mine < off - 2 * floor:
        return "mrlight better"
    if mine <= off + 2 * floor:
        return "equal within 2 x floor"
    return "**official better**"


def uniform_lambda_grids(sde, mu, seeds):
    """Section 9: uniform-lambda (now the official grid) against uniform-lambda-tmin (mrlight's old one)."""
    configs = [(s, o, p) for s, o in (("ode", 1), ("ode", 2), ("ode", 3), ("sde", 1), ("sde", 2)) for p in ("data", "noise")]
    print(f"\n### uniform-lambda (the official grid) vs uniform-lambda-tmin (seed means, seeds 0-{seeds - 1})\n")
    print("Every configuration the official code runs on its linear-lambda grid; W1 seed means, per law.\n")
    print("| solver | order | param | NFE | law | official rules | uniform-lambda | uniform-lambda-tmin | better grid |\n"
          "|---|---|---|---|---|---|---|---|---|")
    totals = {"grid": 0.0, "tmin": 0.0}
    wins = {"grid": 0, "tmin": 0, "tie": 0}
    behind = {"grid": [], "tmin": []}
    for law_name in LAWS:
        floor, trivial = _law_scales(law_name, mu.numel(), seeds)
        for n in NFES:
            for solver, order, param in configs:
                m = {}
                for fam, sched in (("official", "uniform-lambda"), ("grid", "uniform-lambda"), ("tmin", "uniform-lambda-tmin")):
                    runs = [_run("official" if fam == "official" else "mrlight", law_name, solver, order, param, sched, n, s,
                                 sde, mu) for s in range(seeds)]
                    m[fam] = sum(runs) / seeds
                diverged = min(m.values()) > trivial
                if not diverged:
                    for k in totals:
                        totals[k] += min(m[k], trivial)
                        if m[k] > m["official"] + 2 * floor:
                            behind[k].append(f"{law_name} {solver.upper()}-{order} {param} NFE {n} "
                                             f"({m[k]:.4f} vs {m['official']:.4f})")
                better = ("tie" if abs(m["grid"] - m["tmin"]) <= 2 * floor else "grid" if m["grid"] < m["tmin"] else "tmin")
                wins[better] += not diverged
                label = {"tie": "tie", "grid": "uniform-lambda", "tmin": "uniform-lambda-tmin"}[better]
                print(f"| {solver} | {order} | {param} | {n} | {law_name} | {m['official']:.4f} | {m['grid']:.4f} | "
                      f"{m['tmin']:.4f} | {'all diverged' if diverged else label} |")
    print(f"\nRows where not all three diverged: uniform-lambda better in {wins['grid']}, uniform-lambda-tmin better in "
          f"{wins['tmin']}, within 2 x floor in {wins['tie']}; summed W1 (each capped at returning mu) "
          f"{totals['grid']:.4f} (uniform-lambda) vs {totals['tmin']:.4f} (uniform-lambda-tmin).")
    for k, name in (("grid", "uniform-lambda"), ("tmin", "uniform-lambda-tmin")):
        print(f"Behind the official rules by more than 2 x floor with {name}: {'; '.join(behind[k]) or 'none'}.")


def karras_t_grids(sde, mu, seeds):
    """Section 12: karras-t (now the official grid) against karras-t-tmin (mrlight's default, formerly karras-t)."""
    configs = [(s, o, p) for s, o in (("ode", 1), ("ode", 2), ("ode", 3), ("sde", 1), ("sde", 2)) for p in ("data", "noise")]
    print(f"\n### karras-t (the official grid) vs karras-t-tmin (seed means, seeds 0-{seeds - 1})\n")
    print("Every configuration the official code runs on its karras-t grid; W1 seed means; verdicts against the "
          "official rules (within = within 2 x floor; diverged = above returning mu).\n")
    print("| solver | order | param | NFE | law | official rules | karras-t | karras-t-tmin |\n|---|---|---|---|---|---|---|---|")
    totals = {"karras-t": 0.0, "karras-t-tmin": 0.0}
    counts = {k: {} for k in totals}
    for law_name in LAWS:
        floor, trivial = _law_scales(law_name, mu.numel(), seeds)
        for n in NFES:
            for solver, order, param in configs:
                off = sum(_run("official", law_name, solver, order, param, "karras-t", n, s, sde, mu) for s in range(seeds)) / seeds
                cells = []
                for sched in totals:
                    m = sum(_run("mrlight", law_name, solver, order, param, sched, n, s, sde, mu) for s in range(seeds)) / seeds
                    totals[sched] += min(m, trivial)
                    v = _verdict(m, off, floor, trivial)
                    counts[sched][(n, v)] = counts[sched].get((n, v), 0) + 1
                    cells.append(f"{m:.4f}{_MARK[v]}")
                print(f"| {solver} | {order} | {param} | {n} | {law_name} | {off:.4f} | " + " | ".join(cells) + " |")
    kinds = ["mrlight better", "equal within 2 x floor", "**official better**", "both diverged"]
    print("\n| grid | NFE | " + " | ".join(k.strip("*") for k in kinds) + " |\n|---|---|" + "---|" * len(kinds))
    for sched in totals:
        for n in NFES:
            print(f"| {sched} | {n} | " + " | ".join(str(counts[sched].get((n, k), 0)) for k in kinds) + " |")
    print(f"\nSummed W1 (each capped at returning mu): karras-t {totals['karras-t']:.4f}, "
          f"karras-t-tmin {totals['karras-t-tmin']:.4f}.")


def all_cells(sde, mu, seeds):
    """Section 10: every official configuration at NFE 5/10/20, seed means, mrlight's defaults vs the official rules."""
    print(f"\n### Every official configuration, seed means over seeds 0-{seeds - 1}\n")
    print("mrlight runs `sample()` with the configuration's solver, order, form and schedule and its own defaults; "
          "'within noise' is within 2 x the exact-sample floor (seed mean) of the official seed mean; 'both diverged': "
          "both above the W1 of returning mu.\n")
    summary = {}
    behind = []
    for law_name in LAWS:
        floor, trivial = _law_scales(law_name, mu.numel(), seeds)
        print(f"\n#### {law_name} law (floor {floor:.4f}, returning mu {trivial:.4f})\n")
        print("| solver | order | param | schedule | NFE 5 official / mrlight | NFE 10 official / mrlight | "
              "NFE 20 official / mrlight | mrlight - official per seed (NFE 5; 10; 20) |\n|---|---|---|---|---|---|---|---|")
        for solver, order, param, sched in OFFICIAL_CONFIGS:
            cells, spreads = [], []
            for n in NFES:
                off = [_run("official", law_name, solver, order, param, sched, n, s, sde, mu) for s in range(seeds)]
                mine = [_run("mrlight", law_name, solver, order, param, sched, n, s, sde, mu) for s in range(seeds)]
                m_off, m_mine = sum(off) / seeds, sum(mine) / seeds
                v = _verdict(m_mine, m_off, floor, trivial)
                counts = summary.setdefault(n, {})
                counts[v] = counts.get(v, 0) + 1
                if v.startswith("**"):
                    behind.append((law_name, solver, order, param, sched, n, m_off, m_mine, min(b - a for a, b in zip(off, mine)),
                                   max(b - a for a, b in zip(off, mine))))
                mark = _MARK[v]
                cells.append(f"{m_off:.4f} / {m_mine:.4f}{mark}")
                diffs = [b - a for a, b in zip(off, mine)]
                spreads.append(f"{min(diffs):+.4f} .. {max(diffs):+.4f}")
            print(f"| {solver} | {order} | {param} | {sched} | " + " | ".join(cells) + " | " + "; ".join(spreads) + " |")
    print(f"\n#### Summary over {len(OFFICIAL_CONFIGS)} configurations x {len(LAWS)} laws\n")
    kinds = ["mrlight better", "equal within 2 x floor", "**official better**", "both diverged"]
    print("| NFE | " + " | ".join(k.strip("*") for k in kinds) + " |\n|---|" + "---|" * len(kinds))
    for n in NFES:
        print(f"| {n} | " + " | ".join(str(summary[n].get(k, 0)) for k in kinds) + " |")
    print("\nCells where the official rules are better by more than 2 x floor:\n")
    print("| law | solver | order | param | schedule | NFE | official | mrlight | mrlight - official per seed |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for law_name, solver, order, param, sched, n, m_off, m_mine, lo, hi in behind:
        print(f"| {law_name} | {solver} | {order} | {param} | {sched} | {n} | {m_off:.4f} | {m_mine:.4f} | {lo:+.4f} .. {hi:+.4f} |")


def noise_sde_run(law, sde, mu, times, final, seed, order=2):
    """mrlight's noise-form SDE (its coefficients, history, noise draws and order rule) with the step
    into t = 0 chosen: "u" (mrlight's: the u-space polynomial in eps) or "official" (the official
    code's: an ordinary SDE step of full order to its finite lambda(0) = 6.11, and stop)."""
    g = torch.Generator().manual_seed(seed)
    x = sde.prior_sample(mu, g)
    den = Denoiser(Oracle(law, sde), mu, sde, "noise")
    times = torch.as_tensor(times, dtype=torch.float64)
    lam, a, sb = (f(times).tolist() for f in (sde.half_log_snr, sde.alpha, sde.sigma_bar))
    n = len(times) - 1
    hist_q, hist_lam = [], []
    for i in range(n):
        s = times[i].item()
        hist_q.insert(0, den.noise(den(x, s, i), x, s))
        hist_lam.insert(0, lam[i])
        del hist_q[order:], hist_lam[order:]
        k = min(len(hist_q), n - i) if n < mr_module.LOWER_ORDER_BELOW_NFE else len(hist_q)
        if i < n - 1 or sb[i + 1] > 0:
            coeffs = mr_step_coefficients("sde", "noise", hist_lam[:k], lam[i + 1], a[i], a[i + 1], sb[i], sb[i + 1])
            x = _apply(x, mu, hist_q[:k], coeffs, randn_like(x, g))
        elif final == "u":
            x = _final_step_in_u(x, mu, a[i], hist_lam, hist_q) if len(hist_q) > 1 else \
                _apply(x, mu, hist_q[:1], mr_step_coefficients("sde", "noise", hist_lam[:1], lam[i + 1], a[i], a[i + 1],
                                                                 sb[i], 0.0), randn_like(x, g))
        else:  # the official end: lambda(0) of DA-CLIP's grid, full order
            lam_e = DACLIP.lam[0].item()
            t_e = sde.t_from_lambda(torch.tensor(lam_e, dtype=torch.float64))
            a_e, sb_e = sde.alpha(t_e).item(), sde.sigma_bar(t_e).item()
            coeffs = mr_step_coefficients("sde", "noise", hist_lam, lam_e, a[i], a_e, sb[i], sb_e)
            x = _apply(x, mu, hist_q, coeffs, randn_like(x, g))
    return x


def delta_law_root(h: float, h_prev: float) -> float:
    """Largest |root| of the noise-form SDE-2 recursion for a point-mass law (exact eps = the state's own
    noise e in units of sigma_bar): e_t = (2 - e^h - 2c) e_s + 2c e_prev + sqrt(e^{2h} - 1) z, c = (e^h - 1 - h) / h_prev.
    Above 1 the injected noise grows geometrically from step to step."""
    c = (math.expm1(h) - h) / h_prev
    A, B = 2 - math.exp(h) - 2 * c, 2 * c
    disc = math.sqrt(A * A + 4 * B)
    return max(abs((A + disc) / 2), abs((A - disc) / 2))


def noise_sde2_cells(sde, mu, seeds):
    """Section 11: the noise-form SDE-2 cells of issue 18, taken apart."""
    print(f"\n### Noise-form SDE-2: where its gaps to the official rules come from (seed means, seeds 0-{seeds - 1})\n")
    print("Both codes take the same step (coefficients, eps history, noise, order rule at NFE >= 10: "
          "`tests/test_official_rules.py` checks one step against the official formula); they differ in the step "
          "into t = 0 and in the times. Columns: the official rules; mrlight's `sample()`; the replay of mrlight's "
          "sampler (must equal `sample()`); the replay with the official last step (an SDE step of full order to the "
          "official finite lambda(0), leaving its noise); mrlight's steps on the official times (mapped by lambda) "
          "with mrlight's step into t = 0; with the official last step on the official times.\n")
    print("| law | schedule | NFE | official | mrlight | replay | official last step | official times | "
          "official times and last step |\n|---|---|---|---|---|---|---|---|---|")
    laws = dict(LAWS, narrow=NARROW_LAW)
    for law_name, kw in laws.items():
        law = GaussianMixture(**kw)
        for sched, n in (("linspace", 20), ("karras-t", 10), ("linspace", 10), ("karras-t", 20), ("uniform-lambda", 20)):
            off_raw = official_times(DACLIP, n, sched)
            lam_off = DACLIP.interp(off_raw[1:], DACLIP.t, DACLIP.lam)
            off_t = torch.cat([torch.tensor([float(sde.T)], dtype=torch.float64), sde.t_from_lambda(lam_off)])
            off_t0 = torch.cat([off_t[:-1], torch.zeros(1, dtype=torch.float64)]) if off_t[-1] > 0 else off_t
            mine_t = get_times(sched, sde, n)
            cols = {k: [] for k in ("off", "mine", "replay", "last", "times", "both")}
            for s in range(seeds):
                cols["off"].append(_run("official", law_name, "sde", 2, "noise", sched, n, s, sde, mu))
                cols["mine"].append(_run("mrlight", law_name, "sde", 2, "noise", sched, n, s, sde, mu))
                cols["replay"].append(w1_of(noise_sde_run(law, sde, mu, mine_t, "u", s), mu, law))
                cols["last"].append(w1_of(noise_sde_run(law, sde, mu, mine_t, "official", s), mu, law))
                cols["times"].append(w1_of(noise_sde_run(law, sde, mu, off_t0, "u", s), mu, law))
                cols["both"].append(w1_of(noise_sde_run(law, sde, mu, off_t, "official", s), mu, law))
            print(f"| {law_name} | {sched} | {n} | " + " | ".join(f"{sum(v) / seeds:.4f}" for v in cols.values()) + " |")
    print("\nSpread of the output (std / true std) for a single Gaussian law of std v (200k pixels, seed 0), "
          "linspace NFE 20: the state at t = 5 and after the step into t = 0.\n")
    print("| v | state at t = 5 | mrlight's step into t = 0 | the official last step | official rules |\n|---|---|---|---|---|")
    big = torch.full((2000, 1, 10, 10), 0.5)
    for v in (0.01, 0.02, 0.05, 0.1):
        law = GaussianMixture(weights=[1.0], means=[0.0], stds=[v])
        seen = {}
        sample(Oracle(law, sde), big, sde, nfe=20, solver="sde", order=2, parameterization="noise", time_schedule="linspace",
               generator=torch.Generator().manual_seed(0), callback=lambda d: seen.__setitem__(d["t"], d["x"]))
        t5 = torch.tensor(5.0, dtype=torch.float64)
        true5 = math.sqrt(sde.alpha(t5).item() ** 2 * v * v + sde.sigma_bar(t5).item() ** 2)
        times = get_times("linspace", sde, 20)
        mine = noise_sde_run(law, sde, big, times, "u", 0)
        last = noise_sde_run(law, sde, big, times, "official", 0)
        off = official_mr_sample(Oracle(law, sde, schedule=DACLIP.at), big, DACLIP, 20, solver="sde", order=2,
                                 parameterization="noise", schedule="linspace", generator=torch.Generator().manual_seed(0))
        print(f"| {v} | {(seen[5.0] - 0.5).std().item() / true5:.3f} | {(mine - 0.5).std().item() / v:.3f} | "
              f"{(last - 0.5).std().item() / v:.3f} | {(off - 0.5).std().item() / v:.3f} |")
    h_star = next(h / 1000 for h in range(100, 2000) if delta_law_root(h / 1000, h / 1000) > 1)
    print(f"\nPoint-mass law, equal steps h: the noise-form SDE-2 recursion (both codes) is unstable for h > {h_star:.3f} "
          f"(largest root {delta_law_root(0.5, 0.5):.2f} at h = 0.5, {delta_law_root(0.8, 0.8):.2f} at h = 0.8); "
          "the first-order step is stable at every h. Steps in lambda of the grids at NFE 10: "
          + "; ".join(f"{s} " + ", ".join(f"{v:.2f}" for v in sde.half_log_snr(get_times(s, sde, 10)[:-1]).diff().tolist())
                      for s in ("linspace", "karras-t", "uniform-lambda")) + ".")


@contextlib.contextmanager
def official_third_order_term():
    """mrlight's sampler with the coefficient of the second derivative halved in every third-order step
    (the official phi_3 term, DPM-Solver++(3M)'s: (phi_2 / h - 1/2) D2 with D2 ~ h^2 f'' / 2)."""
    exact = mr_module._kernel_coefficients

    def halved(kind, h, k, c=1.0):
        out = exact(kind, h, k, c)
        if k == 3:
            out[2] *= 0.5
        return out

    mr_module._kernel_coefficients = halved
    try:
        yield
    finally:
        mr_module._kernel_coefficients = exact


def third_order_coefficient(sde, mu, seeds):
    """Section 13: ODE-3 noise form, exact vs halved third-order coefficient, on mrlight's grids."""
    print(f"\n### ODE-3 noise form: the exact third-order coefficient against the official halved one "
          f"(seed means, seeds 0-{seeds - 1})\n")
    print("mrlight's `sample()` (order 3, noise parameterization, its defaults otherwise) with the exact coefficient "
          "of the second derivative and with it halved as in the official code; 'tie' is within 2 x floor.\n")
    print("| law | schedule | NFE | exact | halved | better |\n|---|---|---|---|---|---|")
    totals, wins = {"exact": 0.0, "halved": 0.0}, {"exact": 0, "halved": 0, "tie": 0}
    for law_name in list(LAWS) + ["narrow"]:
        law = _law(law_name)
        floor, _ = _law_scales(law_name, mu.numel(), seeds)
        for sched in ("linspace", "karras-t-tmin", "uniform-lambda-tmin", "quadratic-t"):
            for n in NFES:
                m = {}
                for name in totals:
                    with official_third_order_term() if name == "halved" else contextlib.nullcontext():
                        m[name] = sum(mrlight_w1(law, sde, mu, n, "ode", 3, "noise", sched, s) for s in range(seeds)) / seeds
                    totals[name] += m[name]
                d = m["halved"] - m["exact"]
                better = "tie" if abs(d) <= 2 * floor else "halved" if d < 0 else "exact"
                wins[better] += 1
                print(f"| {law_name} | {sched} | {n} | {m['exact']:.4f} | {m['halved']:.4f} | {better} |")
    print(f"\nSummed W1: exact {totals['exact']:.4f}, halved {totals['halved']:.4f}; better by more than 2 x floor: "
          f"exact in {wins['exact']}, halved in {wins['halved']}, tie in {wins['tie']} of {sum(wins.values())}.")


if __name__ == "__main__":
    main()
