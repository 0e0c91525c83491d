"""Optimized time steps: the step locations that bring a few-step solve closest to a reference solve.

In the spirit of "Align Your Steps" (Sabour et al., 2024) and GITS (Chen et al., 2024): the nfe - 1
interior times are searched (Nelder-Mead on the log-increments of lambda, so the times stay ordered)
to minimise the mean absolute difference between the sampler's output and a high-accuracy solve of
the probability-flow ODE started from the same x_T. The first time stays at T (tuning it did not
transfer between laws) and the last is 0.

- Without a network the reference is `mrlight.analytic.pf_ode_reference` (DOP853) on three calibration
  laws (`calibration_laws`), none of them a law the benchmarks or tests evaluate on.
- With `model_fn` and images `mu` the reference is the network's own PF-ODE solved with
  `reference_nfe` steps of the third-order MR ODE solver, and the steps are tuned for that network.

The search calls the sampler it tunes through `sample_fn` (normally `mrlight.sampling.sample`, which
`mrlight.sampling.optimize_times` passes), so this module imports nothing above it. Stored tables
for `time_schedule="optimized"` live in `mrlight.sampling.step_tables`; nothing is tuned inside
`sample()`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from mrlight.errors import NonFiniteError
from mrlight.sampling.schedules import get_times
from mrlight.sde import MRSDE

# (calibration pixels, Nelder-Mead evaluations) of the stored tables and of on-first-use tuning:
# minutes, not hours, on one CPU core.
BUDGETS = {5: (4000, 600), 10: (2000, 400), 20: (2000, 250)}


def budget(nfe: int) -> tuple[int, int]:
    return BUDGETS.get(nfe, (2000, max(100, min(600, 6000 // max(nfe, 1)))))


def calibration_laws():
    """Laws the stored steps are tuned on; none is a law the benchmarks or tests evaluate on."""
    from mrlight.analytic import GaussianMixture

    return [GaussianMixture(weights=[0.4, 0.35, 0.25], means=[-0.2, 0.0, 0.15], stds=[0.05, 0.03, 0.06]),
            GaussianMixture(weights=[0.5, 0.5], means=[-0.05, 0.12], stds=[0.08, 0.02]),
            GaussianMixture(weights=[0.2, 0.5, 0.3], means=[-0.3, -0.05, 0.2], stds=[0.03, 0.07, 0.04])]


class _LawsOracle:
    """Perfect network for a batch whose images are split evenly between several laws."""

    def __init__(self, laws, sde, batch: int):
        from mrlight.analytic import Oracle

        self.oracles = [Oracle(law, sde, "noise") for law in laws]
        self.chunks = torch.arange(batch).chunk(len(laws))

    def __call__(self, x_t, mu, t):
        return torch.cat([o(x_t[c], mu[c], t[c]) for o, c in zip(self.oracles, self.chunks)])

    def reference(self, sde, y_T, t_end: float) -> torch.Tensor:
        """x(0) - mu of the exact PF-ODE (DOP853 to t_end, then the posterior mean there)."""
        from mrlight.analytic import pf_ode_reference

        tt = torch.tensor(t_end, dtype=torch.float64)
        return torch.cat([o.law.posterior_mean(pf_ode_reference(o.law, sde, y_T[c], t_end), sde.alpha(tt),
                                               sde.sigma_bar(tt)) for o, c in zip(self.oracles, self.chunks)])


def times_from_params(sde: MRSDE, params, lam_start: float) -> torch.Tensor:
    """T, then the times whose lambdas grow from lambda(T) by exp(params[i]) each, then 0."""
    lam = lam_start + torch.cumsum(torch.as_tensor(params, dtype=torch.float64).exp(), 0)
    t = sde.t_from_lambda(lam)
    return torch.cat([torch.tensor([float(sde.T)], dtype=torch.float64), t, torch.zeros(1, dtype=torch.float64)])


def params_from_times(sde: MRSDE, times: torch.Tensor) -> torch.Tensor:
    lam = sde.half_log_snr(times[:-1].double())
    return torch.diff(lam).clamp(min=1e-6).log()


class _Problem:
    """The few-step sampler and its reference, on a fixed batch: distance(times) -> float."""

    def __init__(self, sample, sde, nfe, sampler_kwargs, model_fn, mu, pixels, seed, reference_nfe, prediction):
        self.sde, self.nfe, self.kwargs, self.sample = sde, nfe, sampler_kwargs, sample
        g = torch.Generator().manual_seed(seed)
        if model_fn is None:
            self.mu = torch.full((pixels // 100, 1, 10, 10), 0.5)
            self.x_T = sde.prior_sample(self.mu, g)
            self.model_fn, self.prediction = _LawsOracle(calibration_laws(), sde, len(self.mu)), "noise"
            # lambda(0) = inf: stop the reference at t = 0.05, where the posterior mean differs from
            # x(0) by O(sigma_bar^2)
            self.ref = (self.mu.double() + self.model_fn.reference(sde, (self.x_T - self.mu).double(), 0.05)).float()
        else:
            self.mu, self.model_fn, self.prediction = mu.float(), model_fn, prediction
            self.x_T = sde.prior_sample(self.mu, g)
            self.ref = sample(model_fn, self.mu, sde, nfe=reference_nfe, solver="ode", order=3,
                              parameterization="data", time_schedule="karras-t-tmin", t_min=1.0,
                              prediction=prediction, x_T=self.x_T)
        self.lam_start = sde.half_log_snr(torch.tensor(float(sde.T), dtype=torch.float64)).item()
        self.evaluations = 0

    def distance(self, times) -> float:
        self.evaluations += 1
        t = torch.as_tensor(times, dtype=torch.float64)
        if not bool((t[:-1] > t[1:]).all()) or t[-2] <= 1e-3:
            return 1.0
        try:
            out = self.sample(self.model_fn, self.mu, self.sde, nfe=self.nfe, time_schedule=t.tolist(),
                              prediction=self.prediction, x_T=self.x_T, **self.kwargs)
        except NonFiniteError:
            return 1.0
        return (out - self.ref).abs().mean().item()

    def objective(self, params) -> float:
        return self.distance(times_from_params(self.sde, params, self.lam_start))


def optimize_times(sde: MRSDE, nfe: int, *, sample_fn: Callable, order: int = 2, corrector: str = "none", solver: str = "ode",
                   parameterization: str = "data", model_fn: Callable | None = None, mu: torch.Tensor | None = None,
                   prediction: str = "noise", pixels: int = 4000, seed: int = 0, max_evals: int | None = None,
                   reference_nfe: int = 100, init: str = "karras-t-tmin", unic_variant: str | None = None,
                   progress: Callable | None = None):
    """Times (a list of nfe + 1 floats from T to 0) minimising the distance to a reference PF-ODE solve.

    Without `model_fn`, calibrates on an analytic laws (`calibration_laws`, `pixels` pixels in all); with a
    network `model_fn(x_t, mu, t)` (output `prediction`) and validation images `mu`, tunes the steps
    for that network. `sample_fn` is the sampling function with `mrlight.sampling.sample`'s
    signature. `progress(evaluations, best)` is called after each evaluation. Returns
    (times, {"before": distance of the `init` schedule, "after": distance of the result}).
    """
    from scipy.optimize import minimize

    if (model_fn is None) != (mu is None):
        raise ValueError("optimize_times needs both model_fn and mu (validation images), or neither")
    kwargs = dict(solver=solver, order=order, parameterization=parameterization, corrector=corrector)
    if corrector != "none" and unic_variant is not None:
        kwargs["unic_variant"] = unic_variant
    problem = _Problem(sample_fn, sde, nfe, kwargs, model_fn, mu, pixels, seed, reference_nfe, prediction)
    start = get_times(init, sde, nfe)
    before = problem.distance(start)
    if nfe == 1:
        return start.tolist(), {"before": before, "after": before}
    best = [before, start]

    def objective(params):
        times = times_from_params(sde, params, problem.lam_start)
        d = problem.distance(times)
        if d < best[0]:
            best[:] = [d, times]
        if progress is not None:
            progress(problem.evaluations, best[0])
        return d

    x0 = params_from_times(sde, start).numpy()
    budget = max_evals or 150 * (nfe - 1)
    minimize(objective, x0, method="Nelder-Mead",
             options=dict(maxfev=budget, xatol=1e-3, fatol=1e-7, adaptive=nfe > 5))
    return best[1].tolist(), {"before": before, "after": best[0]}
