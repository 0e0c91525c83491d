"""Set-level realism measures: the sliced Wasserstein distance of Laplacian-pyramid patches and FID."""

import time
import warnings

import pytest
import skimage.data
import torch
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from mrlight import metrics as M

SWD = M.sliced_wasserstein_distance


def _photo(name: str) -> torch.Tensor:
    return torch.from_numpy(getattr(skimage.data, name)().copy()).permute(2, 0, 1).float() / 255


@pytest.fixture(scope="module")
def photos():
    """Eight 128 px crops of scikit-image's bundled photographs (no download), float32 [3, 128, 128]."""
    out = []
    for name in ("astronaut", "coffee", "chelsea"):
        im = _photo(name)
        out += [im[:, :128, :128], im[:, -128:, -128:], im[:, 60:188, 100:228]]
    return [x.contiguous() for x in out[:8]]


def _blur(images, sigma):
    k = 2 * int(4 * sigma) + 1
    return [gaussian_blur(x[None], [k, k], [sigma, sigma])[0] for x in images]


def _noisy(images, sigma, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1) for x in images]


def test_swd_identical_sets_is_zero_and_float64(photos):
    value = SWD(photos, photos)
    assert isinstance(value, float) and abs(value) < 1e-9
    blurred = _blur(photos, 1.0)
    # float32 inputs are promoted exactly: float64 copies of the same values give the same number
    assert SWD(blurred, photos) == pytest.approx(SWD([x.double() for x in blurred], [x.double() for x in photos]),
                                                 abs=1e-9)


def test_swd_grows_with_blur(photos):
    s1, s2 = SWD(_blur(photos, 1.0), photos), SWD(_blur(photos, 2.0), photos)
    print(f"swd blur sigma 1: {s1:.3f}, sigma 2: {s2:.3f}")
    assert 0 < s1 < s2


def test_swd_grows_with_noise(photos):
    s05, s10 = SWD(_noisy(photos, 0.05), photos), SWD(_noisy(photos, 0.1), photos)
    print(f"swd noise 0.05: {s05:.3f}, 0.1: {s10:.3f}")
    assert 0 < s05 < s10


def test_swd_independent_of_image_order(photos):
    restored = _noisy(_blur(photos, 0.7), 0.03)
    perm = [5, 2, 7, 0, 3, 6, 1, 4]
    assert SWD(restored, photos) == pytest.approx(SWD([restored[i] for i in perm], [photos[i] for i in perm]),
                                                  abs=1e-9)


def test_swd_mixed_sizes_batches_and_errors():
    photo = _photo("coffee")
    reference = [photo[:, :200, :300], photo[:, 100:164, 50:90], photo[:, 200:400, 300:600]]
    restored = _noisy(_blur(reference, 1.0), 0.02)
    value = SWD(restored, reference)
    assert value > 0 and SWD(reference, reference) == pytest.approx(0, abs=1e-9)
    # patch positions depend only on the size: a [B, 3, H, W] entry is its B images as entries
    a, b = photo[:, :96, :128], photo[:, 150:246, 200:328]
    pa, pb = _blur([a, b], 1.5)
    assert SWD([torch.stack([pa, pb])], [torch.stack([a, b])]) == pytest.approx(SWD([pa, pb], [a, b]), abs=1e-9)
    # a 20 px image has level 0 (20 px) and level 1 (10 px) only; a 6 px one has none
    assert SWD([photo[:, :20, :20] * 0.9], [photo[:, :20, :20]]) > 0
    with pytest.raises(ValueError, match="7x7"):
        SWD([photo[:, :6, :9]], [photo[:, :6, :9]])
    with pytest.raises(ValueError, match="differ in shape"):
        SWD([photo[:, :32, :32]], [photo[:, :32, :40]])


def _reference_bands(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """The pyramid of the docstring computed in full: blur, G_{l+1} = blur(G_l)[::2, ::2],
    band_l = G_l - 4 blur(zero-insert(G_{l+1})), the last level G_{levels-1}."""
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=torch.float64)
    k2 = (k[:, None] * k[None, :] / 256).expand(3, 1, 5, 5)

    def blur(z):
        return torch.nn.functional.conv2d(torch.nn.functional.pad(z, (2, 2, 2, 2), mode="reflect"), k2, groups=3)

    gauss = [x.double()]
    for _ in range(levels - 1):
        gauss.append(blur(gauss[-1])[..., ::2, ::2])
    bands = []
    for lo, hi in zip(gauss[:-1], gauss[1:]):
        up = torch.zeros_like(lo)
        up[..., ::2, ::2] = hi
        bands.append(lo - 4 * blur(up))
    return bands + [gauss[-1]]


