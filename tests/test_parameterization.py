"""Conversions between noise, data, velocity and score round-trip exactly."""

import pytest
import torch

from mrlight import parameterization as P
from mrlight.sde import MRSDE


@pytest.mark.parametrize("t", [0.5, 10.0, 55.5, 100.0])
def test_round_trips(t):
    sde = MRSDE()
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64)
    mu = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64)
    eps = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    a = sde.alpha(torch.tensor(t, dtype=torch.float64)).item()
    s = sde.sigma_bar(torch.tensor(t, dtype=torch.float64)).item()
    xt = mu + a * (x0 - mu) + s * eps
    v = P.velocity_from(x0, eps, mu, a, sde.max_sigma)
    for pred, out in [("noise", eps), ("data", x0), ("velocity", v)]:
        assert torch.allclose(P.to_data(out, pred, xt, mu, a, s, sde.max_sigma), x0, atol=1e-9)
        assert torch.allclose(P.to_noise(out, pred, xt, mu, a, s, sde.max_sigma), eps, atol=1e-9)
        assert torch.allclose(P.target(pred, x0, eps, mu, a, sde.max_sigma), out)
    score = P.score_from_noise(eps, s)
    assert torch.allclose(P.noise_from_score(score, s), eps)
    # score of the Gaussian q(x_t | x0): -(x_t - mean) / sigma_bar^2
    assert torch.allclose(score, -(xt - mu - a * (x0 - mu)) / s ** 2)


def test_velocity_matches_design_definition():
    # DESIGN section 3: v = alpha s_inf eps - sqrt(1 - alpha^2) (x0 - mu)
    a, s_inf = 0.6, 0.2
    x0, mu, eps = torch.tensor(0.9), torch.tensor(0.4), torch.tensor(-1.3)
    assert P.velocity_from(x0, eps, mu, a, s_inf).item() == pytest.approx(a * s_inf * -1.3 - 0.8 * 0.5)


def test_unknown_prediction():
    with pytest.raises(ValueError, match="valid: noise, data, velocity"):
        P.to_data(torch.zeros(1), "score", 0, 0, 1, 1, 1)
