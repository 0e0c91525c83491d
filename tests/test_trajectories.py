"""Sampling trajectories (mrlight.trajectories): states per sampler, the joint PCA, the PNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrlight.analytic import GaussianMixture, Oracle
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


def test_same_seed_same_figure_data_and_png(problem, tmp_path):
    sde, mu, _, oracle = problem
    gt = mu + 0.05
    fig = trajectory_figure(oracle, mu, sde, gt=gt, samplers=SAMPLERS[:2], generator=torch.Generator().manual_seed(0))
    path = tmp_path / "trajectories.png"
    fig.savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = figure_to_array(fig)
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8

    # Stochastic samplers are reproducible: the generator's state after x_T seeds each one.
    def paths():
        g = torch.Generator().manual_seed(0)
        x_T = sde.prior_sample(mu, g)
        trs = collect_trajectories(oracle, mu, sde, x_T=x_T, samplers=SAMPLERS[1:2], generator_state=g.get_state())
        return trs[0].states

    torch.testing.assert_close(paths(), paths())


def test_large_images_are_pooled_before_the_pca(problem):
    sde, _, _, oracle = problem
    mu = torch.full((2, 3, 40, 24), 0.5)  # batch of 2: only the first image is traced
    g = torch.Generator().manual_seed(0)
    trs = collect_trajectories(oracle, mu[:1], sde, x_T=sde.prior_sample(mu[:1], g), samplers=SAMPLERS[:1], max_side=10)
    assert trs[0].states.shape == (6, 3 * 10 * 6)
    fig = plot_projection(project_trajectories(trs), title="pooled")
    assert fig.axes[0].get_title().startswith("pooled")
