"""The official MR Sampler's rules where mrlight promises them (issue 18).

- `uniform-lambda` and `karras-t` are the official grids (its 'linear-lambda' and 'karras-t'), checked
  against the official code's formulas restated here in numpy, including where they end: at a
  positive time where every sampler stops with the official noise left; mrlight's own variants,
  `uniform-lambda-tmin` and `karras-t-tmin`, end at t = 0.
- One step of the MR SDE solver of order 2 equals the official formula term by term, and the
  noise-form SDE-2's step into t = 0 stays mrlight's (docs/SAMPLERS.md, "Against the official MR
  Sampler rules"): the official last step spreads a law narrower than the noise left at the last
  positive time about 10-fold.
- The noise-form ODE stops at u = 1/510 (issue 18) instead of carrying the state on to t = 0 with an
  eps of the previous evaluation point (issue 9), which put ODE-2 noise linspace NFE 10 behind the
  official rules on every law.
"""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mrlight.analytic import GaussianMixture, Oracle, wasserstein1
from mrlight.sampling import get_times, sample
from mrlight.sampling.mr import mr_step_coefficients
from mrlight.sde import MRSDE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from reference_samplers import DaclipGrid, official_mr_sample, official_times  # noqa: E402

SDES = [MRSDE(), MRSDE(T=200, max_sigma=30, schedule="linear", eps=0.01)]


def official_lambda_table(T: int, max_sigma: float, schedule: str, eps: float) -> np.ndarray:
    """lambda at t = 0..T on the official code's grid (DA-CLIP's IRSDE), from its formulas (numpy float64)."""
    if schedule == "cosine":  # cosine_theta_schedule: T + 2 steps, s = 0.008, truncated to T + 1 thetas
        x = np.linspace(0, T + 2, T + 3)
        ac = np.cos(((x / (T + 2)) + 0.008) / 1.008 * math.pi * 0.5) ** 2
        thetas = 1 - (ac / ac[0])[1:-1]
    else:  # linear_theta_schedule
        scale = 1000 / (T + 1)
        thetas = np.linspace(scale * 0.0001, scale * 0.02, T + 1)
    cum = np.cumsum(thetas)  # no "- thetas[0]" on this grid
    dt = -math.log(eps) / cum[-1]
    alpha = np.exp(-cum * dt)
    sigma = max_sigma / 255 * np.sqrt(1 - np.exp(-2 * cum * dt))
    return np.log(alpha) - np.log(sigma)  # decreasing in t, finite at t = 0


def official_linear_lambda(T: int, max_sigma: float, schedule: str, eps: float, n: int) -> np.ndarray:
    """The official code's 'linear-lambda' lambdas: n + 1 equally spaced from lambda(T) to its finite lambda(0)."""
    lam = official_lambda_table(T, max_sigma, schedule, eps)
    return np.linspace(lam.min(), lam.max(), n + 1)


@pytest.mark.parametrize("sde", SDES, ids=["cosine-50", "linear-30-T200"])
@pytest.mark.parametrize("n", [1, 2, 5, 10, 20, 37, 100])
def test_uniform_lambda_is_the_official_grid_and_stops_where_it_stops(sde, n):
    ref = official_linear_lambda(sde.T, sde.max_sigma * 255, sde.schedule, sde.eps, n)
    t = get_times("uniform-lambda", sde, n)
    assert t.dtype == torch.float64 and t.shape == (n + 1,) and t[0].item() == sde.T
    assert bool((t.diff() < 0).all())
    lam = sde.half_log_snr(t).numpy()
    # the official end: its finite lambda(0), a positive time on mrlight's grid (t = 0.362 for MRSDE())
    assert t[-1].item() > 0.3 and lam[-1] == pytest.approx(ref[-1], abs=1e-9)
    # equal steps in lambda at the official noise levels (both grids have the same lambda(T))
    np.testing.assert_allclose(lam, ref, rtol=0, atol=1e-9)
    # t_min does not move it: the official grid has no t_min
    assert torch.equal(get_times("uniform-lambda", sde, n, t_min=1.0), t)


