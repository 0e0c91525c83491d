"""Sampling trajectories in two principal components (figure 3 of the MR Sampler paper, Li et al. 2025).

    fig = trajectory_figure(model_fn, mu, sde, gt=gt, prediction="noise",
                            generator=torch.Generator().manual_seed(0))
    fig.savefig("trajectories.png")

Every sampler starts from the same x_T (drawn once from `generator`, or given) and its states are
collected through the sampler callback ({'i', 't', 'x', 'x0_hat'}): x_T plus one state per step, so
a sampler with n steps contributes n + 1 points. The PCA is fitted jointly on all states of all
samplers, so the trajectories share one plane; mu and the ground truth are projected onto it.
Only the first image of a batch is traced. Large images are average-pooled to at most
`max_side` pixels per side before the PCA, so a test-time call on a full-size image stays small.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from mrlight.sampling import sample
from mrlight.sde import MRSDE

# (label, keyword arguments of `mrlight.sampling.sample`): the paper's comparison.
DEFAULT_SAMPLERS: tuple[tuple[str, dict], ...] = (
    ("MR ODE-2 @10", dict(sampler="mr", solver="ode", order=2, nfe=10)),
    ("MR SDE-2 @10", dict(sampler="mr", solver="sde", order=2, nfe=10)),
    ("posterior @100", dict(sampler="posterior", nfe=100)),
    ("euler @100", dict(sampler="euler", nfe=100)),
)


@dataclass
class Trajectory:
    """One sampler's path: times (T first) and the states x_T, x_1, ..., x_end, flattened."""
    name: str
    times: list[float]
    states: torch.Tensor  # [n_steps + 1, D], float32 on the CPU


@dataclass
class Projection:
    """Trajectories and reference points in the plane of the first two principal components."""
    paths: dict[str, np.ndarray]   # name -> [n_steps + 1, 2]
    times: dict[str, list[float]]
    points: dict[str, np.ndarray] = field(default_factory=dict)  # "x_T", "mu", "GT" -> [2]
    explained: tuple[float, float] = (0.0, 0.0)  # fraction of the states' variance per component


def _flat(x: torch.Tensor, max_side: int | None) -> torch.Tensor:
    x = x[:1].float()
    if max_side and max(x.shape[-2:]) > max_side:
        h, w = x.shape[-2:]
        scale = max_side / max(h, w)
        x = F.adaptive_avg_pool2d(x, (max(1, round(h * scale)), max(1, round(w * scale))))
    return x.flatten().cpu()


@torch.no_grad()
def collect_trajectories(model_fn: Callable, mu: torch.Tensor, sde: MRSDE, *, x_T: torch.Tensor,
                         samplers: Sequence[tuple[str, dict]] = DEFAULT_SAMPLERS, prediction: str = "noise",
                         generator_state: torch.Tensor | None = None, max_side: int | None = 128) -> list[Trajectory]:
    """Run every sampler from `x_T` and record its states; SDE noise restarts from `generator_state` for each."""
    out = []
    for name, opts in samplers:
        states, times = [_flat(x_T, max_side)], [float(sde.T)]

        def record(info, states=states, times=times):
            states.append(_flat(info["x"], max_side))
            times.append(float(info["t"]))

        generator = torch.Generator(device=mu.device)
        if generator_state is not None:
            generator.set_state(generator_state)
        sample(model_fn, mu, sde, prediction=prediction, x_T=x_T, generator=generator, callback=record, **opts)
        out.append(Trajectory(name, times, torch.stack(states)))
    return out


