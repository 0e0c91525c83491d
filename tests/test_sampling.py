"""Samplers, checked as diffusers' SchedulerCommonTest does: an analytic model (the exact
Gaussian-mixture oracle), every option, convergence order against a reference ODE solve,
the true law at large NFE, reproducibility, NFE accounting and clear errors."""

import itertools
import math

import pytest
import torch

from mrlight.analytic import GaussianMixture, Oracle, pf_ode_reference, wasserstein1
from mrlight.sampling import NonFiniteError, TIME_SCHEDULES, get_times, sample
from mrlight.sampling.schedules import OFFICIAL_END_SCHEDULES
from mrlight.sampling.mr import mr_step_coefficients
from mrlight.sde import MRSDE

SDE = MRSDE()
LAW = GaussianMixture()

MR_CONFIGS = [dict(sampler="mr", solver=s, order=o, parameterization=p)
              for s, orders in (("ode", (1, 2, 3)), ("sde", (1, 2))) for o in orders for p in ("data", "noise")]
BASELINES = [dict(sampler="posterior"), dict(sampler="euler", solver="sde"), dict(sampler="euler", solver="ode"),
             dict(sampler="heun")]


def _mu(n=64, shape=(2, 3)):
    g = torch.Generator().manual_seed(0)
    return 0.3 + 0.4 * torch.rand(shape[0], shape[1], n // 8, 8, generator=g)


@pytest.mark.parametrize("cfg", MR_CONFIGS + BASELINES, ids=lambda c: "-".join(map(str, c.values())))
@pytest.mark.parametrize("prediction", ["noise", "data", "velocity"])
def test_every_option_gives_finite_float32_output_with_exact_nfe(cfg, prediction):
    mu = _mu()
    schedules = TIME_SCHEDULES if cfg["sampler"] == "mr" else ["linspace"]
    for schedule in schedules:
        oracle = Oracle(LAW, SDE, prediction)
        nfe = 5
        out = sample(oracle, mu, SDE, nfe=nfe, prediction=prediction, time_schedule=schedule,
                     generator=torch.Generator().manual_seed(1), **cfg)
        assert out.shape == mu.shape and out.dtype == torch.float32
        assert torch.isfinite(out).all()
        assert oracle.calls == nfe


@pytest.mark.parametrize("nfe", [1, 2, 7, 100])
def test_nfe_equals_network_calls(nfe):
    for cfg in MR_CONFIGS + [dict(sampler="posterior"), dict(sampler="euler")]:
        oracle = Oracle(LAW, SDE, "noise")
        sample(oracle, _mu(16), SDE, nfe=nfe, generator=torch.Generator().manual_seed(0), **cfg)
        assert oracle.calls == nfe, cfg
    oracle = Oracle(LAW, SDE, "noise")
    sample(oracle, _mu(16), SDE, sampler="heun", nfe=2 * (nfe // 2) + 1)
    assert oracle.calls == 2 * (nfe // 2) + 1


def _fit_slope(ns, errs):
    x = torch.tensor([math.log(n) for n in ns])
    y = torch.tensor([math.log(e) for e in errs])
    x, y = x - x.mean(), y - y.mean()
    return -(x * y).sum().item() / (x * x).sum().item()


@pytest.mark.parametrize("parameterization", ["data", "noise"])
@pytest.mark.parametrize("order,ns", [(1, [80, 160, 320]), (2, [20, 40, 80]), (3, [32, 64, 128])])
def test_ode_convergence_order(order, ns, parameterization):
    """Error at the last positive time vs a DOP853 solve of the PF-ODE falls like NFE^-order."""
    g = torch.Generator().manual_seed(0)
    mu = torch.full((128, 1), 0.5)
    x_T = SDE.prior_sample(mu, g)
    errs = []
    for n in ns:
        times = get_times("uniform-lambda-tmin", SDE, n, t_min=1.0)
        ref = pf_ode_reference(LAW, SDE, (x_T - mu).double(), times[-2].item())
        states = {}
        sample(Oracle(LAW, SDE, "noise"), mu, SDE, nfe=n, order=order, parameterization=parameterization,
               time_schedule="uniform-lambda-tmin", t_min=1.0, x_T=x_T, callback=lambda d: states.__setitem__(d["i"], d["x"]))
        errs.append(((states[n - 2] - mu).double() - ref).abs().max().item())
    slope = _fit_slope(ns, errs)
    assert slope > order - 0.4, (errs, slope)


@pytest.mark.parametrize("cfg,nfe", [(dict(sampler="posterior"), 100), (dict(sampler="euler"), 100),
                                     (dict(sampler="mr", solver="sde", order=2, parameterization="data"), 50),
                                     (dict(sampler="mr", solver="ode", order=2, parameterization="data"), 20)])
def test_samplers_reproduce_the_true_law(cfg, nfe):
    n = 40000
    mu = torch.full((n, 1), 0.5)
    out = sample(Oracle(LAW, SDE, "noise"), mu, SDE, nfe=nfe, generator=torch.Generator().manual_seed(0), **cfg)
    d = (out - mu).double()
    assert d.mean().item() == pytest.approx(LAW.mean, abs=0.006)
    assert d.std().item() == pytest.approx(LAW.std, rel=0.04)
    # an exact sample of the same size sits at about 1e-3; a collapsed or biased sampler at > 2e-2
    assert wasserstein1(d, LAW) < 0.01


def test_posterior_on_the_full_grid_is_irsde_step_for_step():
    """nfe = T on linspace: x_{t-1} = mu + term2 (x0_hat - mu) + term1 (x_t - mu) + std z (IR-SDE)."""
    mu = _mu(16)
    x_T = SDE.prior_sample(mu, torch.Generator().manual_seed(0))
    oracle = Oracle(LAW, SDE, "noise")
    got = sample(oracle, mu, SDE, sampler="posterior", nfe=SDE.T, x_T=x_T, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    x = x_T.clone()
    for t in range(SDE.T, 0, -1):
        tt = torch.full((x.shape[0],), float(t))
        eps = oracle(x, mu, tt)
        a_t, sb_t = SDE.alphas[t].item(), SDE.sigma_bars[t].item()
        x0 = (x - mu - sb_t * eps) / a_t + mu
        A = math.exp(-SDE.thetas[t].item() * SDE.dt)
        B, C = a_t, SDE.alphas[t - 1].item()
        mean = A * (1 - C ** 2) / (1 - B ** 2) * (x - mu) + C * (1 - A ** 2) / (1 - B ** 2) * (x0 - mu) + mu
        std = math.sqrt((1 - A ** 2) * (1 - C ** 2) / (1 - B ** 2)) * SDE.max_sigma
        z = torch.randn(x.shape, generator=g)
        x = mean + std * z if std > 0 else mean
    assert torch.allclose(got, x, atol=1e-5)


def test_euler_on_the_full_grid_is_irsde_reverse_sde():
    mu = _mu(16)
    x_T = SDE.prior_sample(mu, torch.Generator().manual_seed(0))
    oracle = Oracle(LAW, SDE, "noise")
    got = sample(oracle, mu, SDE, sampler="euler", nfe=SDE.T, x_T=x_T, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    x = x_T.clone()
    for t in range(SDE.T, 0, -1):
        eps = oracle(x, mu, torch.full((x.shape[0],), float(t)))
        score = -eps / SDE.sigma_bars[t].item()
        theta = SDE.thetas[t].item()
        g2 = 2 * SDE.max_sigma ** 2 * theta
        x = x - (theta * (mu - x) - g2 * score) * SDE.dt - math.sqrt(g2) * math.sqrt(SDE.dt) * torch.randn(x.shape, generator=g) * -1
    assert torch.allclose(got, x, atol=1e-5)


def test_first_order_steps_match_design_formulas():
    """MR order-1 coefficients equal DESIGN section 4's closed forms (data/noise x ODE/SDE)."""
    s, t = 60.0, 40.0
    f = lambda fn, x: fn(torch.tensor(x, dtype=torch.float64)).item()
    a_s, a_t, sb_s, sb_t = f(SDE.alpha, s), f(SDE.alpha, t), f(SDE.sigma_bar, s), f(SDE.sigma_bar, t)
    lam_s, lam_t = f(SDE.half_log_snr, s), f(SDE.half_log_snr, t)
    h = lam_t - lam_s
    cx, cmu, w, std = mr_step_coefficients("ode", "data", [lam_s], lam_t, a_s, a_t, sb_s, sb_t)
    assert (cx, cmu) == pytest.approx((sb_t / sb_s, 1 - sb_t / sb_s + sb_t / sb_s * a_s - a_t))
    assert w[0] == pytest.approx(sb_t * (math.exp(lam_t) - math.exp(lam_s))) and std == 0
    cx, cmu, w, std = mr_step_coefficients("sde", "data", [lam_s], lam_t, a_s, a_t, sb_s, sb_t)
    assert cx == pytest.approx(sb_t / sb_s * math.exp(-h))
    assert cmu == pytest.approx(1 - a_t / a_s * math.exp(-2 * h) - a_t + a_t * math.exp(-2 * h))
    assert w[0] == pytest.approx(a_t * (1 - math.exp(-2 * h)))
    assert std == pytest.approx(sb_t * math.sqrt(1 - math.exp(-2 * h)))
    cx, cmu, w, std = mr_step_coefficients("ode", "noise", [lam_s], lam_t, a_s, a_t, sb_s, sb_t)
    assert (cx, cmu) == pytest.approx((a_t / a_s, 1 - a_t / a_s))
    assert w[0] == pytest.approx(-a_t * (math.exp(-lam_s) - math.exp(-lam_t)))
    cx, cmu, w, std = mr_step_coefficients("sde", "noise", [lam_s], lam_t, a_s, a_t, sb_s, sb_t)
    assert w[0] == pytest.approx(-2 * a_t * (math.exp(-lam_s) - math.exp(-lam_t)))
    assert std == pytest.approx(sb_t * math.sqrt(math.exp(2 * h) - 1))


def test_final_step_into_t0_returns_x0_hat_for_data_form():
    mu = _mu(16)
    seen = {}
    out = sample(Oracle(LAW, SDE, "noise"), mu, SDE, nfe=6, final_order=1,
                 callback=lambda d: seen.__setitem__(d["i"], d))
    assert seen[5]["t"] == 0.0
    assert torch.allclose(out, seen[5]["x0_hat"], atol=1e-6)
    assert math.isinf(SDE.half_log_snr(torch.tensor(0.0)).item())


def test_generator_makes_output_reproducible():
    mu = _mu(32)
    for cfg in MR_CONFIGS + BASELINES[:2]:
        a = sample(Oracle(LAW, SDE), mu, SDE, nfe=5, generator=torch.Generator().manual_seed(7), **cfg)
        b = sample(Oracle(LAW, SDE), mu, SDE, nfe=5, generator=torch.Generator().manual_seed(7), **cfg)
        c = sample(Oracle(LAW, SDE), mu, SDE, nfe=5, generator=torch.Generator().manual_seed(8), **cfg)
        assert torch.equal(a, b), cfg
        assert not torch.equal(a, c), cfg


def test_state_is_float32_for_low_precision_inputs():
    mu = _mu(16).to(torch.bfloat16)
    seen = []

    def model(x, m, t):
        seen.append((x.dtype, m.dtype, t.dtype, t.shape))
        return torch.zeros_like(x, dtype=torch.bfloat16)

    out = sample(model, mu, SDE, nfe=3)
    assert out.dtype == torch.float32
    assert all(s == (torch.float32, torch.float32, torch.float32, (mu.shape[0],)) for s in seen)


def test_time_schedules():
    for name in TIME_SCHEDULES:
        for n in (1, 2, 10, 37):
            t = get_times(name, SDE, n)
            assert t.shape == (n + 1,) and t[0].item() == SDE.T and (t.diff() < 0).all(), name
            if name in OFFICIAL_END_SCHEDULES:  # the official grids stop where the official sampler does
                assert t[-1].item() > 0, name
            else:
                assert t[-1].item() == 0.0, name
    t = get_times("uniform-lambda-tmin", SDE, 10)
    lam = SDE.half_log_snr(t[:-1])
    assert torch.allclose(lam.diff(), lam.diff()[0].expand(9), atol=1e-9)
    # lambda_min clips the start when lambda(T) is below it
    t = get_times("linspace", SDE, 10, lambda_min=-2.0)
    assert SDE.half_log_snr(t[:1]).item() == pytest.approx(-2.0, abs=1e-9)


def test_dynamic_thresholding_and_denoise_last():
    mu = _mu(16)
    seen = {}
    out = sample(lambda x, m, t: torch.full_like(x, 3.0), mu, SDE, nfe=4, prediction="data", thresholding=True,
                 denoise_last=True, callback=lambda d: seen.__setitem__(d["i"], d))
    assert torch.allclose(out, torch.ones_like(out)) and torch.equal(out, seen[3]["x0_hat"])


@pytest.mark.parametrize("kwargs,match", [
    (dict(sampler="ddim"), "unknown sampler 'ddim'; valid: mr, posterior, euler, heun"),
    (dict(solver="rk4"), "unknown solver 'rk4'; valid: ode, sde"),
    (dict(time_schedule="cosine"), "valid: linspace, uniform-lambda, karras-t"),
    (dict(prediction="score"), "valid: noise, data, velocity"),
    (dict(parameterization="velocity"), "valid: noise, data"),
    (dict(order=3, solver="sde"), "order 3 is not supported by the MR SDE solver; valid: 1, 2"),
    (dict(order=4), "valid: 1, 2, 3"),
    (dict(nfe=0), "nfe must be an integer >= 1"),
    (dict(nfe=2.5), "nfe must be an integer >= 1"),
    (dict(sampler="heun", nfe=4), "nfe must be odd"),
    # one contract per sampler: an option the chosen sampler does not use is an error naming it
    (dict(sampler="posterior", order=2), "option 'order' is not used by sampler 'posterior'"),
    (dict(sampler="posterior", solver="ode"), "option 'solver' is not used by sampler 'posterior'"),
    (dict(sampler="posterior", denoise_last=True), "option 'denoise_last' is not used by sampler 'posterior'"),
    (dict(sampler="posterior", final_order=3), "option 'final_order' is not used by sampler 'posterior'"),
    (dict(sampler="heun", nfe=5, solver="ode"), "option 'solver' is not used by sampler 'heun'"),
    (dict(time_schedule=[100, 50, 20, 10, 5, 4, 3, 2, 1, 0.5, 0], t_min=2), "t_min .* not used with"),
    (dict(time_schedule="optimized", t_min=2), "t_min .* not used with"),
    (dict(time_schedule="linspace", t_min=2), "t_min .* not used with"),
    (dict(unic_variant="bh1"), "unic_variant applies with corrector='unic' only"),
    (dict(threshold_ratio=0.9), "apply with thresholding=True only"),
    (dict(denoise_lats=True), "unknown sampler option 'denoise_lats'"),
])
def test_invalid_options_raise_value_error_naming_valid_choices(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        sample(Oracle(LAW, SDE), _mu(16), SDE, **kwargs)
    bad = [k for k in kwargs if k in str(info.value)]
    assert bad, f"the message names none of {list(kwargs)}: {info.value}"


def test_euler_means_the_reverse_sde_unless_the_ode_is_asked_for():
    """One meaning per name: euler is stochastic by default (IR-SDE's reverse_sde), everywhere."""
    mu = _mu(16)
    runs = [sample(Oracle(LAW, SDE), mu, SDE, sampler="euler", nfe=20, generator=torch.Generator().manual_seed(s))
            for s in (0, 1)]
    x_T = SDE.prior_sample(mu, torch.Generator().manual_seed(0))
    ode = [sample(Oracle(LAW, SDE), mu, SDE, sampler="euler", nfe=20, solver="ode", x_T=x_T,
                  generator=torch.Generator().manual_seed(s)) for s in (0, 1)]
    assert not torch.equal(runs[0], runs[1]) and torch.equal(ode[0], ode[1])


def test_bad_inputs():
    mu = _mu(16)
    with pytest.raises(ValueError, match="x_T and mu must have the same shape"):
        sample(Oracle(LAW, SDE), mu, SDE, x_T=torch.zeros(1, 3, 4, 4))
    bad = mu.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="mu contains NaN or Inf"):
        sample(Oracle(LAW, SDE), bad, SDE)
    with pytest.raises(ValueError, match="x_T contains NaN or Inf"):
        sample(Oracle(LAW, SDE), mu, SDE, x_T=bad)
    with pytest.raises(ValueError, match="model_fn must return a tensor shaped like x_t"):
        sample(lambda x, m, t: x[:1], mu, SDE)


@pytest.mark.parametrize("sampler", ["mr", "posterior", "euler"])
def test_network_returning_nan_names_the_step(sampler):
    calls = []

    def model(x, m, t):
        calls.append(1)
        return torch.full_like(x, float("nan")) if len(calls) == 3 else torch.zeros_like(x)

    with pytest.raises(NonFiniteError, match=r"non-finite values \(NaN/Inf\) at step 2 \(t="):
        sample(model, _mu(16), SDE, sampler=sampler, nfe=5)


def test_regression_values():
    """The default configuration's outputs, stored (frozen from this implementation) so that
    unintended numerical changes show up; they lie within 0.004 of the PF-ODE's exact solution
    (DOP853 to t = 1e-3)."""
    mu = torch.full((4, 1), 0.5)
    x_T = mu + SDE.max_sigma * torch.tensor([[-1.0], [-0.3], [0.4], [1.2]])
    out = sample(Oracle(LAW, SDE), mu, SDE, x_T=x_T)
    stored = torch.tensor([[0.330048], [0.378573], [0.600012], [0.746030]])
    assert torch.allclose(out, stored, atol=1e-5), out.flatten().tolist()
    exact = mu + pf_ode_reference(LAW, SDE, (x_T - mu).double(), 1e-3).float()
    assert (out - exact).abs().max() < 0.004
