"""Ported published networks (irsde-unet, refusion-nafnet): keys, shapes, parameter counts, strict
loading of files saved as the official code saves them, and output parity with an independent
restatement of the official forward (tests/reference_nets, not mrlight code)."""

from __future__ import annotations

import pytest
import torch

from mrlight.models import build_network
from reference_nets import official_irsde as official

# (preset, overrides, official constructor): the released settings and a larger NAF block layout.
CASES = {
    "unet-nf64-d4": ("irsde-unet", {}, lambda: official.ConditionalUNet(3, 3, 64, depth=4)),
    "unet-nf32-d5": ("irsde-unet", dict(nf=32, depth=5), lambda: official.ConditionalUNet(3, 3, 32, depth=5)),
    "naf-default": ("refusion-nafnet", {}, lambda: official.ConditionalNAFNet(
        3, 64, 1, [1, 1, 1, 28], [1, 1, 1, 1])),
    "naf-large": ("refusion-nafnet", dict(enc_blk_nums=[2, 2, 4, 8], middle_blk_num=12, dec_blk_nums=[2, 2, 2, 2]),
                  lambda: official.ConditionalNAFNet(3, 64, 12, [2, 2, 4, 8], [2, 2, 2, 2])),
}


def randomized(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Perturb every parameter: zero-initialised gates (NAF beta/gamma) would otherwise hide whole blocks."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return net.eval()


def save_like_official(net: torch.nn.Module, path) -> None:
    """IR-SDE's `save_network`: the plain state dict with every tensor on the CPU, nothing else."""
    torch.save({k: v.cpu() for k, v in net.state_dict().items()}, path)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.slow
@pytest.mark.parametrize("case", ["unet-nf64-d4", "naf-default"])
def test_parameter_counts_of_released_settings(case):
    preset, overrides, make_official = CASES[case]
    expected = {"unet-nf64-d4": 137_147_523, "naf-default": 76_608_387}[case]  # issue 8 / the released nets
    assert sum(p.numel() for p in build_network(preset, **overrides).parameters()) == expected
    assert sum(p.numel() for p in make_official().parameters()) == expected


@pytest.mark.slow  # full-size networks: ~10 s each on a shared 2-core CPU
@pytest.mark.parametrize("case", list(CASES))
def test_keys_shapes_strict_load_and_output_parity(case, tmp_path):
    preset, overrides, make_official = CASES[case]
    torch.manual_seed(0)
    reference = randomized(make_official())
    path = tmp_path / "official_G.pth"
    save_like_official(reference, path)

    net = build_network(preset, **overrides)
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert ours == theirs
    net.load_state_dict(torch.load(path, weights_only=True), strict=True)
    net.eval()
    for key, value in reference.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key

    gen = torch.Generator().manual_seed(1)
    for h, w in [(19, 23), (37, 29)]:  # odd sizes: both paddings and the crop are exercised
        x_t, mu = torch.rand(2, 3, h, w, generator=gen), torch.rand(2, 3, h, w, generator=gen)
        t = torch.tensor([3.37, 71.5])  # fractional t, as the MR Sampler evaluates
        with torch.no_grad():
            expected, got = reference(x_t, mu, t), net(x_t, mu, t)
        assert got.shape == x_t.shape
        assert relative_error(got, expected) < 1e-4, (case, h, w)


def test_integer_time_as_the_official_test_loops_pass_it():
    torch.manual_seed(0)
    reference = randomized(official.ConditionalUNet(3, 3, 8, depth=3))
    net = build_network("irsde-unet", nf=8, depth=3)
    net.load_state_dict(reference.state_dict(), strict=True)
    x_t, mu = torch.rand(1, 3, 21, 17), torch.rand(1, 3, 21, 17)
    with torch.no_grad():
        assert relative_error(net(x_t, mu, 42), reference(x_t, mu, 42)) < 1e-4
        assert relative_error(net(x_t, mu, torch.tensor(42.0)), reference(x_t, mu, 42)) < 1e-4


def test_padding_is_reflect_for_the_unet_and_zero_for_the_nafnet():
    """Padding reaches interior outputs (attention normalisation, channel pooling): a swapped mode would show."""
    torch.manual_seed(0)
    pairs = [(randomized(official.ConditionalUNet(3, 3, 8, depth=2)), build_network("irsde-unet", nf=8, depth=2)),
             (randomized(official.ConditionalNAFNet(3, 8, 1, [1, 1], [1, 1])),
              build_network("refusion-nafnet", width=8, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1]))]
    for reference, net in pairs:
        net.load_state_dict(reference.state_dict(), strict=True)
        x_t, mu = torch.rand(1, 3, 13, 11), torch.rand(1, 3, 13, 11)
        with torch.no_grad():
            exact = relative_error(net(x_t, mu, torch.tensor([5.5])), reference(x_t, mu, torch.tensor([5.5])))
            # the same input pre-padded with the other mode differs from the reference
            other = "constant" if isinstance(reference, official.ConditionalUNet) else "reflect"
            x_p = torch.nn.functional.pad(x_t, (0, 1, 0, 3), mode=other)
            mu_p = torch.nn.functional.pad(mu, (0, 1, 0, 3), mode=other)
            wrong = relative_error(net(x_p, mu_p, torch.tensor([5.5]))[..., :13, :11],
                                   reference(x_t, mu, torch.tensor([5.5])))
        assert exact < 1e-5 < wrong


def test_bad_time_shape_is_a_clear_error():
    net = build_network("irsde-unet", nf=8, depth=2)
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(TypeError, match="1-D tensor"):
        net(x, x, torch.ones(1, 1))