@pytest.mark.parametrize("size", [(64, 64), (75, 58)])
def test_swd_descriptors_match_the_full_pyramid(size):
    x = _photo("astronaut")[None, :, 100:100 + size[0], 200:200 + size[1]]
    bands = _reference_bands(x, 4)
    descriptors = M._swd_descriptors(x, 4, 7, 16, 3)
    ar = torch.arange(7)
    for level, (band, desc) in enumerate(zip(bands, descriptors)):
        if min(band.shape[-2:]) < 7:
            assert desc is None
            continue
        ys, xs = M._patch_positions(3, *size, level, tuple(band.shape[-2:]), 7, 16)
        rows, cols = ys[:, None] + ar, xs[:, None] + ar
        expected = band[0][:, rows[:, :, None], cols[:, None, :]].transpose(0, 1)
        assert desc.dtype == torch.float64 and torch.allclose(desc, expected, atol=1e-12, rtol=0)


def test_swd_is_fast_enough():
    x = [torch.rand(3, 256, 256, generator=torch.Generator().manual_seed(i)) for i in range(8)]
    start = time.perf_counter()
    SWD(x, _blur(x, 1.0))
    assert time.perf_counter() - start < 5.0


def test_restoration_metrics_swd_matches_function(photos):
    photo = _photo("chelsea")
    gts = photos[:4] + [photo[:, :100, :150], photo[:, 100:300, 200:260]]
    preds = _noisy(_blur(gts, 1.0), 0.02)
    m = M.RestorationMetrics(lpips="off")
    for p, g in zip(preds, gts):  # one image at a time, different sizes, as sample.py does
        m.update(p[None], g[None])
    values = m.compute()
    assert {"psnr", "psnr_y", "ssim", "ssim_y", "swd"} <= set(values)
    assert values["swd"] == pytest.approx(SWD(preds, gts), abs=1e-9)
    m.reset()
    m.update(torch.stack(preds[:4]), torch.stack(gts[:4]))
    assert m.compute()["swd"] == pytest.approx(SWD(preds[:4], gts[:4]), abs=1e-9)
    off = M.RestorationMetrics(lpips="off", swd=False)
    off.update(preds[0][None], gts[0][None])
    assert "swd" not in off.compute()


def _stand_in_features() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()


def test_fid_with_stand_in_feature_network(photos):
    x = torch.stack(photos)
    same = M.fid_metric(_stand_in_features())
    same.update(x, real=True)
    same.update(x, real=False)
    shifted = M.fid_metric(_stand_in_features())
    shifted.update(x, real=True)
    shifted.update((x + 0.2).clamp(0, 1), real=False)
    fid_same, fid_shifted = same.compute().item(), shifted.compute().item()
    assert abs(fid_same) < 1e-7 and fid_shifted > 1e-4

    net = _stand_in_features()
    m = M.RestorationMetrics(lpips="off", fid=net)
    for p in photos:
        m.update(((p + 0.2).clamp(0, 1))[None], p[None])
    assert m.compute()["fid"] == pytest.approx(fid_shifted, rel=1e-3)
    assert not any(mod is net for mod in m.modules()) and not m.state_dict()  # outside the module tree
    m.reset()
    m.update(photos[0][None], photos[0][None])
    assert "fid" not in m.compute()  # one image: FID needs two, the key is left out


def test_fid_default_unavailable_warns_once(monkeypatch, tmp_path, photos):
    from torchmetrics.utilities import imports

    monkeypatch.setattr(M, "_FID_WARNED", set())
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if not imports._TORCH_FIDELITY_AVAILABLE:
            assert M.fid_metric() is None and M.fid_metric() is None
        m = M.RestorationMetrics(lpips="off", fid=True)
        other = M.RestorationMetrics(lpips="off", fid=True)
        for metrics in (m, other):
            metrics.update(photos[0][None], photos[0][None])
            metrics.update(photos[1][None], photos[1][None])
        values = m.compute()
    assert time.perf_counter() - start < 10
    if M.inception_weights_path().is_file() and imports._TORCH_FIDELITY_AVAILABLE:
        pytest.skip("the Inception weights are installed here: FID is available")
    messages = [str(w.message) for w in caught if "FID is skipped" in str(w.message)]
    assert len(messages) == 1, messages
    assert "fid" not in values and "swd" in values

    # torch-fidelity present but its weights missing: reported, nothing constructed or downloaded
    import torchmetrics.image.fid as tm_fid

    def no_construction(*a, **k):
        raise AssertionError("FrechetInceptionDistance must not be built without the weights file")

    monkeypatch.setattr(M, "_FID_WARNED", set())
    monkeypatch.setattr(imports, "_TORCH_FIDELITY_AVAILABLE", True)
    monkeypatch.setattr(tm_fid, "FrechetInceptionDistance", no_construction)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert M.fid_metric() is None and M.fid_metric() is None
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "no download is attempted" in messages[0] and str(tmp_path) in messages[0]
