"""MRDiffusionModule pieces: objective targets against the SDE, time draws, LR schedule, metrics."""

import math
import warnings

import pytest
import torch

from mrlight import metrics as M
from mrlight.module import MRDiffusionModule, train_seed, warmup_cosine
from mrlight.sampling import sampler_options


def _module(load_tiny, prediction, **kw):
    cfg = load_tiny(f"objective.prediction={prediction}", *[f"{k}={v}" for k, v in kw.items()])
    from mrlight.config import to_dict

    return MRDiffusionModule(to_dict(cfg))


class Zero(torch.nn.Module):
    def forward(self, x_t, mu, t):
        return torch.zeros_like(x_t)


class Oracle(torch.nn.Module):
    """Returns the exact regression target, recovered from x_t and the known x0."""

    def __init__(self, module, x0, prediction):
        super().__init__()
        self.m, self.x0, self.prediction = module, x0, prediction

    def forward(self, x_t, mu, t):
        sde = self.m.sde
        a = sde.alpha(t.double()).float().reshape(-1, 1, 1, 1)
        s = sde.sigma_bar(t.double()).float().reshape(-1, 1, 1, 1)
        eps = (x_t - mu - a * (self.x0 - mu)) / s
        if self.prediction == "data":
            return self.x0
        if self.prediction == "velocity":
            return a * sde.max_sigma * eps - (1 - a * a).sqrt() * (self.x0 - mu)
        return eps


@pytest.mark.parametrize("prediction", ["noise", "data", "velocity"])
def test_exact_prediction_has_zero_loss(load_tiny, prediction):
    m = _module(load_tiny, prediction)
    x0, mu = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    m.net = Oracle(m, x0, prediction)
    loss = m.model_step({"gt": x0, "lq": mu}, torch.Generator().manual_seed(0))
    assert loss.item() < 1e-3, loss
    m.net = Zero()
    assert m.model_step({"gt": x0, "lq": mu}, torch.Generator().manual_seed(0)).item() > 1e-2


def test_matching_loss_matches_posterior_mean(load_tiny):
    """IR-SDE's matching objective: with the true noise the Euler step lands near the posterior mean."""
    m = _module(load_tiny, "matching")
    assert m.discrete_t and m.prediction == "noise"
    x0, mu = torch.rand(8, 3, 16, 16), torch.rand(8, 3, 16, 16)
    m.net = Oracle(m, x0, "noise")
    good = m.model_step({"gt": x0, "lq": mu}, torch.Generator().manual_seed(0)).item()
    m.net = Zero()
    bad = m.model_step({"gt": x0, "lq": mu}, torch.Generator().manual_seed(0)).item()
    assert good < 0.2 * bad


def test_time_draws(load_tiny):
    cont = _module(load_tiny, "noise")
    t = cont.draw_times(4096, torch.Generator().manual_seed(0))
    assert t.min() > 0 and t.max() <= 100 and (t != t.round()).any()
    disc = _module(load_tiny, "noise", **{"objective.t_sampling": "discrete"})
    t = disc.draw_times(4096, torch.Generator().manual_seed(0))
    assert (t == t.round()).all() and t.min() == 1 and t.max() == 100


def test_ranks_draw_different_times():
    seeds = {train_seed(42, rank) for rank in range(8)}
    assert len(seeds) == 8 and train_seed(42, 0, batch=10) not in seeds


def test_warmup_cosine():
    f = warmup_cosine(10, 110, 0.01)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.01 + 0.99 * 0.5)
    assert f(110) == pytest.approx(0.01) and f(500) == pytest.approx(0.01)
    assert warmup_cosine(0, 100, 0.0, cosine=False)(50) == 1.0


def test_sampler_options_keep_set_values_and_an_unused_one_is_refused_by_name():
    cfg = dict(sampler="posterior", nfe=100, solver=None, order=None, parameterization=None,
               time_schedule=None, lambda_min=None, thresholding=None, denoise_last=None)
    assert sampler_options(cfg) == {"sampler": "posterior", "nfe": 100}
    from mrlight.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"sampler\.order=2 \(sampler 'posterior'\).*not used by sampler 'posterior'"):
        load_config(["sampler.sampler=posterior", "sampler.order=2"])


def test_per_image_psnr_and_y_channel():
    gt = torch.rand(3, 3, 24, 24)
    pred = (gt + torch.linspace(0.01, 0.2, 3).reshape(3, 1, 1, 1) * torch.randn_like(gt)).clamp(0, 1)
    m = M.RestorationMetrics(lpips="off")
    m.update(pred[:2], gt[:2])
    m.update(pred[2:], gt[2:])
    per_image = [10 * math.log10(1 / ((p - g) ** 2).mean().item()) for p, g in zip(pred, gt)]
    values = m.compute()
    assert values["psnr"] == pytest.approx(sum(per_image) / 3, rel=1e-4)
    assert "lpips" not in values
    white = torch.ones(1, 3, 2, 2)
    assert M.rgb_to_y(white).flatten()[0].item() == pytest.approx(235 / 255, abs=1e-4)
    assert M.rgb_to_y(torch.zeros(1, 3, 2, 2)).flatten()[0].item() == pytest.approx(16 / 255)


def test_lpips_unavailable_warns_once_and_skips(monkeypatch):
    import lpips

    def broken(*a, **k):
        raise OSError("no network")

    monkeypatch.setattr(lpips, "LPIPS", broken)
    monkeypatch.setattr(M, "_LPIPS_NETS", {})
    m = M.RestorationMetrics(lpips="pretrained")
    x = torch.rand(1, 3, 16, 16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m.update(x, x)
        m.update(x, x)
    assert sum("LPIPS is skipped" in str(w.message) for w in caught) == 1
    assert "lpips" not in m.compute() and m.compute()["psnr"] > 50


def test_lpips_random_backbone():
    m = M.RestorationMetrics(lpips="random")
    x = torch.rand(2, 3, 32, 32)
    m.update(x, (x + 0.2 * torch.randn_like(x)).clamp(0, 1))
    assert m.compute()["lpips"] > 0
