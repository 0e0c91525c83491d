"""Conditional networks: shapes for any image size, time conditioning, presets, tiled calls."""

import pytest
import torch

from mrlight.inference import tiled
from mrlight.models import PRESETS, build_network, network_config

SMALL = {"unet-tiny": dict(nf=8), "unet-base": dict(nf=8, num_res_blocks=1),
         "nafnet-tiny": dict(width=8), "nafnet-base": dict(width=8, mid_blocks=1, enc_blocks=[1, 1, 1, 1]),
         "irsde-unet": dict(nf=8, depth=2),
         "refusion-nafnet": dict(width=8, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1]),
         # without contexts (tests/test_interop_daclip.py covers them)
         "daclip-unet": dict(nf=32, ch_mult=[1, 1], context_dim=16, use_image_context=False)}


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("size", [(19, 23), (32, 32)])
def test_output_matches_input_size(name, size):
    torch.manual_seed(0)
    net = build_network(name, **SMALL[name])
    x, mu = torch.rand(2, 3, *size), torch.rand(2, 3, *size)
    out = net(x, mu, torch.tensor([1.5, 80.0]))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_time_conditioning_changes_output():
    torch.manual_seed(0)
    net = build_network("unet-tiny", nf=8)
    for p in net.parameters():  # zero-initialised gates would hide the time path
        torch.nn.init.normal_(p, std=0.1)
    x = torch.rand(1, 3, 16, 16)
    assert not torch.allclose(net(x, x, torch.tensor([1.0])), net(x, x, torch.tensor([50.0])))


def test_time_must_be_a_tensor():
    net = build_network("unet-tiny", nf=8)
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(TypeError, match="1-D tensor"):
        net(x, x, 5.0)


def test_base_preset_is_irsde_sized():
    cfg = network_config("unet-base")
    assert cfg["nf"] == 64 and len(cfg["ch_mult"]) == 4


def test_renamed_look_alikes_say_so():
    with pytest.raises(ValueError, match="renamed 'unet-base'.*'irsde-unet'"):
        build_network("unet-irsde")
    with pytest.raises(ValueError, match="renamed 'nafnet-base'"):
        network_config("nafnet")


def test_unknown_preset_and_field_suggest():
    with pytest.raises(ValueError, match="did you mean 'unet-tiny'"):
        build_network("unet-tine")
    with pytest.raises(ValueError, match="did you mean 'nf'"):
        build_network("unet-tiny", nff=8)


def test_tiled_call_equals_whole_call_for_local_model():
    def pointwise(x, mu, t):  # a model without spatial context: tiling must be exact
        return x * 2 - mu + t[:, None, None, None] / 100

    x, mu, t = torch.rand(1, 3, 40, 50), torch.rand(1, 3, 40, 50), torch.tensor([7.0])
    whole = pointwise(x, mu, t)
    assert torch.allclose(tiled(pointwise, 16, 4)(x, mu, t), whole, atol=1e-6)
    assert torch.allclose(tiled(pointwise, 64, 8)(x, mu, t), whole)  # one tile: a plain call
    with pytest.raises(ValueError, match="tile"):
        tiled(pointwise, 16, 8)
