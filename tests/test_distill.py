"""Distillation (mrlight.distill): the restorer's call count, its contract, and that training teaches it.

Tiny analytic problem: the perfect network of mrlight.analytic as the teacher, a per-pixel MLP student.
"""

import copy
import math

import pytest
import torch
from torch import nn

from mrlight.analytic import GaussianMixture, Oracle
from mrlight.distill import CALLS, METHODS, Distilled, Distiller, distill, distill_loss, student_times, teacher_trajectory
from mrlight.sampling import sample
from mrlight.sampling.distilled import ode_step_coefficients, sample_distilled
from mrlight.sampling.mr import mr_step_coefficients
from mrlight.sde import MRSDE

SDE = MRSDE()
LAW = GaussianMixture(weights=[0.5, 0.5], means=[-0.1, 0.12], stds=[0.04, 0.05])


class PixelMLP(nn.Module):
    """A per-pixel student: MLP over ((x_t - mu) / 0.2, mu, sin/cos features of t), output mu + 0.2 * residual."""

    def __init__(self, hidden=32, freqs=4):
        super().__init__()
        self.register_buffer("freqs", 2.0 ** torch.arange(freqs) * math.pi)
        self.net = nn.Sequential(nn.Linear(2 + 2 * freqs, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, x, mu, t):
        b, _, h, w = x.shape
        ang = (t.float() / 100)[:, None] * self.freqs
        emb = torch.cat([ang.sin(), ang.cos()], 1)[:, :, None, None].expand(b, -1, h, w)
        feats = torch.cat([(x - mu) / 0.2, (mu - 0.5) / 0.1, emb], 1).permute(0, 2, 3, 1)
        return mu + 0.2 * self.net(feats).permute(0, 3, 1, 2)


class Counting(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, x, mu, t):
        self.calls += 1
        return self.net(x, mu, t)


def mu_fn(g, batch=8):
    return 0.4 + 0.2 * torch.rand(batch, 1, 8, 8, generator=g)


def _student(seed=0):
    torch.manual_seed(seed)
    return PixelMLP()


def _distilled(calls, **kw):
    kw.setdefault("student_prediction", "data")  # PixelMLP's output is mu + 0.2 * residual: an x0
    return Distiller(Oracle(LAW, SDE), _student(), SDE, calls=calls, **kw).D


@pytest.mark.parametrize("step", ["ode", "renoise"])
@pytest.mark.parametrize("calls", CALLS)
def test_restores_in_exactly_calls_student_calls(calls, step):
    D = _distilled(calls, step=step)
    D.student = Counting(D.student)
    mu = mu_fn(torch.Generator().manual_seed(0))
    out = sample_distilled(D, mu, SDE, nfe=calls, generator=torch.Generator().manual_seed(1))
    assert D.student.calls == calls
    assert out.shape == mu.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert D.calls == calls and len(D.times) == calls + 1 and D.times[0] == SDE.T and D.times[-1] == 0


def test_one_call_returns_the_students_x0():
    D = _distilled(1)
    mu = mu_fn(torch.Generator().manual_seed(0))
    x_T = SDE.prior_sample(mu, torch.Generator().manual_seed(1))
    out = sample_distilled(D, mu, SDE, nfe=1, x_T=x_T)
    with torch.no_grad():
        assert torch.equal(out, D(x_T, mu, torch.full((len(mu),), 100.0)))


def test_refuses_another_nfe_and_another_sde():
    D = _distilled(2)
    mu = mu_fn(torch.Generator().manual_seed(0))
    for nfe in (1, 4, 10):
        with pytest.raises(ValueError, match=rf"calls=2.*nfe={nfe}"):
            sample_distilled(D, mu, SDE, nfe=nfe)
    with pytest.raises(ValueError, match="distilled for"):
        sample_distilled(D, mu, MRSDE(max_sigma=30), nfe=2)


@pytest.mark.parametrize("step", ["ode", "renoise"])
def test_reproducible_with_a_generator(step):
    D = _distilled(4, step=step)
    mu = mu_fn(torch.Generator().manual_seed(0))
    a = sample_distilled(D, mu, SDE, nfe=4, generator=torch.Generator().manual_seed(5))
    b = sample_distilled(D, mu, SDE, nfe=4, generator=torch.Generator().manual_seed(5))
    c = sample_distilled(D, mu, SDE, nfe=4, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_ode_step_is_the_mr_samplers_first_order_step():
    t, s = 60.0, 17.5
    c, w = ode_step_coefficients(SDE, t, s)
    tt = torch.tensor([t, s], dtype=torch.float64)
    a, sb, lam = SDE.alpha(tt).tolist(), SDE.sigma_bar(tt).tolist(), SDE.half_log_snr(tt).tolist()
    cx, cmu, ws, _ = mr_step_coefficients("ode", "data", [lam[0]], lam[1], a[0], a[1], sb[0], sb[1])
    assert math.isclose(c, cx, rel_tol=1e-9) and math.isclose(w, ws[0], rel_tol=1e-9)
    assert math.isclose(cmu, 1 - c - w, rel_tol=1e-9, abs_tol=1e-12)
    assert ode_step_coefficients(SDE, 30.0, 0.0) == (0.0, 1.0)


@pytest.mark.parametrize("calls", [2, 4])
def test_student_times_are_the_official_grid_s_points_ending_at_zero(calls):
    """The official uniform-lambda grid stops at a positive time; a student's last call returns x0, so
    its times keep the grid's points and end at t = 0."""
    from mrlight.sampling import get_times

    grid = get_times("uniform-lambda", SDE, calls).tolist()
    times = student_times(SDE, calls)
    assert grid[-1] > 0 and times[-1] == 0.0 and times[:-1] == grid[:-1]


def test_teacher_trajectory_ends_where_the_mr_sampler_ends():
    mu = mu_fn(torch.Generator().manual_seed(0))
    x_T = SDE.prior_sample(mu, torch.Generator().manual_seed(1))
    times = student_times(SDE, 4)
    traj = teacher_trajectory(Oracle(LAW, SDE), mu, SDE, times, x_T=x_T, teacher_nfe=10)
    assert len(traj) == 5 and torch.equal(traj[0], x_T)
    from mrlight.distill import teacher_grid
    grid = teacher_grid(SDE, times, 10)
    ref = sample(Oracle(LAW, SDE), mu, SDE, nfe=len(grid) - 1, time_schedule=grid, x_T=x_T)
    assert torch.equal(traj[-1], ref)


def test_distill_reduces_the_error_against_the_teachers_trajectory_and_trains_in_place():
    """Loss on a fixed held-out batch (same x_T) before and after 150 steps: at least 4x smaller."""
    teacher = Oracle(LAW, SDE)
    student = _student()
    before_params = copy.deepcopy(student.state_dict())
    probe = Distiller(teacher, copy.deepcopy(student), SDE, calls=2, student_prediction="data").D
    mu = mu_fn(torch.Generator().manual_seed(123), batch=16)
    x_T = SDE.prior_sample(mu, torch.Generator().manual_seed(124))
    with torch.no_grad():
        before = distill_loss(probe, teacher, mu, x_T=x_T).item()
    D = distill(teacher, student, SDE, mu_fn, calls=2, iterations=150, lr=3e-3, student_prediction="data",
                generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        after = distill_loss(D, teacher, mu, x_T=x_T).item()
    assert after < before / 4, (before, after)
    assert D.student is student and isinstance(D, nn.Module)
    assert any(not torch.equal(p, before_params[k]) for k, p in student.state_dict().items())
    assert D.method == "regression" and D.calls == 2 and D.step == "ode"


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_and_restores(method):
    g = torch.Generator().manual_seed(0)
    D = distill(Oracle(LAW, SDE), _student(), SDE, mu_fn, calls=2, iterations=4, lr=1e-3, method=method,
                teacher_nfe=6, generator=g)
    assert D.method == method and D.step == ("renoise" if method == "consistency" else "ode")
    out = sample_distilled(D, mu_fn(g), SDE, nfe=2, generator=g)
    assert torch.isfinite(out).all()


def test_state_dict_round_trip_restores_the_same_model():
    D = _distilled(4, step="renoise")
    fresh = Distilled(_student(seed=7), SDE, student_times(SDE, 2), method="x")
    fresh.load_state_dict(D.state_dict())
    assert fresh.calls == 4 and fresh.method == D.method and fresh.step == "renoise"
    assert torch.equal(fresh.times, D.times)
    mu = mu_fn(torch.Generator().manual_seed(0))
    a = sample_distilled(D, mu, SDE, nfe=4, generator=torch.Generator().manual_seed(3))
    b = sample_distilled(fresh, mu, SDE, nfe=4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("prediction", ["noise", "data", "velocity"])
def test_any_teacher_prediction(prediction):
    """The same teacher in three output types gives the same trajectory targets."""
    mu = mu_fn(torch.Generator().manual_seed(0))
    x_T = SDE.prior_sample(mu, torch.Generator().manual_seed(1))
    D = _distilled(2)
    with torch.no_grad():
        ref = distill_loss(D, Oracle(LAW, SDE, "noise"), mu, x_T=x_T, prediction="noise").item()
        got = distill_loss(D, Oracle(LAW, SDE, prediction), mu, x_T=x_T, prediction=prediction).item()
    assert math.isclose(got, ref, rel_tol=1e-3)


def test_bad_arguments_name_the_valid_choices():
    teacher, student = Oracle(LAW, SDE), _student()
    with pytest.raises(ValueError, match=r"calls 3.*valid: 1, 2, 4"):
        distill(teacher, student, SDE, mu_fn, calls=3, iterations=1)
    with pytest.raises(ValueError, match=r"prediction 'eps'.*valid: noise, data, velocity"):
        distill(teacher, student, SDE, mu_fn, calls=1, iterations=1, prediction="eps")
    with pytest.raises(ValueError, match=r"method 'dmd'.*valid: regression, consistency, progressive"):
        distill(teacher, student, SDE, mu_fn, calls=1, iterations=1, method="dmd")
    with pytest.raises(ValueError, match=r"student_prediction|prediction 'x0'.*valid"):
        distill(teacher, student, SDE, mu_fn, calls=1, iterations=1, student_prediction="x0")
    with pytest.raises(ValueError, match="iterations"):
        distill(teacher, student, SDE, mu_fn, calls=1, iterations=-1)
    with pytest.raises(ValueError, match="times has 4 times; nfe=2"):
        distill(teacher, student, SDE, mu_fn, calls=2, iterations=1, times=[100, 50, 10, 0])
    with pytest.raises(ValueError, match=r"step 'sde'.*valid: ode, renoise"):
        distill(teacher, student, SDE, mu_fn, calls=2, iterations=1, step="sde")
    with pytest.raises(ValueError, match="renoise"):
        distill(teacher, student, SDE, mu_fn, calls=2, iterations=1, method="consistency", step="ode")


def test_the_teacher_itself_is_refused_as_student_and_set_to_eval():
    net = _student()
    with pytest.raises(ValueError, match="copy"):
        distill(net, net, SDE, mu_fn, calls=1, iterations=1, prediction="data")
    teacher = _student(seed=1).train()
    distill(teacher, _student(), SDE, mu_fn, calls=1, iterations=1, prediction="data", teacher_nfe=4)
    assert not teacher.training
    with pytest.raises(TypeError, match="mu_fn must return"):
        distill(teacher, _student(), SDE, lambda g: [0.5], calls=1, iterations=1, prediction="data")


class OracleNet(nn.Module):
    """The exact network as an nn.Module (so it can be copied as a student)."""

    def __init__(self, prediction):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.oracle = Oracle(LAW, SDE, prediction)

    def forward(self, x, mu, t):
        return self.scale * self.oracle(x, mu, t)


@pytest.mark.parametrize("prediction,expected", [("data", "data"), ("velocity", "velocity"), ("noise", "noise")])
def test_a_copy_of_the_teacher_starts_as_its_x0_estimate(prediction, expected):
    """Default student output: the teacher's own (so a copy starts as the teacher's x0 estimate);
    D always returns x0."""
    teacher = OracleNet(prediction)
    D = Distiller(teacher, copy.deepcopy(teacher), SDE, calls=2, prediction=prediction).D
    assert D.prediction == expected
    mu = mu_fn(torch.Generator().manual_seed(0))
    x_t = SDE.q_sample(mu + 0.1, mu, torch.full((len(mu),), 40.0), generator=torch.Generator().manual_seed(1))
    t = torch.full((len(mu),), 40.0)
    x0 = mu.double() + LAW.posterior_mean((x_t - mu).double(), SDE.alpha(torch.tensor(40.0)), SDE.sigma_bar(torch.tensor(40.0)))
    with torch.no_grad():
        got = D(x_t, mu, t)
    assert torch.allclose(got.double(), x0, atol=1e-5)


def test_a_teacher_with_a_later_start_moves_the_prior_to_it_and_keeps_every_student_time():
    """teacher_kwargs t_start (a noise teacher's default): the states at the student's times above
    t_start are the prior moved by sigma_bar(t) / sigma_bar(T); below it the teacher's MR solve from
    t_start equals sample(..., t_start=...) on the same grid."""
    from mrlight.distill import teacher_grid, teacher_trajectory

    teacher = Oracle(LAW, SDE)
    mu = mu_fn(torch.Generator().manual_seed(0))
    x_T = SDE.prior_sample(mu, torch.Generator().manual_seed(1))
    times = [100.0, 75.3, 40.7, 7.9, 0.0]
    traj = teacher_trajectory(teacher, mu, SDE, times, x_T=x_T, teacher_nfe=10, teacher_kwargs=dict(t_start=60.0))
    assert len(traj) == 5 and torch.equal(traj[0], x_T)
    sb = lambda t: SDE.sigma_bar(torch.tensor(t, dtype=torch.float64)).item()  # noqa: E731
    assert torch.allclose(traj[1], mu + sb(75.3) / sb(100.0) * (x_T - mu))
    grid = teacher_grid(SDE, times, 10, t_start=60.0)
    assert grid[0] == 60.0 and grid[-1] == 0.0 and {40.7, 7.9} <= set(grid) and max(grid) == 60.0
    ref = sample(teacher, mu, SDE, prediction="noise", nfe=len(grid) - 1, time_schedule=grid,
                 x_T=mu + sb(60.0) / sb(100.0) * (x_T - mu))
    assert torch.allclose(traj[-1], ref)
    plain = teacher_trajectory(teacher, mu, SDE, times, x_T=x_T, teacher_nfe=10)
    assert not torch.allclose(plain[1], traj[1])


def test_a_student_that_starts_later_moves_the_prior_first_and_needs_a_teacher_that_does_too():
    """times[0] < T: sample_distilled moves x_T to times[0] (mu + sigma_bar(t0)/sigma_bar(T) (x_T - mu))
    before its first call; the Distiller accepts such times only with a teacher t_start at or below them."""
    from mrlight.distill import student_times

    times = student_times(SDE, 2, t_start=60.0)
    assert times[0] == 60.0 and times[-1] == 0 and len(times) == 3
    assert student_times(SDE, 1, t_start=60.0) == [60.0, 0.0]
    seen = []

    def net(x, mu, t):
        seen.append((x.clone(), float(t[0])))
        return mu

    D = Distilled(net, SDE, times, method="regression")
    mu = mu_fn(torch.Generator().manual_seed(0))
    x_T = SDE.prior_sample(mu, torch.Generator().manual_seed(1))
    sample_distilled(D, mu, SDE, nfe=2, x_T=x_T)
    sb = lambda t: SDE.sigma_bar(torch.tensor(t, dtype=torch.float64)).item()  # noqa: E731
    assert seen[0][1] == 60.0 and torch.allclose(seen[0][0], mu + sb(60.0) / sb(100.0) * (x_T - mu))
    with pytest.raises(ValueError, match="t_start"):
        Distiller(Oracle(LAW, SDE), _student(), SDE, calls=2, times=times)
    Distiller(Oracle(LAW, SDE), _student(), SDE, calls=2, times=times, teacher_kwargs=dict(t_start=60.0))
