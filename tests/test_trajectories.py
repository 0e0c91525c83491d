"""Sampling trajectories (mrlight.trajectories): states per sampler, the joint PCA, the PNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrlight.analytic import GaussianMixture, Oracle
from mrlight.sampling import sample
from mrlight.sde import MRSDE
from mrlight.trajectories import (collect_trajectories, figure_to_array, plot_projection, project_trajectories,
                                  trajectory_figure)

SAMPLERS = (
    ("MR ODE-2 @5", dict(sampler="mr", solver="ode", order=2, nfe=5)),
    ("MR SDE-2 @4", dict(sampler="mr", solver="sde", order=2, nfe=4)),
    ("posterior @8", dict(sampler="posterior", nfe=8)),
    ("euler @6", dict(sampler="euler", nfe=6)),
)


@pytest.fixture(scope="module")
def problem():
    sde = MRSDE(T=20)
    mu = torch.full((1, 3, 6, 6), 0.5) + 0.1 * torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    x_T = sde.prior_sample(mu, torch.Generator().manual_seed(2))
    return sde, mu, x_T, Oracle(GaussianMixture(), sde, "noise")


def test_each_trajectory_has_nfe_plus_one_states_from_x_T(problem):
    sde, mu, x_T, oracle = problem
    trajectories = collect_trajectories(oracle, mu, sde, x_T=x_T, samplers=SAMPLERS,
                                        generator_state=torch.Generator().manual_seed(3).get_state())
    assert [tr.name for tr in trajectories] == [name for name, _ in SAMPLERS]
    for tr, (_, opts) in zip(trajectories, SAMPLERS):
        assert tr.states.shape == (opts["nfe"] + 1, mu.numel())
        assert len(tr.times) == opts["nfe"] + 1 and tr.times[0] == sde.T and tr.times[-1] == 0
        torch.testing.assert_close(tr.states[0], x_T.flatten())

    proj = project_trajectories(trajectories, {"mu": mu.flatten()})
    start = proj.points["x_T"]
    assert start.shape == (2,) and proj.points["mu"].shape == (2,)
    for tr in trajectories:
        path = proj.paths[tr.name]
        assert path.shape == (len(tr.states), 2)
        np.testing.assert_allclose(path[0], start, atol=1e-8)  # every path starts at x_T's projection
        assert np.isfinite(path).all()
    assert 0 < proj.explained[1] <= proj.explained[0] <= 1


def _pca_plane(trajectories, points):
    """Independent restatement of the figure's PCA: fit on all states (each sampler weighted equally) -> the
    paths and points in the first two components, each component's sign left open."""
    data = np.concatenate([tr.states.double().numpy() for tr in trajectories])
    w = np.concatenate([np.full(len(tr.states), 1.0 / len(tr.states)) for tr in trajectories])
    w = w / w.sum()
    mean = w @ data
    basis = np.linalg.svd((data - mean) * np.sqrt(w)[:, None], full_matrices=False)[2][:2]
    return ({tr.name: (tr.states.double().numpy() - mean) @ basis.T for tr in trajectories},
            {k: (v.double().numpy() - mean) @ basis.T for k, v in points.items()})


def _drawn(fig):
    """label -> plotted [n, 2] coordinates of every line of the figure's single axes."""
    (ax,) = fig.axes
    return {line.get_label(): np.asarray(line.get_xydata()) for line in ax.get_lines()}


def test_figure_draws_the_pca_of_the_recorded_states_and_its_png(problem, tmp_path):
    """The figure holds one line per sampler with nfe + 1 points at the PCA projection of that sampler's
    recorded states, the endpoints, x_T, mu and GT at theirs; the same seed renders the same pixels and
    another seed or another GT different ones."""
    sde, mu, _, oracle = problem
    gt = mu + 0.05
    samplers = SAMPLERS[:2]
    fig = trajectory_figure(oracle, mu, sde, gt=gt, samplers=samplers, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "trajectories.png"
    fig.savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The states the figure claims to show: x_T and the noise restart from seed 0, as documented.
    g = torch.Generator().manual_seed(0)
    x_T = sde.prior_sample(mu, g)
    trs = collect_trajectories(oracle, mu, sde, x_T=x_T, samplers=samplers, generator_state=g.get_state())
    for tr, (_, opts) in zip(trs, samplers):  # the last recorded state is the sampler's own output
        noise = torch.Generator()
        noise.set_state(g.get_state())
        torch.testing.assert_close(tr.states[-1], sample(oracle, mu, sde, x_T=x_T, generator=noise, **opts).flatten())
    paths, points = _pca_plane(trs, {"x_T": x_T.flatten(), "mu": mu.flatten(), "GT": gt.flatten()})
    drawn = _drawn(fig)
    labels = [f"{name} ({opts['nfe']} steps)" for name, opts in samplers]
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == labels + [
        "x_T (shared start)", "mu (LQ input)", "GT"]
    # one path line per sampler, nfe + 1 points each, plus one endpoint marker per sampler and three points
    assert len(drawn) == 2 * len(samplers) + 3
    flips = None
    for label, tr in zip(labels, trs):
        got = drawn[label]
        assert got.shape == (len(tr.states), 2) == (len(tr.times), 2)
        want = paths[tr.name]
        if flips is None:  # an SVD fixes each component only up to its sign: take it from the first path
            flips = np.where(np.sum(got * want, 0) < 0, -1.0, 1.0)
        np.testing.assert_allclose(got, want * flips, atol=1e-6)
        endpoints = [xy for key, xy in drawn.items() if key.startswith("_") and np.allclose(xy, got[-1:], atol=1e-9)]
        assert len(endpoints) == 1
    for key, label in (("x_T", "x_T (shared start)"), ("mu", "mu (LQ input)"), ("GT", "GT")):
        np.testing.assert_allclose(drawn[label][0], points[key] * flips, atol=1e-6)
    # the x_T, mu and GT markers are three different places: the figure is not degenerate
    assert min(np.linalg.norm(drawn[a][0] - drawn[b][0]) for a, b in
               (("x_T (shared start)", "mu (LQ input)"), ("mu (LQ input)", "GT"), ("x_T (shared start)", "GT"))) > 1e-3

    image = figure_to_array(fig)
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8

    def render(seed=0, gt=gt):
        return figure_to_array(trajectory_figure(oracle, mu, sde, gt=gt, samplers=samplers,
                                                 generator=torch.Generator().manual_seed(seed)))

    np.testing.assert_array_equal(render(), image)  # same seed: same pixels (the SDE noise too)
    other = render(seed=1)
    assert other.shape == image.shape and not np.array_equal(other, image), "seed 1 drew the same figure"
    assert not np.array_equal(render(gt=mu - 0.05), image), "another GT drew the same figure"


def test_large_images_are_pooled_before_the_pca(problem):
    sde, _, _, oracle = problem
    mu = torch.full((2, 3, 40, 24), 0.5)  # batch of 2: only the first image is traced
    g = torch.Generator().manual_seed(0)
    trs = collect_trajectories(oracle, mu[:1], sde, x_T=sde.prior_sample(mu[:1], g), samplers=SAMPLERS[:1], max_side=10)
    assert trs[0].states.shape == (6, 3 * 10 * 6)
    fig = plot_projection(project_trajectories(trs), title="pooled")
    assert fig.axes[0].get_title().startswith("pooled")
