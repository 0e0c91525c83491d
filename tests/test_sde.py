"""MRSDE: IR-SDE grid regression values, fractional-time definition, marginal and posterior."""

import math

import pytest
import torch

from mrlight.sde import MRSDE


@pytest.fixture(scope="module")
def sde():
    return MRSDE(T=100, max_sigma=50, schedule="cosine", eps=0.005)


def test_regression_values_irsde_cosine(sde):
    assert sde.thetas[0].item() == pytest.approx(6.142e-4, rel=1e-3)
    assert sde.thetas_bar[-1].item() == pytest.approx(50.8994, abs=1e-4)
    assert sde.thetas_bar[0].item() == 0.0
    assert sde.dt == pytest.approx(0.104094, abs=1e-6)
    T = torch.tensor(100.0, dtype=torch.float64)
    assert sde.alpha(T).item() == pytest.approx(0.005, rel=1e-9)
    assert sde.sigma_bar(T).item() == pytest.approx(0.19608, abs=1e-5)
    assert sde.sigma_bar(torch.tensor(1.0, dtype=torch.float64)).item() == pytest.approx(0.003683, abs=1e-6)
    assert sde.max_sigma == pytest.approx(50 / 255)


def test_max_sigma_is_always_in_8_bit_units():
    assert MRSDE(max_sigma=10).max_sigma == pytest.approx(10 / 255)
    assert MRSDE(max_sigma=12.5).max_sigma == pytest.approx(12.5 / 255)
    assert MRSDE(max_sigma=0.99).max_sigma == pytest.approx(0.99 / 255)  # one unit: no switch at 1
    assert MRSDE(max_sigma=1).max_sigma == pytest.approx(1 / 255)


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_fractional_times_agree_with_grid_and_are_monotone(schedule):
    sde = MRSDE(schedule=schedule)
    grid = torch.arange(0, 101, dtype=torch.float64)
    assert torch.allclose(sde.alpha(grid), sde.alphas, rtol=0, atol=1e-15)
    assert torch.allclose(sde.sigma_bar(grid), sde.sigma_bars, rtol=0, atol=1e-15)
    t = torch.linspace(0, 100, 2001, dtype=torch.float64)
    a, s, lam = sde.alpha(t), sde.sigma_bar(t), sde.half_log_snr(t)
    assert (a.diff() < 0).all() and (s.diff() > 0).all() and (lam[1:].diff() < 0).all()
    assert math.isinf(lam[0].item()) and lam[0].item() > 0
    assert torch.allclose(sde.t_from_lambda(lam[1:]), t[1:], atol=1e-9)
    # alpha^2 + (sigma_bar / s_inf)^2 = 1 everywhere
    assert torch.allclose(a ** 2 + (s / sde.max_sigma) ** 2, torch.ones_like(a), atol=1e-12)


def test_shape_and_dtype_contract(sde):
    t = torch.rand(3, 4) * 100
    assert sde.alpha(t).shape == (3, 4) and sde.alpha(t).dtype == torch.float32
    assert sde.sigma_bar(t.double()).dtype == torch.float64


def test_q_sample_matches_marginal_moments(sde):
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((4, 1, 64, 64), 0.8)
    mu = torch.full((4, 1, 64, 64), 0.3)
    t = torch.tensor([0.0, 10.0, 37.5, 100.0])
    xt = sde.q_sample(x0, mu, t, generator=g)
    a, s = sde.alpha(t.double()), sde.sigma_bar(t.double())
    for i in range(4):
        mean = (a[i] * 0.8 + (1 - a[i]) * 0.3).item()
        assert xt[i].mean().item() == pytest.approx(mean, abs=4 * s[i].item() / 64 + 1e-6)
        assert xt[i].std().item() == pytest.approx(s[i].item(), rel=0.05, abs=1e-6)


def test_posterior_matches_irsde_formula_on_grid(sde):
    # IR-SDE reverse_optimum_step / reverse_optimum_std with A = e^{-theta_t dt}, B = alpha_t, C = alpha_{t-1}
    for t in [1, 2, 17, 50, 100]:
        A = math.exp(-sde.thetas[t].item() * sde.dt)
        B, C = sde.alphas[t].item(), sde.alphas[t - 1].item()
        term1 = A * (1 - C ** 2) / (1 - B ** 2)
        term2 = C * (1 - A ** 2) / (1 - B ** 2)
        var = (1 - A ** 2) * (1 - C ** 2) / (1 - B ** 2)
        c_x0, c_xt, std = sde.posterior_params(t, t - 1)
        assert c_xt == pytest.approx(term1, rel=1e-9)
        assert c_x0 == pytest.approx(term2, rel=1e-9, abs=1e-15)
        assert std == pytest.approx(math.sqrt(var) * sde.max_sigma, rel=1e-9, abs=1e-15)


def test_posterior_is_consistent_with_marginals(sde):
    # Marginalising q(x_s | x_t, x0) over q(x_t | x0) must give q(x_s | x0): mean and variance.
    t, s = 80.0, 33.3
    c_x0, c_xt, std = sde.posterior_params(t, s)
    a_t, sb_t = sde.alpha(torch.tensor(t)).item(), sde.sigma_bar(torch.tensor(t, dtype=torch.float64)).item()
    a_s, sb_s = sde.alpha(torch.tensor(s, dtype=torch.float64)).item(), sde.sigma_bar(torch.tensor(s, dtype=torch.float64)).item()
    # mean of x_s - mu given x0 - mu = d: c_x0 d + c_xt a_t d must equal a_s d
    assert c_x0 + c_xt * a_t == pytest.approx(a_s, rel=1e-6)
    assert (c_xt * sb_t) ** 2 + std ** 2 == pytest.approx(sb_s ** 2, rel=1e-6)
    with pytest.raises(ValueError, match="0 <= s < t"):
        sde.posterior_params(10, 20)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="valid: cosine, linear, constant"):
        MRSDE(schedule="sigmoid")
    with pytest.raises(ValueError, match="eps"):
        MRSDE(eps=0)
    with pytest.raises(ValueError, match="T must be"):
        MRSDE(T=0)


def test_prior_sample_is_reproducible(sde):
    mu = torch.rand(2, 3, 8, 8)
    a = sde.prior_sample(mu, torch.Generator().manual_seed(3))
    b = sde.prior_sample(mu, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.dtype == torch.float32
    assert (a - mu).std().item() == pytest.approx(sde.max_sigma, rel=0.15)
