"""Distillation: a student that restores in 1, 2 or 4 network calls, taught by an MR diffusion teacher.

    D = distill(teacher_fn, student, sde, mu_fn, calls=2, iterations=4000, prediction="noise",
                generator=torch.Generator().manual_seed(0))
    x0 = sample_distilled(D, mu, sde, nfe=2)       # sample(D, mu, sde, sampler="distilled", nfe=2)

`teacher_fn(x_t, mu, t)` is the trained diffusion network (it predicts `prediction`); `student` is
any network `student(x_t, mu, t)` with an output shaped like x_t. It is trained in place; start it
from a copy of the teacher's weights when the two share an architecture (`copy.deepcopy(net)`).
`mu_fn(generator)` returns a batch of degraded images [B, C, H, W]: no clean images are needed.

What the student's output means (`student_prediction`): by default what the teacher predicts (a
student copied from the teacher then starts as the teacher's own x0 estimate;
`DEFAULT_STUDENT_PREDICTION`). `D(x_t, mu, t)` always returns the student's x0. Between its calls + 1 times T = t_0 > ... >
t_calls = 0 (`times`) the restorer moves with the first-order data-form PF-ODE step of the MR
Sampler (x_{i+1} = mu + c (x_i - mu) + (alpha_{i+1} - c alpha_i) (x0_hat - mu), c =
sigma_bar_{i+1} / sigma_bar_i; the last step returns x0_hat, so one call returns the student's x0),
or, for consistency distillation, re-noises its x0 with the MR marginal (`mrlight.sampling.distilled`).

Methods (`METHODS`; docs/DISTILL.md has the measurements that chose the default):
- "regression" (default; Luhman & Luhman 2021, multistep): per batch, the teacher's PF-ODE is solved
  from x_T with the MR Sampler (ODE-2, data form, `teacher_nfe` steps on karras-t-tmin merged with the
  student's times), and at every student time t_i the student's x0 is regressed onto the x0 that
  makes its ODE step land on the teacher's state at t_{i+1} (at the last time: the teacher's end
  point). `step="renoise"` regresses every time onto the end point instead and samples by re-noising.
- "consistency" (Song et al., ICML 2023; IR-CM for the MR SDE): consistency distillation on a fine
  grid containing the student's times. Without clean data the points x_{tau_{n+1}} and the teacher's
  step to tau_n come from the same teacher trajectory; the target is the student's own (stop-gradient,
  or EMA with `target_ema`) x0 at tau_n, and at tau = 0 the state itself (the boundary condition).
  Samples by multistep consistency sampling (re-noising).
- "progressive" (Salimans & Ho, ICLR 2022): stages on nested grids of 16 -> ... -> calls steps, the
  iterations split evenly; stage 0 regresses onto the teacher's trajectory, each later stage matches
  two ODE steps of the frozen previous student with one. States come from the teacher's trajectory.

`Distiller` holds a method's state and gives the loss of one batch (`Distiller.loss`), for a
training loop such as a LightningModule's `training_step`; `distill()` is a loop over it with Adam
and a cosine learning-rate decay. `distill_loss` is the stateless per-batch loss of the default method.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Callable, Sequence

import torch
from torch import nn

from mrlight import parameterization as P
from mrlight.sampling import sample
from mrlight.sampling.distilled import STEP_RULES, Distilled, ode_step_coefficients, sample_distilled
from mrlight.sampling.schedules import DEFAULT_T_MIN, TIME_SCHEDULES, check_times, get_times
from mrlight.sde import MRSDE

__all__ = ["distill", "distill_loss", "Distiller", "Distilled", "sample_distilled", "student_times",
           "teacher_trajectory", "METHODS", "CALLS", "DEFAULT_METHOD"]

METHODS = ("regression", "consistency", "progressive")
DEFAULT_METHOD = "regression"
CALLS = (1, 2, 4)
LOSSES = ("l2", "l1")
# What the student's output means, by the teacher's prediction: the teacher's own, so that a copy of
# the teacher starts as the teacher's x0 estimate. Measured on a real noise teacher (docs/DISTILL.md,
# "Choices that matter more than the method"): after 50 steps from the teacher's copy the regression
# loss (x0 space) was 0.087 for a noise student, 0.32 for velocity and 0.46 for data (started at 0.12,
# 0.73, 1.15). A noise output at t = T is ill-conditioned (x0 = mu + (x_t - mu - sigma_bar eps) / alpha,
# sigma_bar / alpha = 39): a noise teacher's student starts at the teacher's t_start (`student_times`).
DEFAULT_STUDENT_PREDICTION = {"data": "data", "velocity": "velocity", "noise": "noise"}
# Student times for calls > 1: a named schedule of mrlight.sampling.schedules (see student_times).
DEFAULT_STUDENT_SCHEDULE = "uniform-lambda"
DEFAULT_TEACHER_NFE = 20
# Progressive distillation starts from this many steps; consistency distillation's grid has at least this many.
FINE_STEPS = 16


def _check_choice(name: str, value, valid) -> None:
    if isinstance(value, bool) or value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(map(str, valid))}")


def student_times(sde: MRSDE, calls: int, schedule: str = DEFAULT_STUDENT_SCHEDULE,
                  t_min: float = DEFAULT_T_MIN, t_start: float | None = None) -> list[float]:
    """The calls + 1 times from T (or `t_start`) to 0 at which the student is called (one call at the
    start for calls = 1). `t_start`: the later start of a noise teacher (`noise_network_defaults`); the
    student then starts where the teacher does, from the prior moved there (see `Distilled`)."""
    _check_choice("calls", calls, CALLS)
    start = float(sde.T) if t_start is None else float(t_start)
    if calls == 1:
        return [start, 0.0]
    if t_start is None:
        times = get_times(schedule, sde, calls, t_min=t_min)
    else:
        times = TIME_SCHEDULES[schedule](sde, calls, start, min(t_min, start))
    times[-1] = 0.0  # the student's last call returns x0: its times end at 0 (the official grids stop earlier)
    return times.tolist()


def refine(sde: MRSDE, times: Sequence[float], levels: int, t_floor: float = DEFAULT_T_MIN) -> list[float]:
    """Nested refinement: insert the lambda-midpoint of every interval `levels` times.

    The interval down to t = 0 (lambda = inf) is split at the lambda-midpoint of (t_a, t_floor)
    while t_a > 2 t_floor, else at t_a / 2.
    """
    times = [float(t) for t in times]
    lam = lambda t: sde.half_log_snr(torch.tensor(t, dtype=torch.float64)).item()  # noqa: E731
    for _ in range(levels):
        out = [times[0]]
        for a, b in zip(times[:-1], times[1:]):
            if b > 0:
                mid = sde.t_from_lambda(torch.tensor(0.5 * (lam(a) + lam(b)))).item()
            elif a > 2 * t_floor:
                mid = sde.t_from_lambda(torch.tensor(0.5 * (lam(a) + lam(t_floor)))).item()
            else:
                mid = a / 2
            out += [mid, b]
        times = out
    return times


def teacher_grid(sde: MRSDE, times: Sequence[float], teacher_nfe: int, min_gap: float = 0.25,
                 t_start: float | None = None) -> list[float]:
    """The teacher's times: karras-t-tmin with `teacher_nfe` steps from `t_start` (default T) merged with
    the `times` at or below it (teacher times closer than `min_gap` grid units to one of `times` are
    dropped)."""
    start = float(sde.T) if t_start is None else float(t_start)
    base = (get_times("karras-t-tmin", sde, teacher_nfe) if t_start is None else
            TIME_SCHEDULES["karras-t-tmin"](sde, teacher_nfe, start, min(DEFAULT_T_MIN, start))).tolist()
    below = [float(t) for t in times if float(t) <= start]
    keep = [b for b in base if min(abs(b - t) for t in below) > min_gap]
    return sorted(set(below) | set(keep) | {start}, reverse=True)


@torch.no_grad()
def teacher_trajectory(teacher_fn: Callable, mu: torch.Tensor, sde: MRSDE, times: Sequence[float], *,
                       prediction: str = "noise", x_T: torch.Tensor | None = None,
                       generator: torch.Generator | None = None, teacher_nfe: int = DEFAULT_TEACHER_NFE,
                       teacher_kwargs: dict | None = None) -> list[torch.Tensor]:
    """The teacher's PF-ODE states at `times` (T first, 0 last) from x_T, with the MR Sampler.

    The sampler (default: mrlight's ODE-2 in the data form; `teacher_kwargs` are passed on to
    `sample`) runs on `teacher_grid(sde, times, teacher_nfe)`, which contains `times`. A `t_start`
    in `teacher_kwargs` (what a noise teacher is sampled with, `noise_network_defaults`) is the
    sampler's later start: from T to t_start the state moves by the exact first-order step with
    x0_hat = mu, x_s = mu + sigma_bar(s) / sigma_bar(T) (x_T - mu), which also gives the states at
    the `times` above t_start; the grid starts at t_start. A `t_min` there is dropped: the teacher's
    PF-ODE is solved to the grid's end.
    """
    kw = dict(teacher_kwargs or {})
    kw.pop("t_min", None)  # the grid sets the last positive time (teacher_grid: karras-t-tmin's DEFAULT_T_MIN)
    t_start = kw.pop("t_start", None)
    if t_start is not None and float(t_start) >= float(sde.T):
        t_start = None
    grid = teacher_grid(sde, times, teacher_nfe, t_start=t_start)
    mu = mu.float()
    if x_T is None:
        x_T = sde.prior_sample(mu, generator)
    x_T = x_T.float()
    want = {float(t) for t in times}
    # at and above the start: the prior moved by the marginal's noise scale
    states = {t: sde.prior_moved_to(x_T, mu, t) for t in want | {grid[0]} if t >= grid[0]}

    def keep(d):
        t = grid[d["i"] + 1]
        if t in want:
            states[t] = d["x"].clone()

    sample(teacher_fn, mu, sde, sampler="mr", nfe=len(grid) - 1, prediction=prediction, time_schedule=grid,
           x_T=states[grid[0]], generator=generator, callback=keep, **kw)
    return [states[float(t)] for t in times]


def _x0_targets(sde: MRSDE, times: Sequence[float], traj: Sequence[torch.Tensor], mu: torch.Tensor) -> list[torch.Tensor]:
    """For each step i: the x0 that makes the first-order ODE step from traj[i] (at times[i]) land on traj[i+1]."""
    out = []
    for i in range(len(times) - 1):
        c, w = ode_step_coefficients(sde, times[i], times[i + 1])
        out.append(mu + (traj[i + 1] - mu - c * (traj[i] - mu)) / w)
    return out


def _distance(pred: torch.Tensor, target: torch.Tensor, loss: str) -> torch.Tensor:
    diff = pred - target
    return diff.square().mean() if loss == "l2" else diff.abs().mean()


def _student_x0(D: Distilled, xs: Sequence[torch.Tensor], mu: torch.Tensor, ts: Sequence[float]) -> torch.Tensor:
    """D's x0 at several (state, time) pairs in one batched call: [len(xs) * B, ...]."""
    b = mu.shape[0]
    t = torch.cat([torch.full((b,), float(ti), dtype=torch.float32, device=mu.device) for ti in ts])
    return D(torch.cat(list(xs)), mu.repeat((len(xs),) + (1,) * (mu.dim() - 1)), t)


