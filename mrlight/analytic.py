"""An analytic MR diffusion problem: a perfect network, and the true law to compare samples with.

The clean image is x0 = mu + d, with every pixel's residual d drawn independently from a 1-D
Gaussian mixture sum_k w_k N(m_k, v_k^2). Under the MR marginal y = x_t - mu = alpha d + sigma_bar eps,

    p(k | y)     ~ w_k N(y; alpha m_k, alpha^2 v_k^2 + sigma_bar^2)
    E[d | y, k]  = m_k + alpha v_k^2 / (alpha^2 v_k^2 + sigma_bar^2) (y - alpha m_k)

so x0_hat = E[x0 | x_t] is exact at every time (DESIGN section 5). A sampler run with this
oracle has no network error, so its distance to the true law measures the sampler alone.
`pf_ode_reference` solves the probability-flow ODE to tight tolerance for order checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from mrlight import parameterization as P
from mrlight.sde import MRSDE


@dataclass
class GaussianMixture:
    """Law of the residual d = x0 - mu, per pixel."""
    weights: list[float] = field(default_factory=lambda: [0.5, 0.3, 0.2])
    means: list[float] = field(default_factory=lambda: [-0.15, 0.1, 0.25])
    stds: list[float] = field(default_factory=lambda: [0.04, 0.06, 0.03])

    def _params(self, device):
        w = torch.tensor(self.weights, dtype=torch.float64, device=device)
        return w / w.sum(), torch.tensor(self.means, dtype=torch.float64, device=device), \
            torch.tensor(self.stds, dtype=torch.float64, device=device)

    def sample(self, shape, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draws of d (float64)."""
        w, m, v = self._params("cpu")
        k = torch.multinomial(w, math.prod(shape), replacement=True, generator=generator).reshape(shape)
        return m[k] + v[k] * torch.randn(shape, generator=generator, dtype=torch.float64)

    def posterior_mean(self, y: torch.Tensor, alpha, sigma_bar) -> torch.Tensor:
        """E[d | y] with y = alpha d + sigma_bar eps (float64; alpha, sigma_bar scalars or broadcastable)."""
        w, m, v = self._params(y.device)
        y = y.double().unsqueeze(-1)
        alpha = torch.as_tensor(alpha, dtype=torch.float64, device=y.device)
        sigma_bar = torch.as_tensor(sigma_bar, dtype=torch.float64, device=y.device)
        if alpha.dim() > 0:
            alpha, sigma_bar = alpha.unsqueeze(-1), sigma_bar.unsqueeze(-1)
        var = alpha ** 2 * v ** 2 + sigma_bar ** 2
        logp = torch.log(w) - 0.5 * torch.log(var) - 0.5 * (y - alpha * m) ** 2 / var
        post = torch.softmax(logp, dim=-1)
        cond = m + alpha * v ** 2 / var * (y - alpha * m)
        return (post * cond).sum(-1)

    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        w, m, v = self._params(x.device)
        z = (x.double().unsqueeze(-1) - m) / v
        return (w * 0.5 * (1 + torch.erf(z / math.sqrt(2)))).sum(-1)

    @property
    def mean(self) -> float:
        w, m, _ = self._params("cpu")
        return (w * m).sum().item()

    @property
    def std(self) -> float:
        w, m, v = self._params("cpu")
        mean = (w * m).sum()
        return ((w * (v ** 2 + m ** 2)).sum() - mean ** 2).sqrt().item()


class Oracle:
    """A perfect `model_fn(x_t, mu, t)` for the analytic problem, predicting `prediction`.

    `sde` gives alpha(t), sigma_bar(t); pass another schedule's functions through `schedule`
    (a callable t -> (alpha, sigma_bar)) to emulate samplers that interpolate differently.
    """

    def __init__(self, law: GaussianMixture, sde: MRSDE, prediction: str = "noise", schedule=None):
        self.law = law
        self.sde = sde
        self.prediction = P.check_prediction(prediction)
        self.schedule = schedule
        self.calls = 0

    def __call__(self, x_t: torch.Tensor, mu: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        t64 = t.double().cpu()
        if self.schedule is None:
            a, s = self.sde.alpha(t64), self.sde.sigma_bar(t64)
        else:
            a, s = self.schedule(t64)
        shape = (-1,) + (1,) * (x_t.dim() - 1)
        a = a.reshape(shape).to(x_t.device)
        s = s.reshape(shape).to(x_t.device)
        xt, m = x_t.double(), mu.double()
        x0 = m + self.law.posterior_mean(xt - m, a, s)
        eps = P.noise_from_data(x0, xt, m, a, s)
        out = P.target(self.prediction, x0, eps, m, a, self.sde.max_sigma)
        return out.to(x_t.dtype)


def wasserstein1(samples: torch.Tensor, law: GaussianMixture, grid: int = 4001) -> float:
    """1-D Wasserstein distance between the empirical law of `samples` (residuals d) and `law`.

    W1 = integral |F_emp(x) - F(x)| dx, evaluated on a fine grid covering both.
    """
    s = samples.double().flatten().sort().values
    lo = min(s[0].item(), min(m - 6 * v for m, v in zip(law.means, law.stds)))
    hi = max(s[-1].item(), max(m + 6 * v for m, v in zip(law.means, law.stds)))
    xs = torch.linspace(lo, hi, grid, dtype=torch.float64)
    f_emp = torch.searchsorted(s, xs, right=True).double() / s.numel()
    return torch.trapezoid((f_emp - law.cdf(xs)).abs(), xs).item()


def pf_ode_reference(law: GaussianMixture, sde: MRSDE, y_T: torch.Tensor, t_end: float,
                     t_start: float | None = None, rtol: float = 1e-11, atol: float = 1e-12) -> torch.Tensor:
    """Solve the PF-ODE from t_start (default T) to t_end (> 0) for residuals y = x - mu (float64).

    In lambda the ODE is smooth: d(y / sigma_bar)/d lambda = e^lambda E[d | y] (the derivative of
    the data-form solution), integrated with scipy's DOP853 at tight tolerance.
    """
    from scipy.integrate import solve_ivp  # test/benchmark dependency only

    t_start = float(sde.T) if t_start is None else t_start
    lam0 = sde.half_log_snr(torch.tensor(t_start, dtype=torch.float64)).item()
    lam1 = sde.half_log_snr(torch.tensor(t_end, dtype=torch.float64)).item()
    s_inf = sde.max_sigma

    def ab(lam):  # alpha, sigma_bar from lambda
        a2 = 1.0 / (1.0 + math.exp(-2 * (lam + math.log(s_inf))))
        return math.sqrt(a2), s_inf * math.sqrt(1 - a2)

    def rhs(lam, z):
        a, s = ab(lam)
        y = torch.from_numpy(z * s)
        return (math.exp(lam) * law.posterior_mean(y, a, s)).numpy()

    a0, s0 = ab(lam0)
    z0 = (y_T.double().flatten() / s0).numpy()
    sol = solve_ivp(rhs, (lam0, lam1), z0, method="DOP853", rtol=rtol, atol=atol)
    a1, s1 = ab(lam1)
    return torch.from_numpy(sol.y[:, -1] * s1).reshape(y_T.shape)