def test_uniform_lambda_agrees_with_the_benchmarks_restatement_and_calls_the_network_there():
    sde, grid = MRSDE(), DaclipGrid()
    for n in (5, 10, 20):  # the official times mapped to mrlight's grid by their lambda
        official = official_times(grid, n, "uniform-lambda")
        lam = grid.interp(official, grid.t, grid.lam)
        assert torch.allclose(sde.half_log_snr(get_times("uniform-lambda", sde, n)), lam, rtol=0, atol=1e-9)
    seen = []

    def model(x, mu, t):
        seen.append(t[0].item())
        return torch.zeros_like(x)

    sample(model, torch.full((1, 1, 2, 2), 0.5), sde, nfe=10, time_schedule="uniform-lambda",
           generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(seen, get_times("uniform-lambda", sde, 10)[:-1].float().numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("schedule, noise_left", [("uniform-lambda", "official"), ("karras-t", 1.0),
                                                 ("uniform-lambda-tmin", 0.0), ("karras-t-tmin", 0.0)])
@pytest.mark.parametrize("sampler, options", [("mr", dict(order=2)), ("mr", dict(order=1, solver="sde")),
                                              ("posterior", {})])
def test_official_grids_stop_with_the_official_noise_left(schedule, noise_left, sampler, options):
    """A point-mass law (x0 = mu + 0.1): the exact x0_hat leaves the prior's noise scaled to sigma_bar of the last
    time, so the output's spread is the noise the grid leaves: the official one for the official grids
    (sigma_bar 0.0022 at lambda 6.11, sigma_bar(1) = 0.0037), none for mrlight's variants."""
    sde = MRSDE()
    law = GaussianMixture(weights=[1.0], means=[0.1], stds=[1e-6])
    mu = torch.full((40, 1, 25, 25), 0.5)
    oracle = Oracle(law, sde)
    out = sample(oracle, mu, sde, sampler=sampler, nfe=10, time_schedule=schedule,
                 generator=torch.Generator().manual_seed(0), **options)
    assert oracle.calls == 10
    if noise_left == "official":
        noise_left = DaclipGrid().sigma[0].item()
    elif noise_left == 1.0:
        noise_left = sde.sigma_bar(torch.tensor(1.0, dtype=torch.float64)).item()
    spread = (out.double() - 0.6).std().item()
    if noise_left == 0.0:
        assert spread < 1e-4
    else:
        assert spread == pytest.approx(noise_left, rel=0.05)


@pytest.mark.parametrize("n", [1, 2, 10, 37])
def test_uniform_lambda_tmin_still_ends_at_zero_from_t_min(n):
    sde = MRSDE()
    for t_min in (3.0, 1.0):
        t = get_times("uniform-lambda-tmin", sde, n, t_min=t_min)
        assert t.shape == (n + 1,) and t[0].item() == sde.T and t[-1].item() == 0.0
        assert bool((t.diff() < 0).all())
        if n > 1:  # n equal steps in mrlight's lambda down to lambda(t_min), whose point is replaced by t = 0
            lam = sde.half_log_snr(t[:-1])
            h = (sde.half_log_snr(torch.tensor(t_min, dtype=torch.float64)) - lam[0]).item() / n
            assert torch.allclose(lam.diff(), torch.full((n - 1,), h, dtype=torch.float64), atol=1e-9)


def test_t_min_belongs_to_the_variant_not_to_the_official_grid():
    mu, law, sde = torch.full((1, 1, 2, 2), 0.5), GaussianMixture(), MRSDE()
    sample(Oracle(law, sde), mu, sde, nfe=4, time_schedule="uniform-lambda-tmin", t_min=1.0)
    with pytest.raises(ValueError, match="t_min"):
        sample(Oracle(law, sde), mu, sde, nfe=4, time_schedule="uniform-lambda", t_min=1.0)


@pytest.mark.parametrize("schedule", ["uniform-lambda", "karras-t"])
@pytest.mark.parametrize("sampler, nfe", [("heun", 7), ("euler", 6), ("posterior", 6), ("mr", 6)])
def test_every_sampler_stops_at_the_official_end_with_its_nfe(schedule, sampler, nfe):
    """Heun's last step is Euler whether the grid ends at 0 or, as the official grids do, earlier."""
    sde = MRSDE()
    oracle = Oracle(GaussianMixture(), sde)
    seen = []
    out = sample(oracle, torch.full((1, 1, 4, 4), 0.5), sde, sampler=sampler, nfe=nfe, time_schedule=schedule,
                 generator=torch.Generator().manual_seed(0),
                 callback=lambda d: seen.append(d["t"]))
    assert oracle.calls == nfe and torch.isfinite(out).all()
    assert seen[-1] == pytest.approx(get_times(schedule, sde, (nfe + 1) // 2 if sampler == "heun" else nfe)[-1].item())
    assert seen[-1] > 0


@pytest.mark.parametrize("schedule", ["uniform-lambda", "karras-t"])
def test_final_order_is_refused_on_a_grid_that_stops_before_t0(schedule):
    sde = MRSDE()
    with pytest.raises(ValueError, match="final_order.*stops before t = 0"):
        sample(Oracle(GaussianMixture(), sde), torch.full((1, 1, 2, 2), 0.5), sde, nfe=5, time_schedule=schedule,
               final_order=2)
    sample(Oracle(GaussianMixture(), sde), torch.full((1, 1, 2, 2), 0.5), sde, nfe=5, time_schedule=f"{schedule}-tmin",
           final_order=2)


def official_karras_t(T: int, n: int, rho: float = 7.0) -> np.ndarray:
    """The official code's 'karras-t' times (numpy float64): rho-spacing in t from T down to t = 1."""
    i = np.linspace(0, 1, n + 1)
    return (T ** (1 / rho) + i * (1.0 - T ** (1 / rho))) ** rho


@pytest.mark.parametrize("sde", SDES, ids=["cosine-50", "linear-30-T200"])
@pytest.mark.parametrize("n", [1, 2, 5, 10, 20])
def test_karras_t_is_the_official_grid_and_calls_the_network_at_its_times(sde, n):
    ref = official_karras_t(sde.T, n)
    t = get_times("karras-t", sde, n)
    assert t.dtype == torch.float64 and t.shape == (n + 1,) and t[-1].item() == 1.0  # where the official sampler stops
    np.testing.assert_allclose(t.numpy(), ref, rtol=0, atol=1e-9)
    seen = []

    def model(x, mu, tt):
        seen.append(tt[0].item())
        return torch.zeros_like(x)

    sample(model, torch.full((1, 1, 2, 2), 0.5), sde, nfe=n, time_schedule="karras-t",
           generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(seen, ref[:-1].astype(np.float32), rtol=0, atol=1e-4)


def test_karras_t_agrees_with_the_benchmarks_restatement():
    for n in (5, 10, 20):
        official = official_times(DaclipGrid(), n, "karras-t")
        assert torch.allclose(get_times("karras-t", MRSDE(), n), official, rtol=0, atol=1e-9)


@pytest.mark.parametrize("n", [2, 5, 10])
def test_karras_t_tmin_is_the_default_and_ends_at_t_min_then_zero(n):
    sde = MRSDE()
    t = get_times("karras-t-tmin", sde, n, t_min=3.0)
    assert t[0].item() == sde.T and t[-2].item() == 3.0 and t[-1].item() == 0.0
    assert not torch.equal(t, get_times("karras-t", sde, n))
    mu, law = torch.full((1, 1, 2, 2), 0.5), GaussianMixture()
    default = sample(Oracle(law, sde), mu, sde, nfe=n, generator=torch.Generator().manual_seed(1))
    tmin = sample(Oracle(law, sde), mu, sde, nfe=n, time_schedule="karras-t-tmin", generator=torch.Generator().manual_seed(1))
    official = sample(Oracle(law, sde), mu, sde, nfe=n, time_schedule="karras-t", generator=torch.Generator().manual_seed(1))
    assert torch.equal(default, tmin) and not torch.equal(default, official)
    with pytest.raises(ValueError, match="t_min"):
        sample(Oracle(law, sde), mu, sde, nfe=n, time_schedule="karras-t", t_min=2.0)


@pytest.mark.parametrize("parameterization", ["noise", "data"])
def test_sde2_step_equals_the_official_formula(parameterization):
    """x_t = cx x_s + cmu mu + w0 q_s + w1 q_prev + std z, with the official code's phi1, phi2 and
    D1 = (q_s - q_prev) / r, r = h_prev / h (written out here in float64)."""
    sde = MRSDE()
    t_prev, s, t = torch.tensor([31.0, 20.5, 12.25], dtype=torch.float64)
    lp, ls, lt = (sde.half_log_snr(v).item() for v in (t_prev, s, t))
    a_s, a_t = sde.alpha(s).item(), sde.alpha(t).item()
    sb_s, sb_t = sde.sigma_bar(s).item(), sde.sigma_bar(t).item()
    h = lt - ls
    r = (ls - lp) / h
    if parameterization == "noise":
        phi1 = math.exp(h) - 1
        phi2 = phi1 / h - 1
        ref = (a_t / a_s, 1 - a_t / a_s, [-2 * sb_t * phi1 - 2 * sb_t * phi2 / r, 2 * sb_t * phi2 / r],
               sb_t * math.sqrt(math.exp(2 * h) - 1))
    else:
        phi1 = 1 - math.exp(-2 * h)
        phi2 = 1 - phi1 / 2 / h
        ref = (sb_t / sb_s * math.exp(-h), 1 - a_t / a_s * math.exp(-2 * h) - a_t * phi1,
               [a_t * phi1 + a_t * phi2 / r, -a_t * phi2 / r], sb_t * math.sqrt(phi1))
    cx, cmu, w, std = mr_step_coefficients("sde", parameterization, [ls, lp], lt, a_s, a_t, sb_s, sb_t)
    assert cx == pytest.approx(ref[0], rel=1e-12) and cmu == pytest.approx(ref[1], rel=1e-9, abs=1e-12)
    assert w == pytest.approx(ref[2], rel=1e-9) and std == pytest.approx(ref[3], rel=1e-12)


def test_noise_form_sde2_keeps_its_step_into_t0_on_a_narrow_law():
    """linspace NFE 20 ends its last positive step at t = 5 (sigma_bar 0.015). The official rules end
    with an SDE step to their finite lambda(0), which spreads a law of std 0.01 about 10-fold
    (W1 0.047 at 60k pixels, seeds 0-4); mrlight's step into t = 0 (the u-space polynomial) stays near
    the law (0.0024). Adopting the official last step, which wins on wider laws, would fail here."""
    sde, law = MRSDE(), GaussianMixture(weights=[0.5, 0.5], means=[-0.1, 0.1], stds=[0.01, 0.01])
    mu = torch.full((200, 1, 10, 10), 0.5)

    def w1(out):
        return wasserstein1((out.clamp(0, 1) - mu).double(), law)

    grid = DaclipGrid()
    official = w1(official_mr_sample(Oracle(law, sde, schedule=grid.at), mu, grid, 20, solver="sde", order=2,
                                     parameterization="noise", schedule="linspace",
                                     generator=torch.Generator().manual_seed(0)))
    ours = w1(sample(Oracle(law, sde), mu, sde, nfe=20, solver="sde", order=2, parameterization="noise",
                     time_schedule="linspace", generator=torch.Generator().manual_seed(0)))
    assert ours < 0.008 and ours < official / 4, (ours, official)


@pytest.mark.parametrize("law_kw", [dict(), dict(weights=[0.7, 0.3], means=[0.05, -0.1], stds=[0.02, 0.1]),
                                    dict(weights=[0.6, 0.4], means=[-0.1, 0.15], stds=[0.05, 0.05])],
                         ids=["benchmark", "second", "held-out"])
def test_noise_form_ode_end_matches_the_official_rules_on_linspace(law_kw):
    """ODE-2, noise form, linspace, NFE 10, same prior draw: mrlight minus official is +0.0001/0.0002
    with the stop at u = 1/510 and +0.0006 .. +0.0010 with issue 9's carry to t = 0."""
    sde, law = MRSDE(), GaussianMixture(**law_kw)
    mu = torch.full((200, 1, 10, 10), 0.5)

    def w1(out):
        return wasserstein1((out.clamp(0, 1) - mu).double(), law)

    grid = DaclipGrid()
    official = w1(official_mr_sample(Oracle(law, sde, schedule=grid.at), mu, grid, 10, solver="ode", order=2,
                                     parameterization="noise", schedule="linspace",
                                     generator=torch.Generator().manual_seed(0)))
    ours = w1(sample(Oracle(law, sde), mu, sde, nfe=10, order=2, parameterization="noise", time_schedule="linspace",
                     generator=torch.Generator().manual_seed(0)))
    assert ours <= official + 0.0004, (ours, official)
