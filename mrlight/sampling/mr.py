"""The MR Sampler: exponential-integrator solvers of the MR SDE's PF-ODE and reverse SDE.

Li et al., "MR Sampler: Fast Sampling of Mean Reverting Diffusion" (ICLR 2025), following
DPM-Solver / DPM-Solver++ (Lu et al., 2022). With h = lambda_t - lambda_s (s the earlier,
noisier time) the linear part is solved exactly and the prediction (x0_hat or eps_hat) is
expanded as a Taylor polynomial in lambda, its derivatives those of the polynomial through the
last k predictions (multistep; `_taylor_weights`). The four updates (DESIGN section 4):

    ODE, data:  x_t = (sb_t/sb_s) x_s + c_mu mu + alpha_t   sum_j f^(j) I_j(h),  I_j = int_0^h e^{u-h}    u^j/j! du
    SDE, data:  x_t = (sb_t/sb_s) e^{-h} x_s + c_mu mu + 2 alpha_t sum_j f^(j) K_j(h) + sb_t sqrt(1-e^{-2h}) z,
                                                                     K_j = int_0^h e^{-2(h-u)} u^j/j! du
    ODE, noise: x_t = (a_t/a_s) x_s + (1 - a_t/a_s) mu - sb_t   sum_j e^(j) J_j(h),  J_j = int_0^h e^{h-u} u^j/j! du
    SDE, noise: x_t = (a_t/a_s) x_s + (1 - a_t/a_s) mu - 2 sb_t sum_j e^(j) J_j(h) + sb_t sqrt(e^{2h}-1) z

The integrals have closed forms by the recursions I_j = h^j/j! - I_{j-1}, J_j = J_{j-1} - h^j/j!,
K_j = h^j/(2 j!) - K_{j-1}/2. The code computes both data-form kernels as one, L_j(c) =
c int_0^h e^{-c(h-u)} u^j/j! du (L(1) = I, L(2) = 2 K), which also gives the UniC corrector
(`unic_weights`; docs/SAMPLERS.md derives it). These are the exact Taylor coefficients; the official code's
third-order term (borrowed from DPM-Solver++(3M)) carries half of the exact I_2 coefficient,
which `benchmarks/sampler_quality.py` shows costs it its third order.

Numerical care (DESIGN section 4, "known traps"):
- The step into t = 0 has lambda_t = +inf. In the data form only the first-order step has a
  finite limit there (x0_hat). Products like sb_t e^h are formed as alpha_t sb_s / alpha_s, so
  nothing overflows and nothing divides by h. With `final_order` > 1 the data form (and the
  reverse SDE) take the step instead in u = sigma_bar / alpha, where t = 0 is the finite point
  u = 0 and a multistep polynomial for eps integrates exactly (`final_step_weights`); on
  `linspace`, whose last step is long, this lowers W1 by up to 30% at NFE 5 (docs/SAMPLERS.md).
  The noise-form SDE keeps this step too, where the official MR Sampler ends with an SDE step to
  its finite lambda(0): that step re-injects noise of about sigma_bar / alpha of the last positive
  time, which happens to restore the spread on laws wider than that noise (held-out law, linspace
  NFE 20: W1 0.0014 against 0.0025) and spreads narrower laws about 10-fold (std 0.01: 0.046
  against 0.0024); benchmarks/official_cells.py section 11, tests/test_official_rules.py.
- The ODE in the noise form ends its last step at u = sigma_bar / alpha = 1/510 (noise of half an
  8-bit grey level, lambda = 6.23) with an ordinary lambda-space step of order <= 2 (the noise
  form's coefficients stay bounded at any step size) and returns (x - mu) / alpha there
  (`_final_noise_step`): what is left is noise of at most u |eps(u)|, and along the PF-ODE a smooth
  law's eps tends to 0 as u -> 0. (Issue 9 moved the state on to t = 0 with the newest eps, an eps
  of the previous evaluation point; stopping, as the official MR Sampler does at its finite
  lambda(0), lowers the summed W1 of benchmarks/official_cells.py section 7 and closes the
  noise-form ODE cells on linspace at NFE 10, issue 18.) Its multistep polynomial in lambda, carried
  to lambda = inf, over-weights the slope term where a smooth law's eps decays to 0 as t -> 0;
  stopping at a finite lambda, as DPM-Solver's t_eps and the official MR Sampler do, damps it by
  (1 + h) e^{-h}. Summed W1 over the noise-form ODE-2/3 rows of the analytic benchmark falls by
  14% (benchmarks/official_cells.py, docs/SAMPLERS.md); a third-order final step costs ODE-3 on
  linspace, hence the cap. With the UniC corrector the slope term of that long step hurts instead
  (summed W1 +14%), so a corrected run keeps the u-space step.
- `lower_order_final` caps the order by the number of steps left when there are fewer than 10
  steps, as DPM-Solver's code does, because the ratio h_prev / h shrinks near t = 0 and multistep
  extrapolation amplifies errors there.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from mrlight.sampling.common import Denoiser, check_finite, randn_like

MAX_ORDER = {"ode": 3, "sde": 2}
CORRECTORS = ("none", "unic")
# Order lowering near t = 0 only for short runs, as DPM-Solver's code (steps < 10) and the official
# MR Sampler do. Measured (docs/SAMPLERS.md), the effect at NFE >= 10 is mixed: it fixes ODE-3 on
# uniform-lambda-tmin at NFE 10 (W1 0.015 -> 0.010) and costs ODE-3 on linspace / quadratic-t.
LOWER_ORDER_BELOW_NFE = 10
UNIC_VARIANTS = ("bh1", "bh2", "exact")
# Where the noise-form ODE's last lambda-space step ends: u = sigma_bar / alpha of half an 8-bit grey level.
NOISE_FORM_END_U = 0.5 / 255
# Whether the noise-form ODE then moves on to t = 0 with the newest eps (issue 9) or stops there (issue 18).
NOISE_FORM_END_CARRY = False


def ends_at_noise_form_end(solver: str, parameterization: str, corrector: str) -> bool:
    """Whether the step into t = 0 stops at u = NOISE_FORM_END_U first (see the module docstring)."""
    return (solver, parameterization, corrector) == ("ode", "noise", "none")


def default_final_order(solver: str, parameterization: str, order: int, corrector: str = "none") -> int:
    """The order of the step into t = 0 when `final_order` is not given (see the module docstring)."""
    return min(order, 2) if ends_at_noise_form_end(solver, parameterization, corrector) else order


def noise_rate(solver: str) -> float:
    """c of the data-form kernel e^{-c (h - u)}: 1 for the PF-ODE, 2 for the reverse SDE."""
    return {"ode": 1.0, "sde": 2.0}[solver]


def _kernel_coefficients(kind: str, h: float, k: int, c: float = 1.0) -> list[float]:
    """[C_0, ..., C_{k-1}] with C_j = c int_0^h e^{-c(h-u)} u^j/j! du (kind "L") or int_0^h e^{h-u} u^j/j! du ("J").

    Recursions by parts: L_j = h^j/j! - L_{j-1}/c, L_0 = 1 - e^{-ch}; J_j = J_{j-1} - h^j/j!, J_0 = e^h - 1.
    L with c = 1 is the ODE's I_j, with c = 2 it is twice the SDE's K_j.
    """
    out = []
    if kind == "L":
        v = -math.expm1(-c * h)
        for j in range(k):
            v = v if j == 0 else h ** j / math.factorial(j) - v / c
            out.append(v)
    else:
        v = math.expm1(h)
        for j in range(k):
            v = v if j == 0 else v - h ** j / math.factorial(j)
            out.append(v)
    return out


def _taylor_weights(lams: list[float], center: float) -> list[list[float]]:
    """w[j][i] with f^(j)(center) ~= sum_i w[j][i] f(lams[i]): derivatives of the interpolating polynomial."""
    k = len(lams)
    if k == 1:
        return [[1.0]]
    V = torch.tensor([[(lam - center) ** j / math.factorial(j) for j in range(k)] for lam in lams],
                     dtype=torch.float64)
    return torch.linalg.inv(V).tolist()


def mr_step_coefficients(solver: str, parameterization: str, lams: list[float], lam_t: float,
                         a_s: float, a_t: float, sb_s: float, sb_t: float, *, center: float | None = None):
    """Coefficients of one MR step from s to t: x_t = cx x_s + cmu mu + sum_i w_i q_i + std z.

    `lams` are the lambdas of the predictions q_i used (len = order), `center` the lambda of the
    step's start s (default lams[0], the newest prediction: the multistep predictor; the UniC
    corrector passes the new point lambda_t first). `lam_t` is the target's lambda (inf at t = 0,
    where only one prediction may be used). Python floats, float64 arithmetic.

    Data form with rate c (`noise_rate`): y_t = e^{-ch} (alpha_t/alpha_s) y_s + alpha_t sum_j L_j f^(j)
    + sb_t sqrt(1 - e^{-2(c-1)h}) z for y = x - mu, f = x0_hat - mu; c = 1 is the PF-ODE, c = 2
    the reverse SDE.
    """
    k = len(lams)
    center = lams[0] if center is None else center
    final = sb_t == 0.0
    if final and k != 1:
        raise ValueError("the step into t = 0 (lambda = inf) must be first order")
    h = math.inf if final else lam_t - center
    E = a_t * sb_s / a_s  # sb_t * e^{h}, finite even at t = 0
    if parameterization == "data":
        c = noise_rate(solver)
        e_mch = (sb_t * a_s / (a_t * sb_s)) ** c  # e^{-ch}; 0 at t = 0
        cx = e_mch * a_t / a_s
        base, C = a_t, _kernel_coefficients("L", h, k, c)
        cmu = 1 - cx - a_t * C[0]
        std = sb_t * math.sqrt(max(-math.expm1(-2 * (c - 1) * h), 0.0)) if c > 1 else 0.0
    else:
        cx = a_t / a_s
        cmu = 1 - cx
        scale = 1.0 if solver == "ode" else 2.0
        if final:
            base, C = -scale, [E]  # sb_t (e^h - 1) -> alpha_t sb_s / alpha_s as sb_t -> 0
        else:
            base, C = -scale * sb_t, _kernel_coefficients("J", h, k)
        std = 0.0 if solver == "ode" else math.sqrt(max(E * E - sb_t * sb_t, 0.0))
    rows = _taylor_weights(lams, center)
    w = [base * sum(C[j] * rows[j][i] for j in range(k)) for i in range(k)]
    return cx, cmu, w, std


def unic_weights(solver: str, parameterization: str, lams: list[float], lam_new: float, lam_s: float,
                 a_s: float, a_t: float, sb_s: float, sb_t: float, *, variant: str = "bh2"):
    """UniC (Zhao et al., "UniPC", NeurIPS 2023) for the MR exponential integrator.

    Re-does the step from s to t with the prediction at the new point t added to the `lams`
    predictions the predictor used: the polynomial through all of them, integrated against the
    step's exact kernel (one order more, no extra network call). With p >= 2 points the UniC
    linear system is square and B(h) cancels; with the single old point UniC fixes
    rho = 1/2, i.e. the weight B(h)/2 on (q_t - q_s), with B1(h) = c h or B2(h) = C_0(h) (the
    kernel's first coefficient, 1 - e^{-ch} for data and e^h - 1 for noise); "exact" keeps the
    kernel's own coefficient C_1/h. Returns (cx, cmu, w, std), w for [q_new] + q_old.
    """
    pts = [lam_new] + list(lams)
    cx, cmu, w, std = mr_step_coefficients(solver, parameterization, pts, lam_new, a_s, a_t, sb_s, sb_t,
                                           center=lam_s)
    if len(lams) == 1 and variant != "exact":
        h = lam_new - lam_s
        data = parameterization == "data"
        c = noise_rate(solver) if data else 1.0
        C0 = _kernel_coefficients("L" if data else "J", h, 1, c)[0]
        base = a_t if data else -(1.0 if solver == "ode" else 2.0) * sb_t
        B = c * h if variant == "bh1" else C0
        w = [base * 0.5 * B, base * (C0 - 0.5 * B)]
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


def _apply(x: torch.Tensor, mu: torch.Tensor, qs: list[torch.Tensor], coefficients, z: torch.Tensor | None):
    cx, cmu, w, std = coefficients
    x_new = x * cx
    x_new.add_(mu, alpha=cmu)
    for qi, wi in zip(qs, w):
        x_new.add_(qi, alpha=wi)
    if std > 0:
        x_new.add_(z, alpha=std)
    return x_new


def _final_step_in_u(x, mu, a_s: float, lams: list[float], eps_hist: list[torch.Tensor]) -> torch.Tensor:
    """The step into t = 0 in u = e^{-lambda}: (x - mu) / alpha at u = 0 minus the integral of the
    eps polynomial through the last k predictions (alpha(0) = 1)."""
    x_new = mu + (x - mu) / a_s
    for e, w in zip(eps_hist, final_step_weights([math.exp(-lam) for lam in lams])):
        x_new.add_(e, alpha=-w)
    return x_new


def _final_noise_step(x, mu, sde, a_s: float, sb_s: float, lams: list[float], eps_hist: list[torch.Tensor]):
    """The noise-form ODE's step into t = 0: a lambda-space step of len(eps_hist) orders to
    u = NOISE_FORM_END_U, returning mu + (x - mu) / alpha there (with NOISE_FORM_END_CARRY, minus
    u eps_0 with the newest eps for the rest of the way)."""
    lam_e = -math.log(NOISE_FORM_END_U)
    a_e = sde.alpha(sde.t_from_lambda(torch.tensor(lam_e, dtype=torch.float64))).item()
    coeffs = mr_step_coefficients("ode", "noise", lams, lam_e, a_s, a_e, sb_s, a_e * NOISE_FORM_END_U)
    x_e = _apply(x, mu, eps_hist, coeffs, None)
    x0 = mu + (x_e - mu) / a_e
    return x0 - NOISE_FORM_END_U * eps_hist[0] if NOISE_FORM_END_CARRY else x0


@torch.no_grad()
def sample_mr(denoiser: Denoiser, x: torch.Tensor, mu: torch.Tensor, times: torch.Tensor, *,
              solver: str = "ode", order: int = 2, parameterization: str = "data",
              lower_order_final: bool = True, denoise_last: bool = False, final_order: int | None = None,
              corrector: str = "none", unic_variant: str = "bh2",
              generator: torch.Generator | None = None, callback: Callable | None = None) -> torch.Tensor:
    """MR Sampler (Li et al., ICLR 2025): multistep exponential integrator, len(times)-1 NFE.

    `corrector="unic"` corrects each state with the evaluation made there (UniC, Zhao et al. 2023,
    `unic_weights`) before the next step; the final step, with no evaluation after it, is not corrected.
    """
    sde = denoiser.sde
    if final_order is None:
        final_order = default_final_order(solver, parameterization, order, corrector)
    lam_all = sde.half_log_snr(times).tolist()
    a_all = sde.alpha(times).tolist()
    sb_all = sde.sigma_bar(times).tolist()
    n = len(times) - 1
    hist_q: list[torch.Tensor] = []
    hist_lam: list[float] = []
    hist_eps: list[torch.Tensor] = []  # noise predictions of the last steps, for the step into t = 0
    ends_at_zero = sb_all[-1] == 0.0
    prev = None  # (state at the step's start, predictions used, their lambdas, noise) for UniC
    for i in range(n):
        s, t = times[i].item(), times[i + 1].item()
        out = denoiser(x, s, i)
        x0_hat = denoiser.data(out, x, s) if (parameterization == "data" or denoise_last or callback) else None
        q = x0_hat if parameterization == "data" else denoiser.noise(out, x, s)
        last = i == n - 1
        if ends_at_zero and final_order > 1 and i >= n - final_order:
            hist_eps.insert(0, q if parameterization == "noise" else denoiser.noise(out, x, s))
        if prev is not None:
            x_s, qs, lams, z = prev
            coeffs = unic_weights(solver, parameterization, lams, lam_all[i], lam_all[i - 1], a_all[i - 1], a_all[i],
                                  sb_all[i - 1], sb_all[i], variant=unic_variant)
            x = _apply(x_s, mu, [q] + qs, coeffs, z)
            check_finite(x, i, s)
        hist_q.insert(0, q)
        hist_lam.insert(0, lam_all[i])
        del hist_q[order:], hist_lam[order:]
        prev = None
        if denoise_last and last:
            x = x0_hat
        elif ends_at_zero and last and len(hist_eps) > 1:
            lams = lam_all[n - len(hist_eps):n][::-1]
            if ends_at_noise_form_end(solver, parameterization, corrector) and sb_all[i] > a_all[i] * NOISE_FORM_END_U:
                x = _final_noise_step(x, mu, sde, a_all[i], sb_all[i], lams, hist_eps)
            else:
                x = _final_step_in_u(x, mu, a_all[i], lams, hist_eps)
        else:
            k = len(hist_q)
            if lower_order_final and n < LOWER_ORDER_BELOW_NFE:
                k = min(k, n - i)
            if sb_all[i + 1] == 0.0:
                k = 1  # lambda = inf: the first-order limit (higher orders: the u-space step above)
            coeffs = mr_step_coefficients(solver, parameterization, hist_lam[:k], lam_all[i + 1], a_all[i],
                                          a_all[i + 1], sb_all[i], sb_all[i + 1])
            z = randn_like(x, generator) if coeffs[3] > 0 else None
            if corrector == "unic" and not last:
                prev = (x, hist_q[:k], hist_lam[:k], z)
            x = _apply(x, mu, hist_q[:k], coeffs, z)
        check_finite(x, i, t)
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0_hat": x0_hat})
    return x
