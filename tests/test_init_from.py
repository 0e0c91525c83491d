"""train.py init_from=: fine-tuning starts from a converted (or any mrlight) checkpoint's network weights."""

from __future__ import annotations

import pytest
import torch

from mrlight.checkpoint import CheckpointError, load_checkpoint, network_from_checkpoint
from mrlight.convert import main as convert_main
from mrlight.training import run
from reference_nets import official_irsde as official

NET = ["network.name=irsde-unet", "network.overrides={nf: 8, depth: 3}"]


@pytest.fixture
def converted(tmp_path):
    torch.manual_seed(0)
    net = official.ConditionalUNet(3, 3, 8, depth=3)
    torch.save(net.state_dict(), tmp_path / "100_G.pth")
    out = tmp_path / "converted.ckpt"
    assert convert_main([str(tmp_path / "100_G.pth"), str(out), "network=irsde-unet", "network.nf=8",
                         "network.depth=3", "sde.max_sigma=10"]) == 0
    return net.state_dict(), out


def test_training_starts_from_the_given_weights(load_tiny, env, converted):
    state, ckpt = converted
    # lr 0: the weights after one step are the starting weights, so the test sees exactly where training began
    cfg = load_tiny(*NET, f"init_from={ckpt}", "optim.lr=0", "trainer.max_steps=1", "ema.enabled=false",
                    "objective.prediction=matching")
    result = run(cfg)
    trained = network_from_checkpoint(load_checkpoint(result.last_checkpoint)).state_dict()
    assert all(torch.equal(trained[k], state[k]) for k in state)


def test_training_moves_away_from_the_given_weights(load_tiny, env, converted):
    state, ckpt = converted
    result = run(load_tiny(*NET, f"init_from={ckpt}", "trainer.max_steps=1", "ema.enabled=false",
                           "objective.prediction=noise"))
    trained = network_from_checkpoint(load_checkpoint(result.last_checkpoint)).state_dict()
    assert not all(torch.equal(trained[k], state[k]) for k in state)
    # ...but from them, not from a fresh initialisation: the change is one optimizer step
    rel = max(float((trained[k] - state[k]).norm() / (state[k].norm() + 1e-12)) for k in state if state[k].numel() > 100)
    assert rel < 0.1


def test_init_from_another_architecture_is_refused(load_tiny, env, converted):
    _, ckpt = converted
    with pytest.raises(CheckpointError, match="init_from=.*holds network 'irsde-unet'"):
        run(load_tiny(f"init_from={ckpt}", "trainer.max_steps=1"))


def test_init_from_a_noise_network_under_the_data_objective_is_refused(load_tiny, env, converted):
    _, ckpt = converted
    with pytest.raises(CheckpointError, match="predicts 'noise'.*objective.prediction=data"):
        run(load_tiny(*NET, f"init_from={ckpt}", "trainer.max_steps=1", "objective.prediction=data"))


def test_init_from_missing_file_is_refused(load_tiny, env, tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        run(load_tiny(*NET, f"init_from={tmp_path / 'nope.ckpt'}", "trainer.max_steps=1"))
