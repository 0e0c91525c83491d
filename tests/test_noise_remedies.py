"""Remedies for few-step sampling on noise-prediction networks (issue 16, item 4).

A noise network's data estimate x0_hat = mu + (x_t - mu - sigma_bar eps_hat) / alpha multiplies the
error of eps_hat by sigma_bar / alpha (about 40 at t = T for max_sigma 50). The MR Sampler's remedies,
measured in docs/results/noise_remedies.md: clipping x0_hat to [0, 1] (`thresholding=True,
threshold_max=1.0`) and a later start `t_start` from the rescaled prior; `noise_network_defaults`
says which options to add for a noise network.
"""

import pytest
import torch

from mrlight.analytic import GaussianMixture, Oracle, pf_ode_reference
from mrlight.sampling import (NOISE_END_NOISE, NOISE_NETWORK_DEFAULTS, NOISE_START_AMPLIFICATION, SAMPLER_OPTIONS, dynamic_threshold, get_times,
                              noise_network_defaults, sample)
from mrlight.sde import MRSDE
from mrlight.sampling.schedules import DEFAULT_T_MIN

SDE = MRSDE()
LAW = GaussianMixture()


def _mu(n=16, seed=0):
    return torch.rand(2, 3, n, n, generator=torch.Generator().manual_seed(seed)) * 0.6 + 0.2


class Recorder:
    """A noise network with a large, fixed error in eps_hat; records the times and states it sees."""

    def __init__(self, error=0.3):
        self.error = error
        self.t, self.x = [], []

    def __call__(self, x, mu, t):
        self.t.append(t[0].item())
        self.x.append(x.clone())
        g = torch.Generator().manual_seed(len(self.t))
        return self.error * torch.randn(x.shape, generator=g)


# -- (a) clipping x0_hat to the data range ------------------------------------------------------------
def test_threshold_max_one_is_a_plain_clip_to_the_data_range():
    x0 = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 + 0.5
    assert torch.equal(dynamic_threshold(x0, 0.995, 1.0), x0.clamp(0, 1))


@pytest.mark.parametrize("solver", ["ode", "sde"])
def test_clipped_x0_hat_never_leaves_the_data_range(solver):
    """With thresholding=True, threshold_max=1.0 every x0_hat the sampler uses is in [0, 1], while the
    same noise network's unclipped estimates at t = T are far outside it."""
    mu, seen, raw = _mu(), [], []
    kw = dict(prediction="noise", nfe=6, solver=solver, generator=torch.Generator().manual_seed(0),
              x_T=SDE.prior_sample(mu, torch.Generator().manual_seed(0)))
    sample(Recorder(), mu, SDE, **kw, callback=lambda d: raw.append(d["x0_hat"]))
    out = sample(Recorder(), mu, SDE, **kw, thresholding=True, threshold_max=1.0, denoise_last=True,
                 callback=lambda d: seen.append(d["x0_hat"]))
    assert len(seen) == 6
    assert raw[0].min() < -1 and raw[0].max() > 2  # sigma_bar / alpha = 39 at t = T
    assert all(x.min() >= 0 and x.max() <= 1 for x in seen)
    assert out.min() >= 0 and out.max() <= 1 and torch.equal(out, seen[-1])


# -- (d) a later start t_start from the rescaled prior --------------------------------------------------
@pytest.mark.parametrize("schedule", ["karras-t-tmin", "karras-t", "linspace", "uniform-lambda", "uniform-lambda-tmin", "quadratic-t"])
@pytest.mark.parametrize("nfe", [1, 5, 10])
def test_t_start_starts_at_that_time_with_the_rescaled_prior_in_exactly_nfe_calls(schedule, nfe):
    mu = _mu()
    x_T = SDE.prior_sample(mu, torch.Generator().manual_seed(2))
    net = Recorder(0.01)
    t_start = 60.0
    sample(net, mu, SDE, prediction="noise", nfe=nfe, x_T=x_T, t_start=t_start, time_schedule=schedule)
    assert len(net.t) == nfe
    assert net.t[0] == pytest.approx(t_start) and max(net.t) <= t_start
    ratio = (SDE.sigma_bar(torch.tensor(t_start, dtype=torch.float64)) / SDE.sigma_bar(torch.tensor(100.0))).item()
    assert 0.95 < ratio < 1  # sigma_bar(60) / sigma_bar(T)
    assert torch.allclose(net.x[0], mu + ratio * (x_T - mu), atol=1e-6)
    # the schedule runs from t_start: the same schedule function, started at t_start
    from mrlight.sampling.schedules import TIME_SCHEDULES

    expected = TIME_SCHEDULES[schedule](SDE, nfe, t_start, 3.0)[:-1].tolist()
    assert net.t == pytest.approx(expected, abs=1e-5)