def distill_loss(D: Distilled, teacher_fn: Callable, mu: torch.Tensor, *, prediction: str = "noise",
                 x_T: torch.Tensor | None = None, generator: torch.Generator | None = None,
                 teacher_nfe: int = DEFAULT_TEACHER_NFE, teacher_kwargs: dict | None = None,
                 loss: str = "l2") -> torch.Tensor:
    """The trajectory-regression loss of one batch (method "regression"), differentiable in D's student.

    Solves the teacher's PF-ODE from x_T (None: drawn from `generator`) through D's times and
    regresses D's x0 at each of its times onto the target of its step rule: the x0 whose ODE step
    reaches the teacher's next state (`step="ode"`), or the teacher's end point (`step="renoise"`).
    """
    times = D.times.tolist()
    traj = teacher_trajectory(teacher_fn, mu, D.sde, times, prediction=prediction, x_T=x_T, generator=generator,
                              teacher_nfe=teacher_nfe, teacher_kwargs=teacher_kwargs)
    mu = mu.float()
    k = len(times) - 1
    targets = _x0_targets(D.sde, times, traj, mu) if D.step == "ode" else [traj[-1]] * k
    pred = _student_x0(D, traj[:k], mu, times[:k])
    return _distance(pred, torch.cat(targets), loss)