def project_trajectories(trajectories: Sequence[Trajectory], points: dict[str, torch.Tensor] | None = None) -> Projection:
    """Fit a 2-component PCA on all states jointly (each trajectory weighted equally); project the paths and `points`."""
    data = torch.cat([tr.states for tr in trajectories]).double()
    # Each sampler weighs the same in the fit, so 100-step paths do not outvote 10-step ones.
    weights = torch.cat([torch.full((len(tr.states),), 1.0 / len(tr.states), dtype=torch.float64)
                         for tr in trajectories])
    weights = weights / weights.sum()
    mean = (weights[:, None] * data).sum(0)
    _, s, vh = torch.linalg.svd((data - mean) * weights.sqrt()[:, None], full_matrices=False)
    basis = vh[:2]
    # Fix the signs (an SVD's are arbitrary): the trajectories run toward positive PC1/PC2 on average.
    first = torch.stack([tr.states[0] for tr in trajectories]).double().mean(0)
    last = torch.stack([tr.states[-1] for tr in trajectories]).double().mean(0)
    signs = torch.sign((last - first) @ basis.T)
    basis = basis * torch.where(signs == 0, torch.ones_like(signs), signs)[:, None]
    var = s ** 2
    explained = tuple((var[:2] / var.sum()).tolist()) if var.sum() > 0 else (0.0, 0.0)

    def proj(x: torch.Tensor) -> np.ndarray:
        return ((x.double() - mean) @ basis.T).numpy()

    paths = {tr.name: proj(tr.states) for tr in trajectories}
    pts = {"x_T": proj(trajectories[0].states[0])}
    for key, value in (points or {}).items():
        pts[key] = proj(value)
    return Projection(paths, {tr.name: tr.times for tr in trajectories}, pts, explained)


def plot_projection(projection: Projection, title: str | None = None) -> Figure:
    """A matplotlib Figure (no pyplot state): one line per sampler, x_T, mu, GT and each endpoint marked."""
    fig = Figure(figsize=(6.4, 5.2), dpi=100)
    ax = fig.subplots()
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive"]
    for k, (name, path) in enumerate(projection.paths.items()):
        c = colors[k % len(colors)]
        n = len(path) - 1
        ax.plot(path[:, 0], path[:, 1], "-", color=c, lw=1.2, alpha=0.85,
                marker="o" if n <= 25 else None, ms=3, label=f"{name} ({n} steps)")
        ax.plot(path[-1, 0], path[-1, 1], marker="D", color=c, ms=7, mec="black", mew=0.8, ls="none")
    styles = {"x_T": ("*", "gold", 16), "mu": ("X", "black", 11), "GT": ("s", "limegreen", 10)}
    for key, value in projection.points.items():
        marker, color, size = styles.get(key, ("P", "gray", 10))
        label = {"x_T": "x_T (shared start)", "mu": "mu (LQ input)", "GT": "GT"}.get(key, key)
        ax.plot(value[0], value[1], marker=marker, color=color, ms=size, mec="black", mew=0.8, ls="none", label=label)
    e1, e2 = projection.explained
    ax.set_xlabel(f"PC1 ({100 * e1:.1f}% of the states' variance, each sampler weighted equally)")
    ax.set_ylabel(f"PC2 ({100 * e2:.1f}%)")
    import textwrap

    ax.set_title("\n".join(textwrap.wrap(title or "Sampling trajectories", 80)) + " (diamond: endpoint)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def trajectory_figure(model_fn: Callable, mu: torch.Tensor, sde: MRSDE, gt: torch.Tensor | None = None, *,
                      samplers: Sequence[tuple[str, dict]] = DEFAULT_SAMPLERS, prediction: str = "noise",
                      generator: torch.Generator | None = None, x_T: torch.Tensor | None = None,
                      max_side: int | None = 128, title: str | None = None) -> Figure:
    """Figure 3 of the MR Sampler paper for the first image of `mu`: every sampler from one x_T, in 2 PCs.

    `model_fn(x_t, mu, t)` and `prediction` are as for `mrlight.sampling.sample`; `x_T` defaults to a
    prior draw from `generator`, whose state after that draw seeds every sampler's SDE noise alike.
    """
    mu = mu[None] if mu.dim() == 3 else mu
    mu = mu[:1].float()
    if x_T is None:
        x_T = sde.prior_sample(mu, generator)
    x_T = (x_T[None] if x_T.dim() == 3 else x_T)[:1].to(mu.device, torch.float32)
    state = generator.get_state() if generator is not None else None
    trajectories = collect_trajectories(model_fn, mu, sde, x_T=x_T, samplers=samplers, prediction=prediction,
                                        generator_state=state, max_side=max_side)
    points = {"mu": _flat(mu, max_side)}
    if gt is not None:
        points["GT"] = _flat((gt[None] if gt.dim() == 3 else gt).float(), max_side)
    return plot_projection(project_trajectories(trajectories, points), title)


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render a Figure to an RGB uint8 array [H, W, 3] (for loggers that take images)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


__all__ = ["DEFAULT_SAMPLERS", "Trajectory", "Projection", "collect_trajectories", "project_trajectories",
           "plot_projection", "trajectory_figure", "figure_to_array"]