def test_t_start_at_T_changes_nothing_and_a_drawn_prior_is_rescaled_the_same_way():
    mu = _mu()
    oracle = Oracle(LAW, SDE, "noise")
    x_T = SDE.prior_sample(mu, torch.Generator().manual_seed(3))
    assert torch.equal(sample(oracle, mu, SDE, x_T=x_T), sample(oracle, mu, SDE, x_T=x_T, t_start=100))
    drawn = sample(oracle, mu, SDE, t_start=70, generator=torch.Generator().manual_seed(3))
    given = sample(oracle, mu, SDE, t_start=70, x_T=x_T)
    assert torch.equal(drawn, given)


@pytest.mark.parametrize("t_start", [90.0, 70.0, 50.0])
def test_the_rescaled_prior_is_the_pf_ode_state_up_to_the_dropped_term(t_start):
    """The exact PF-ODE from T to t_start moves x_T to mu + (sigma_bar(ts)/sigma_bar(T)) (x_T - mu) plus a term
    of size alpha(ts) |E[x0 - mu]|, which t_start drops (|x0 - mu| <= 0.4 for this law)."""
    mu = torch.full((4000, 1), 0.5)
    y_T = (SDE.prior_sample(mu, torch.Generator().manual_seed(4)) - mu).double()
    ts = torch.tensor(t_start, dtype=torch.float64)
    exact = pf_ode_reference(LAW, SDE, y_T, t_start)
    rescaled = (SDE.sigma_bar(ts) / SDE.sigma_bar(torch.tensor(100.0, dtype=torch.float64))) * y_T
    gap = (exact - rescaled).abs().max().item()
    assert gap <= 0.4 * SDE.alpha(ts).item()
    assert gap < 0.1 * SDE.sigma_bar(ts).item() or t_start < 60  # small against the noise for t_start >= 60


