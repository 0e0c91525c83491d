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


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", list(PRESETS))
def test_low_precision_networks_run_on_float32_inputs(name, dtype):
    """net.to(bfloat16) / net.half(): float32 x_t, mu, t (and contexts) are cast to the weights' dtype, the
    sinusoid is computed from float32 frequencies and handed to the time MLP in that dtype."""
    if dtype == torch.float16:
        try:  # float16 convolutions on this CPU build
            torch.nn.functional.conv2d(torch.ones(1, 1, 3, 3, dtype=dtype), torch.ones(1, 1, 3, 3, dtype=dtype))
        except RuntimeError:
            pytest.skip("no float16 convolution on this CPU")
    torch.manual_seed(0)
    small = {**SMALL[name], **({"use_image_context": True} if name == "daclip-unet" else {})}
    net = build_network(name, **small).eval()
    x, mu, t = torch.rand(2, 3, 19, 23), torch.rand(2, 3, 19, 23), torch.tensor([1.5, 80.0])
    kwargs = {"image_context": torch.randn(2, 16), "text_context": torch.randn(2, 16)} if name == "daclip-unet" else {}
    with torch.no_grad():
        expected = net(x, mu, t, **kwargs)
        net = net.to(dtype)
        out = net(x, mu, t, **kwargs)
    assert out.shape == x.shape and out.dtype == dtype and torch.isfinite(out).all()
    assert float((out.float() - expected).norm() / expected.norm()) < 0.25  # the same network, rounded
    freqs = [m.freqs for m in net.modules() if hasattr(m, "freqs")]
    assert freqs and all(f.dtype == torch.float32 for f in freqs)  # not rounded to 8 / 11 bits


def test_time_features_keep_float32_frequencies_through_casts():
    from mrlight.models.layers import SinusoidalTimeEmbedding

    emb = SinusoidalTimeEmbedding(16)
    reference = emb.freqs.clone()
    t = torch.tensor([97.3])
    expected = emb(t)
    emb.half()
    assert emb(t).dtype == torch.float16 and torch.equal(emb.freqs, reference)
    assert torch.equal(emb(t), expected.half())
    emb.to("cpu")  # a device move keeps the half output
    assert emb(t).dtype == torch.float16
    emb.float()
    assert torch.equal(emb(t), expected)