class Distiller:
    """A distillation method's state and its per-batch loss, for any training loop.

        dist = Distiller(teacher_fn, student, sde, calls=2, prediction="noise", iterations=4000)
        for step in range(4000):
            loss = dist.loss(mu_batch, generator=g, step=step); loss.backward(); opt.step(); opt.zero_grad()
            dist.after_step(step)
        D = dist.D

    Args (besides those of `distill`): `iterations` is the total number of steps (progressive
    distillation splits them into stages); `target_ema` is the EMA decay of the consistency target
    network (0: the student itself under stop-gradient); `fine_steps` the number of steps of the
    finest grid (progressive: its first stage; consistency: its discretization).
    """

    def __init__(self, teacher_fn: Callable, student: nn.Module, sde: MRSDE, *, calls: int,
                 prediction: str = "noise", method: str = DEFAULT_METHOD, times: Sequence[float] | None = None,
                 student_prediction: str | None = None, step: str | None = None, iterations: int | None = None,
                 teacher_nfe: int = DEFAULT_TEACHER_NFE, teacher_kwargs: dict | None = None, loss: str = "l2",
                 target_ema: float = 0.0, fine_steps: int = FINE_STEPS):
        _check_choice("calls", calls, CALLS)
        P.check_prediction(prediction)
        _check_choice("method", method, METHODS)
        _check_choice("loss", loss, LOSSES)
        if not callable(teacher_fn):
            raise TypeError(f"teacher_fn must be callable (x_t, mu, t) -> prediction, got {type(teacher_fn).__name__}")
        if not isinstance(student, nn.Module):
            raise TypeError(f"student must be a torch.nn.Module, got {type(student).__name__}")
        if not isinstance(sde, MRSDE):
            raise TypeError(f"sde must be an mrlight.sde.MRSDE, got {type(sde).__name__}")
        if teacher_fn is student:
            raise ValueError("the student is trained in place: pass a copy of the teacher (copy.deepcopy), not the teacher")
        if isinstance(teacher_fn, nn.Module):
            teacher_fn.eval()  # no dropout / batch statistics in the teacher's solves
        if not any(p.requires_grad for p in student.parameters()):
            raise ValueError("the student has no trainable parameters")
        if isinstance(teacher_nfe, bool) or not isinstance(teacher_nfe, int) or teacher_nfe < 1:
            raise ValueError(f"teacher_nfe must be an integer >= 1, got {teacher_nfe!r}")
        if not 0 <= target_ema < 1:
            raise ValueError(f"target_ema must be in [0, 1), got {target_ema!r}")
        if student_prediction is None:
            student_prediction = DEFAULT_STUDENT_PREDICTION[prediction]
        P.check_prediction(student_prediction)
        if step is None:
            step = "renoise" if method == "consistency" else "ode"
        _check_choice("step", step, STEP_RULES)
        if method != "regression" and step != {"consistency": "renoise", "progressive": "ode"}[method]:
            raise ValueError(f"method {method!r} samples with step "
                             f"{'renoise' if method == 'consistency' else 'ode'!r}; step={step!r} applies to 'regression'")
        if times is None:
            times = student_times(sde, calls)
        times = check_times(times, sde, calls, "times").tolist()
        t_start = (teacher_kwargs or {}).get("t_start")
        if times[0] != sde.T and (t_start is None or times[0] < float(t_start)):
            raise ValueError(f"times must start at T={sde.T}, or at or above the teacher's t_start (teacher_kwargs) "
                             f"where the teacher's state is the moved prior; got {times[0]:g} with t_start={t_start}")
        self.teacher_fn, self.sde, self.prediction = teacher_fn, sde, prediction
        self.method, self.loss_name, self.calls = method, loss, calls
        self.teacher_nfe, self.teacher_kwargs = teacher_nfe, dict(teacher_kwargs or {})
        self.iterations = iterations
        self.D = Distilled(student, sde, times, method=method, prediction=student_prediction, step=step)
        self.target_ema = target_ema
        self._target = None
        self._step = 0
        levels = max(0, math.ceil(math.log2(fine_steps / calls)))
        if method == "progressive":
            if iterations is None:
                raise ValueError("progressive distillation needs iterations= (its stages split them)")
            fine = refine(sde, times, levels)
            self.grids = [fine[::2 ** s] for s in range(levels + 1)]  # fine -> coarse, nested; the last is `times`
            self.stage = -1
            self._frozen = None
        elif method == "consistency":
            self.grid = refine(sde, times, levels)

    # -- per-batch losses -------------------------------------------------------------------------
    def loss(self, mu: torch.Tensor, *, x_T: torch.Tensor | None = None, generator: torch.Generator | None = None,
             step: int | None = None) -> torch.Tensor:
        """The loss of one batch of degraded images `mu`; x_T None draws the prior from `generator`."""
        step = self._step if step is None else step
        self._step = step + 1
        mu = mu.float()
        if self.method == "regression":
            return distill_loss(self.D, self.teacher_fn, mu, prediction=self.prediction, x_T=x_T, generator=generator,
                                teacher_nfe=self.teacher_nfe, teacher_kwargs=self.teacher_kwargs, loss=self.loss_name)
        if self.method == "progressive":
            return self._progressive_loss(mu, x_T, generator, step)
        return self._consistency_loss(mu, x_T, generator)

    def _trajectory(self, mu, times, x_T, generator):
        return teacher_trajectory(self.teacher_fn, mu, self.sde, times, prediction=self.prediction, x_T=x_T,
                                  generator=generator, teacher_nfe=self.teacher_nfe, teacher_kwargs=self.teacher_kwargs)

    def _progressive_loss(self, mu, x_T, generator, step):
        stages = len(self.grids)
        stage = min(stages - 1, step * stages // max(self.iterations, 1))
        if stage != self.stage:
            self.stage = stage
            self._frozen = None if stage == 0 else copy.deepcopy(self.D).requires_grad_(False).eval()
        fine = self.grids[0]
        traj = dict(zip(fine, self._trajectory(mu, fine, x_T, generator)))
        grid = self.grids[stage]
        k = len(grid) - 1
        xs = [traj[t] for t in grid]
        if stage == 0:
            targets = _x0_targets(self.sde, grid, xs, mu)
        else:
            prev = self.grids[stage - 1]  # the frozen student's grid: grid[i] = prev[2 i]
            with torch.no_grad():
                x_mid = []
                x0 = _student_x0(self._frozen, xs[:k], mu, prev[0:2 * k:2]).chunk(k)
                for i in range(k):
                    c, w = ode_step_coefficients(self.sde, prev[2 * i], prev[2 * i + 1])
                    x_mid.append(mu + c * (xs[i] - mu) + w * (x0[i] - mu))
                x0 = _student_x0(self._frozen, x_mid, mu, prev[1:2 * k:2]).chunk(k)
                ends = []
                for i in range(k):
                    c, w = ode_step_coefficients(self.sde, prev[2 * i + 1], prev[2 * i + 2])
                    ends.append(mu + c * (x_mid[i] - mu) + w * (x0[i] - mu))
            targets = [_x0_targets(self.sde, grid[i:i + 2], [xs[i], ends[i]], mu)[0] for i in range(k)]
        pred = _student_x0(self.D, xs[:k], mu, grid[:k])
        return _distance(pred, torch.cat(targets), self.loss_name)

    def _consistency_loss(self, mu, x_T, generator):
        grid = self.grid
        traj = self._trajectory(mu, grid, x_T, generator)
        b, n = mu.shape[0], len(grid) - 1
        draws = self.calls  # as many student inputs per image as the regression method uses
        idx = torch.randint(0, n, (draws, b), generator=generator).flatten()
        stack = torch.stack(traj)  # [n + 1, B, ...]
        rows = torch.arange(b).repeat(draws)
        x_n, x_next = stack[idx, rows], stack[idx + 1, rows]
        g = torch.tensor(grid, dtype=torch.float32)
        mus = mu.repeat((draws,) + (1,) * (mu.dim() - 1))
        target_net = self.D if self._target is None else self._target
        with torch.no_grad():
            t_next = g[idx + 1]
            target = x_next.clone()  # f(x, 0) = x: the boundary condition
            inner = t_next > 0
            if inner.any():
                target[inner] = target_net(x_next[inner], mus[inner], t_next[inner].to(mu.device))
        pred = self.D(x_n, mus, g[idx].to(mu.device))
        return _distance(pred, target, self.loss_name)

    def window(self, step: int) -> tuple[int, int]:
        """(first step, number of steps) of the learning-rate cycle `step` is in: the whole run, or
        for progressive distillation its stage (the cosine decay restarts at every stage)."""
        total = self.iterations or 0
        if self.method != "progressive" or total == 0:
            return 0, total
        stages = len(self.grids)
        stage = min(stages - 1, step * stages // total)
        start, end = -(-stage * total // stages), -(-(stage + 1) * total // stages)
        return start, max(1, min(end, total) - start)

    def after_step(self, step: int | None = None) -> None:
        """Call after each optimizer step: updates the EMA target of consistency distillation."""
        if self.method != "consistency" or self.target_ema == 0:
            return
        if self._target is None:
            self._target = copy.deepcopy(self.D).requires_grad_(False)
            return
        with torch.no_grad():
            for p_t, p in zip(self._target.parameters(), self.D.parameters()):
                p_t.lerp_(p, 1 - self.target_ema)


def distill(teacher_fn: Callable, student: nn.Module, sde: MRSDE, mu_fn: Callable, *, calls: int, iterations: int,
            prediction: str = "noise", generator: torch.Generator | None = None, method: str = DEFAULT_METHOD,
            times: Sequence[float] | None = None, student_prediction: str | None = None, step: str | None = None,
            lr: float = 1e-4, lr_final: float = 0.0, teacher_nfe: int = DEFAULT_TEACHER_NFE,
            teacher_kwargs: dict | None = None, loss: str = "l2", target_ema: float = 0.0,
            progress: bool = False, callback: Callable | None = None) -> Distilled:
    """Distil `teacher_fn` into `student` (trained in place) for `calls` network calls; returns D.

    Args:
        teacher_fn: the teacher, `(x_t, mu, t) -> prediction` (t a float tensor [B] in grid units).
        student: a network `(x_t, mu, t) -> tensor shaped like x_t`; start it from a copy of the
            teacher when they share an architecture.
        sde: the teacher's MR SDE.
        mu_fn: `mu_fn(generator) -> [B, C, H, W]` degraded images (a fresh batch per iteration).
        calls: 1, 2 or 4 network calls of the restorer.
        iterations: optimizer steps (Adam, cosine decay from `lr` to `lr_final`; progressive
            distillation restarts the decay at each stage).
        prediction: what the teacher predicts: "noise", "data" or "velocity".
        generator: seeds everything drawn (mu_fn's batches, the priors, consistency's time draws).
        method: one of `METHODS` (default "regression", chosen by measurement: docs/DISTILL.md).
        times: calls + 1 decreasing times from T to 0 (default `student_times(sde, calls)`).
        student_prediction: what the student's raw output means: "data", "velocity" or "noise"
            (default `DEFAULT_STUDENT_PREDICTION[prediction]`: the teacher's own prediction).
        step: "ode" or "renoise" between the student's times (regression only; default "ode").
        teacher_nfe: steps of the teacher's ODE solve (merged with the student's times).
        teacher_kwargs: options of `mrlight.sampling.sample` for the teacher's solve.
        loss: "l2" or "l1" in x0 space.
        target_ema: EMA decay of the consistency target (0: stop-gradient of the student itself).
        progress: print a tqdm progress bar with the running loss.
        callback: called as `callback(iteration, loss, D)` after every optimizer step.

    Returns:
        the `Distilled` module D (holding `student`) with `D.calls`, `D.times`, `D.method`; restore
        with `sample_distilled(D, mu, sde, nfe=calls)` (sampler "distilled" of `sample`).
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be an integer >= 0, got {iterations!r}")
    if not callable(mu_fn):
        raise TypeError("mu_fn must be callable: mu_fn(generator) -> [B, C, H, W] degraded images")
    dist = Distiller(teacher_fn, student, sde, calls=calls, prediction=prediction, method=method, times=times,
                     student_prediction=student_prediction, step=step, iterations=iterations, teacher_nfe=teacher_nfe,
                     teacher_kwargs=teacher_kwargs, loss=loss, target_ema=target_ema)
    D = dist.D
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)

    def lr_factor(i: int) -> float:  # cosine from lr to lr_final over the run (progressive: over each stage)
        start, length = dist.window(min(i, max(iterations - 1, 0)))
        pos = min(max(i - start, 0) / length, 1.0) if length else 1.0
        return (lr_final + (lr - lr_final) * 0.5 * (1 + math.cos(math.pi * pos))) / lr

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    was_training = student.training
    student.train()
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=iterations, desc=f"distill {method} calls={calls}")
    t0 = time.perf_counter()
    for it in range(iterations):
        mu = mu_fn(generator)
        if not torch.is_tensor(mu) or not torch.is_floating_point(mu) or mu.dim() < 2:
            raise TypeError(f"mu_fn must return a float tensor [B, C, H, W] of degraded images, got "
                            f"{tuple(mu.shape) if torch.is_tensor(mu) else type(mu).__name__}")
        loss_value = dist.loss(mu, generator=generator, step=it)
        if not torch.isfinite(loss_value):
            raise FloatingPointError(f"distillation loss became non-finite at iteration {it}")
        opt.zero_grad(set_to_none=True)
        loss_value.backward()
        opt.step()
        sched.step()
        dist.after_step(it)
        if bar is not None:
            bar.update(1)
            if it % 50 == 0:
                bar.set_postfix(loss=f"{loss_value.item():.3g}")
        if callback is not None:
            callback(it, loss_value.item(), D)
    if bar is not None:
        bar.close()
    student.train(was_training)
    D.seconds = time.perf_counter() - t0
    return D