@pytest.mark.parametrize("kwargs,match", [
    (dict(t_start=0), r"t_start must be a time in \(0, T=100\]"),
    (dict(t_start=100.5), r"t_start must be a time in \(0, T=100\]"),
    (dict(t_start=True), r"t_start must be a time"),
    (dict(t_start="60"), r"t_start must be a time"),
    (dict(t_start=2), r"t_start=2 must be above t_min=3.0"),
    (dict(t_start=10, t_min=12), r"t_start=10 must be above t_min=12"),
    (dict(t_start=60, time_schedule="optimized"), "t_start applies to the named time schedules"),
    (dict(t_start=60, time_schedule=[60, 30, 10, 5, 2, 0]), "t_start applies to the named time schedules"),
    (dict(t_start=60, lambda_min=-2.0), "give t_start or lambda_min, not both"),
])
def test_invalid_t_start_is_refused_naming_it(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        sample(Oracle(LAW, SDE), _mu(8), SDE, nfe=5, **kwargs)
    assert getattr(info.value, "option", None) == "t_start"


@pytest.mark.parametrize("sampler,nfe", [("posterior", 4), ("euler", 4), ("heun", 5)])
@pytest.mark.parametrize("option", [dict(t_start=60.0), dict(thresholding=True, threshold_max=1.0)])
def test_the_remedies_are_refused_by_samplers_that_do_not_use_them(sampler, nfe, option):
    with pytest.raises(ValueError, match=f"option '{next(iter(option))}' is not used by sampler '{sampler}'"):
        sample(Oracle(LAW, SDE), _mu(8), SDE, sampler=sampler, nfe=nfe, **option)


def test_clipping_is_refused_by_the_noise_parameterization():
    with pytest.raises(ValueError, match="thresholding applies to the MR Sampler's data parameterization only"):
        sample(Oracle(LAW, SDE), _mu(8), SDE, parameterization="noise", thresholding=True, threshold_max=1.0)


# -- the defaults for noise networks -------------------------------------------------------------------------
def test_noise_network_defaults_are_mr_options_for_noise_networks_only():
    assert noise_network_defaults("data") == {} and noise_network_defaults("velocity") == {}
    opts = noise_network_defaults("noise")
    assert opts == dict(NOISE_NETWORK_DEFAULTS, t_start=opts["t_start"], t_min=opts["t_min"])
    assert set(opts) <= set(SAMPLER_OPTIONS["mr"])
    assert opts["thresholding"] is True and opts["threshold_max"] == 1.0
    with pytest.raises(ValueError, match="valid: noise, data, velocity"):
        noise_network_defaults("score")
    mu, net = _mu(), Recorder()
    out = sample(net, mu, SDE, prediction="noise", nfe=5, **opts, denoise_last=True)
    assert len(net.t) == 5 and out.min() >= 0 and out.max() <= 1
    assert net.t[0] == pytest.approx(opts["t_start"])


def _noise_ratio_at(sde: MRSDE, t: float) -> float:
    """sigma_bar / alpha at t: the factor by which an error of eps_hat enters x0_hat."""
    tt = torch.tensor(t, dtype=torch.float64)
    return (sde.sigma_bar(tt) / sde.alpha(tt)).item()


@pytest.mark.parametrize("max_sigma,expected", [(50, 69.17), (10, 86.67), (70, 64.98)])
def test_noise_network_defaults_start_where_sigma_bar_over_alpha_is_the_set_amplification(max_sigma, expected):
    """t_start is where an error of eps_hat enters x0_hat multiplied by NOISE_START_AMPLIFICATION (= 2)."""
    sde = MRSDE(max_sigma=max_sigma)
    ts = noise_network_defaults("noise", sde)["t_start"]
    assert ts == pytest.approx(expected, abs=0.01)
    assert _noise_ratio_at(sde, ts) == pytest.approx(NOISE_START_AMPLIFICATION, rel=2e-3)
    # a schedule that never amplifies that much starts at T
    assert noise_network_defaults("noise", MRSDE(max_sigma=0.5))["t_start"] == 100.0


@pytest.mark.parametrize("max_sigma,expected", [(50, 16.02), (10, 41.82)])
def test_noise_network_defaults_end_where_sigma_bar_over_alpha_is_the_set_noise(max_sigma, expected):
    """t_min (the last positive time, whose x0_hat is returned) is where sigma_bar / alpha = NOISE_END_NOISE."""
    sde = MRSDE(max_sigma=max_sigma)
    tm = noise_network_defaults("noise", sde)["t_min"]
    assert tm == pytest.approx(expected, abs=0.01)
    assert _noise_ratio_at(sde, tm) == pytest.approx(NOISE_END_NOISE, rel=2e-3)
    # the network is called at t_min last
    net = Recorder()
    sample(net, _mu(8), sde, prediction="noise", nfe=5, **noise_network_defaults("noise", sde))
    assert net.t[-1] == pytest.approx(tm, abs=1e-4)


@pytest.mark.parametrize("options,expected", [
    (dict(sampler="posterior"), set()),
    (dict(parameterization="noise"), {"t_start"}),
    (dict(time_schedule="optimized"), {"thresholding", "threshold_max"}),
    (dict(time_schedule=[100, 50, 20, 10, 5, 0]), {"thresholding", "threshold_max"}),
    (dict(lambda_min=-2.0), {"thresholding", "threshold_max", "t_min"}),
    (dict(t_start=80.0), {"thresholding", "threshold_max", "t_min"}),
    (dict(thresholding=True), {"t_start", "t_min"}),
    (dict(thresholding=False), {"t_start", "t_min"}),
    (dict(threshold_max=1.2, time_schedule="linspace"), {"thresholding", "t_start"}),
    (dict(time_schedule="karras-t"), {"thresholding", "threshold_max", "t_start"}),
    (dict(t_min=5.0), {"thresholding", "threshold_max", "t_start"}),
    (dict(solver="sde", order=1, nfe=5), {"thresholding", "threshold_max", "t_start", "t_min"}),
])
def test_noise_network_defaults_add_only_what_fits_the_callers_options(options, expected):
    """The caller's options win, and a default that the chosen options would refuse is left out, so
    {**noise_network_defaults(prediction, sde, opts), **opts} is always a valid call."""
    added = noise_network_defaults("noise", SDE, options)
    assert set(added) == expected
    if options.get("sampler", "mr") == "mr":
        net = Recorder()
        sample(net, _mu(8), SDE, prediction="noise", **{"nfe": 5, **added, **options})
        assert len(net.t) == 5


def test_noise_network_defaults_beat_the_default_on_a_noisy_oracle():
    """An exact noise predictor plus a small error e (1% of the noise): clipping and the later start
    bring the 10-step ODE closer to the exact PF-ODE solution than the plain default does (all three end
    at the default t_min = 3: the noise defaults' own t_min sets where the solve stops, another test)."""
    mu = torch.full((1, 1, 40, 50), 0.5)
    oracle = Oracle(LAW, SDE, "noise")

    def noisy(x, m, t):
        g = torch.Generator().manual_seed(int(t[0].item() * 1000))
        return oracle(x, m, t) + 0.01 * torch.randn(x.shape, generator=g)

    x_T = SDE.prior_sample(mu, torch.Generator().manual_seed(5))
    exact = sample(oracle, mu, SDE, nfe=10, x_T=x_T, prediction="noise")
    plain = sample(noisy, mu, SDE, nfe=10, x_T=x_T, prediction="noise")
    fixed = sample(noisy, mu, SDE, nfe=10, x_T=x_T, prediction="noise",
                   **noise_network_defaults("noise", SDE, {"t_min": DEFAULT_T_MIN}), t_min=DEFAULT_T_MIN)
    assert (fixed - exact).abs().mean() < 0.5 * (plain - exact).abs().mean()


def test_get_times_is_unchanged_by_t_start_support():
    t = get_times("karras-t-tmin", SDE, 10)
    assert t[0].item() == 100.0 and t[-1].item() == 0.0


# -- applied automatically to noise-prediction checkpoints ----------------------------------------------
class TimeNet(torch.nn.Module):
    """A stand-in network that records the times it is called at (output: a small fixed eps_hat)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.t = []

    def forward(self, x, mu, t):
        self.t.append(float(t[0]))
        return 0.3 * torch.ones_like(x) + self.w


@pytest.mark.parametrize("prediction", ["noise", "data"])
def test_the_restorer_adds_the_noise_defaults_for_a_noise_checkpoint_only(prediction):
    from mrlight.inference import Restorer
    from mrlight.sampling import with_network_defaults

    mu = _mu(8)
    net = TimeNet()
    restorer = Restorer(net, SDE, prediction, {"sampler": "mr", "nfe": 5})
    got = restorer(mu[:1], name="a")
    t_start = noise_network_defaults("noise", SDE)["t_start"]
    assert len(net.t) == 5
    if prediction == "noise":
        assert max(net.t) <= t_start < SDE.T  # started later
        assert got.min() >= 0 and got.max() <= 1
    else:
        assert max(net.t) == SDE.T
    # the same restoration as an explicit call with the defaults written out
    net.t.clear()
    g = torch.Generator().manual_seed(restorer.seed + __import__("zlib").crc32(b"a"))
    explicit = sample(net, mu[:1], SDE, prediction=prediction, generator=g,
                      **with_network_defaults({"sampler": "mr", "nfe": 5}, prediction, SDE)).clamp(0, 1)
    assert torch.equal(got, explicit)


def test_the_caller_turns_the_noise_defaults_off():
    from mrlight.inference import Restorer

    net = TimeNet()
    restorer = Restorer(net, SDE, "noise", {"sampler": "mr", "nfe": 5})
    restorer(_mu(8)[:1], name="a", t_start=float(SDE.T), thresholding=False)
    assert max(net.t) == SDE.T

