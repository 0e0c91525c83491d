"""The MR Sampler: exponential-integrator solvers of the MR SDE's PF-ODE and reverse SDE.

Li et al., "MR Sampler: Fast Sampling of Mean Reverting Diffusion" (ICLR 2025), following
DPM-Solver / DPM-Solver++ (Lu et al., 2022). With h = lambda_t - lambda_s (s the earlier,
noisier time) the linear part is solved exactly and the prediction (x0_hat or eps_hat) is
expanded as a Taylor polynomial in lambda, its derivatives estimated from the last k
predictions (multistep, Newton divided differences). The four updates (DESIGN section 4):

    ODE, data:  x_t = (sb_t/sb_s) x_s + c_mu mu + alpha_t   sum_j f^(j) I_j(h),  I_j = int_0^h e^{u-h}    u^j/j! du
    SDE, data:  x_t = (sb_t/sb_s) e^{-h} x_s + c_mu mu + 2 alpha_t sum_j f^(j) K_j(h) + sb_t sqrt(1-e^{-2h}) z,
                                                                     K_j = int_0^h e^{-2(h-u)} u^j/j! du
    ODE, noise: x_t = (a_t/a_s) x_s + (1 - a_t/a_s) mu - sb_t   sum_j e^(j) J_j(h),  J_j = int_0^h e^{h-u} u^j/j! du
    SDE, noise: x_t = (a_t/a_s) x_s + (1 - a_t/a_s) mu - 2 sb_t sum_j e^(j) J_j(h) + sb_t sqrt(e^{2h}-1) z

The integrals have closed forms by the recursions I_j = h^j/j! - I_{j-1}, J_j = J_{j-1} - h^j/j!,
K_j = h^j/(2 j!) - K_{j-1}/2. These are the exact Taylor coefficients; the official code's
third-order term (borrowed from DPM-Solver++(3M)) carries half of the exact I_2 coefficient,
which `benchmarks/sampler_quality.py` shows costs it its third order.

Numerical care (DESIGN section 4, "known traps"):
- The step into t = 0 has lambda_t = +inf. In lambda only the first-order step has a finite
  limit there (x0_hat for the data form); products like sb_t e^h are formed as
  alpha_t sb_s / alpha_s, so nothing overflows and nothing divides by h. With `final_order` > 1
  the step is instead taken in u = sigma_bar / alpha, where t = 0 is the finite point u = 0 and a
  multistep polynomial for eps integrates exactly (`final_step_weights`); on `linspace`, whose
  last step is long, this lowers W1 by up to 30% at NFE 5 (docs/SAMPLERS.md).
- `lower_order_final` caps the order by the number of steps left, as DPM-Solver does, because
  the ratio h_prev / h shrinks near t = 0 and multistep extrapolation amplifies noise there.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from mrlight.sampling.common import Denoiser, check_finite, randn_like

MAX_ORDER = {"ode": 3, "sde": 2}


def _phi(kind: str, h: float, k: int) -> list[float]:
    """[C_0, ..., C_{k-1}]: I_j (ode-data), K_j (sde-data) or J_j (noise) at step size h."""
    out = []
    if kind == "I":
        c = -math.expm1(-h)
        for j in range(k):
            c = c if j == 0 else h ** j / math.factorial(j) - c
            out.append(c)
    elif kind == "K":
        c = -0.5 * math.expm1(-2 * h)
        for j in range(k):
            c = c if j == 0 else h ** j / (2 * math.factorial(j)) - c / 2
            out.append(c)
    else:  # "J"
        c = math.expm1(h)
        for j in range(k):
            c = c if j == 0 else c - h ** j / math.factorial(j)
            out.append(c)
    return out


def _derivative_weights(lams: list[float]) -> list[list[float]]:
    """Weights w[j][i] so that f^(j)(lams[0]) ~= sum_i w[j][i] f(lams[i]) (polynomial interpolation).

    lams[0] is the newest point. Returns rows for j = 0 .. len(lams)-1.
    """
    k = len(lams)
    rows = [[1.0] + [0.0] * (k - 1)]
    if k >= 2:
        h0 = lams[0] - lams[1]
        f01 = [1 / h0, -1 / h0] + [0.0] * (k - 2)
        if k == 2:
            rows.append(f01)
        else:
            h1 = lams[1] - lams[2]
            f12 = [0.0, 1 / h1, -1 / h1]
            f012 = [(a - b) / (h0 + h1) for a, b in zip(f01, f12)]
            rows.append([a + h0 * b for a, b in zip(f01, f012)])  # f' = f[0,1] + f[0,1,2] h0
            rows.append([2 * b for b in f012])  # f'' = 2 f[0,1,2]
    return rows


def mr_step_coefficients(solver: str, parameterization: str, lams: list[float], lam_t: float,
                         a_s: float, a_t: float, sb_s: float, sb_t: float):
    """Coefficients of one MR step: x_t = cx x_s + cmu mu + sum_i w_i q_i + std z.

    `lams` are the lambdas of the predictions q_i used (newest first, len = order), `lam_t` the
    target's lambda (inf at t = 0, where the order must be 1). Python floats, float64 arithmetic.
    """
    k = len(lams)
    final = sb_t == 0.0
    if final and k != 1:
        raise ValueError("the step into t = 0 (lambda = inf) must be first order")
    h = math.inf if final else lam_t - lams[0]
    E = a_t * sb_s / a_s  # sb_t * e^{h}, finite even at t = 0
    if parameterization == "data":
        e_mh = sb_t * a_s / (a_t * sb_s)  # e^{-h}; 0 at t = 0
        if solver == "ode":
            cx = sb_t / sb_s
            cmu = 1 - cx + cx * a_s - a_t
            base, C = a_t, _phi("I", h, k)
            std = 0.0
        else:
            cx = sb_t / sb_s * e_mh
            cmu = 1 - (a_t / a_s) * e_mh * e_mh - a_t + a_t * e_mh * e_mh
            base, C = 2 * a_t, _phi("K", h, k)
            std = sb_t * math.sqrt(max(1 - e_mh * e_mh, 0.0))
    else:
        cx = a_t / a_s
        cmu = 1 - cx
        scale = 1.0 if solver == "ode" else 2.0
        if final:
            base, C = -scale, [E]  # sb_t (e^h - 1) -> alpha_t sb_s / alpha_s as sb_t -> 0
        else:
            base, C = -scale * sb_t, _phi("J", h, k)
        std = 0.0 if solver == "ode" else math.sqrt(max(E * E - sb_t * sb_t, 0.0))
    rows = _derivative_weights(lams)
    w = [base * sum(C[j] * rows[j][i] for j in range(k)) for i in range(k)]
    return cx, cmu, w, std


def final_step_weights(us: list[float]) -> list[float]:
    """W_j with int_0^{u_0} p(u) du = sum_j W_j eps_j, p the polynomial through (u_j, eps_j).

    The step into t = 0 in the variable u = sigma_bar / alpha = e^{-lambda}, where the PF-ODE reads
    d((x - mu) / alpha) / du = eps (Song et al., DDIM, 2021; Karras et al., 2022) and t = 0 is the
    finite point u = 0; a multistep polynomial in u therefore integrates to t = 0 at any order.
    """
    k = len(us)
    V = torch.tensor([[u ** p for p in range(k)] for u in us], dtype=torch.float64)
    # coefficient c_p of u^p in p(u) = sum_j eps_j L_j(u): rows of V^{-1}
    Vinv = torch.linalg.inv(V)
    integ = torch.tensor([us[0] ** (p + 1) / (p + 1) for p in range(k)], dtype=torch.float64)
    return (integ @ Vinv).tolist()


@torch.no_grad()
def sample_mr(denoiser: Denoiser, x: torch.Tensor, mu: torch.Tensor, times: torch.Tensor, *,
              solver: str = "ode", order: int = 2, parameterization: str = "data",
              lower_order_final: bool = True, denoise_last: bool = False, final_order: int = 1,
              generator: torch.Generator | None = None, callback: Callable | None = None) -> torch.Tensor:
    """MR Sampler (Li et al., ICLR 2025): multistep exponential integrator, len(times)-1 NFE."""
    sde = denoiser.sde
    lam_all = sde.half_log_snr(times).tolist()
    a_all = sde.alpha(times).tolist()
    sb_all = sde.sigma_bar(times).tolist()
    n = len(times) - 1
    hist_q: list[torch.Tensor] = []
    hist_lam: list[float] = []
    hist_eps: list[torch.Tensor] = []  # noise predictions of the last steps, for the step into t = 0
    ends_at_zero = sb_all[-1] == 0.0
    for i in range(n):
        s, t = times[i].item(), times[i + 1].item()
        out = denoiser(x, s, i)
        x0_hat = denoiser.data(out, x, s) if (parameterization == "data" or denoise_last or callback) else None
        q = x0_hat if parameterization == "data" else denoiser.noise(out, x, s)
        hist_q.insert(0, q)
        hist_lam.insert(0, lam_all[i])
        del hist_q[order:], hist_lam[order:]
        last = i == n - 1
        if ends_at_zero and final_order > 1 and i >= n - final_order:
            hist_eps.insert(0, q if parameterization == "noise" else denoiser.noise(out, x, s))
        if denoise_last and last:
            x = x0_hat
        elif ends_at_zero and last and len(hist_eps) > 1:
            # The step into t = 0 in u = e^{-lambda}: (x - mu) / alpha at u = 0 minus the integral of
            # the eps polynomial through the last k predictions (alpha(0) = 1).
            us = [math.exp(-lam) for lam in lam_all[n - len(hist_eps):n][::-1]]
            x_new = mu + (x - mu) / a_all[i]
            for e, w in zip(hist_eps, final_step_weights(us)):
                x_new.add_(e, alpha=-w)
            x = x_new
        else:
            k = len(hist_q)
            if lower_order_final:
                k = min(k, n - i)
            if sb_all[i + 1] == 0.0:
                k = 1  # lambda = inf: only the first-order step has a finite limit in both forms
            cx, cmu, w, std = mr_step_coefficients(solver, parameterization, hist_lam[:k], lam_all[i + 1],
                                                   a_all[i], a_all[i + 1], sb_all[i], sb_all[i + 1])
            x_new = x * cx
            x_new.add_(mu, alpha=cmu)
            for qi, wi in zip(hist_q[:k], w):
                x_new.add_(qi, alpha=wi)
            if std > 0:
                x_new.add_(randn_like(x, generator), alpha=std)
            x = x_new
        check_finite(x, i, t)
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0_hat": x0_hat})
    return x
