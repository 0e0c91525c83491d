"""Restoration metrics: per-image PSNR and SSIM (RGB and Y channel), LPIPS, seconds per image.

torchmetrics does the bookkeeping, so values are reduced correctly across DDP ranks:
PSNR with `dim=(1, 2, 3)` is computed per image and then averaged (not the PSNR of the pooled
MSE), SSIM is averaged per image, both with an explicit `data_range` of 1 for images in [0, 1].

The Y channel is ITU-R BT.601 "studio swing" luma, as MATLAB's rgb2ycbcr and IR-SDE's evaluation
compute it: Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255 for R, G, B in [0, 1].

LPIPS (Zhang et al., CVPR 2018) comes from the `lpips` package. Its AlexNet backbone is a
torchvision download; where it cannot be fetched, LPIPS is skipped with one warning.

Realism (set-level, distribution against distribution rather than image against image):
`sliced_wasserstein_distance` (SWD of multi-scale Laplacian-pyramid patches, Karras et al., ICLR
2018) needs no weights and is on by default in `RestorationMetrics`; FID (`fid_metric`, torchmetrics'
FrechetInceptionDistance) needs torch-fidelity and its Inception weights and is opt-in; where they
are missing it is skipped with one warning and never downloads.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, Metric
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure
from torchmetrics.utilities.data import dim_zero_cat

LPIPS_MODES = ("pretrained", "random", "off")
_LPIPS_NETS: dict[str, nn.Module | None] = {}


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """BT.601 studio-swing luma of RGB images in [0, 1] ([B, 3, H, W] -> [B, 1, H, W], range [16/255, 235/255])."""
    w = x.new_tensor([65.481, 128.553, 24.966]).reshape(1, 3, 1, 1)
    return (16.0 + (x * w).sum(dim=1, keepdim=True)) / 255.0


def load_lpips(mode: str = "pretrained") -> nn.Module | None:
    """The LPIPS(alex) network, or None (with one warning per process) where it cannot be loaded.

    mode "random" uses a randomly initialised backbone (`pnet_rand=True`): no download, numbers
    without perceptual meaning, for tests. Cached per process; never a submodule of the model,
    so it is neither averaged by EMA nor saved in checkpoints.
    """
    if mode not in LPIPS_MODES:
        raise ValueError(f"unknown LPIPS mode {mode!r}; valid: {', '.join(LPIPS_MODES)}")
    if mode == "off":
        return None
    if mode not in _LPIPS_NETS:
        try:
            import lpips

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torchvision's 'pretrained' deprecation notices
                net = lpips.LPIPS(net="alex", pnet_rand=(mode == "random"), verbose=False)
            net.eval().requires_grad_(False)
        except Exception as err:  # no network, no cache, broken install: skip the metric, keep training
            net = None
            warnings.warn(f"LPIPS is skipped: its AlexNet backbone could not be loaded ({type(err).__name__}: "
                          f"{err}). Put alexnet-owt-7be5be79.pth in the torch hub cache "
                          f"(~/.cache/torch/hub/checkpoints) to enable it.", RuntimeWarning, stacklevel=2)
        _LPIPS_NETS[mode] = net
    return _LPIPS_NETS[mode]


# -- sliced Wasserstein distance -------------------------------------------------------------------
_BINOMIAL_5 = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)


def _pyr_down(x: torch.Tensor) -> torch.Tensor:
    """blur(x)[..., ::2, ::2]: separable 5x5 binomial blur ([1, 4, 6, 4, 1] / 16 per axis, mirror
    ("reflect") borders), evaluated at the kept pixels only. [B, C, H, W] -> [B, C, ceil(H/2), ceil(W/2)]."""
    k0, k1, k2 = _BINOMIAL_5[:3]
    h, w = (x.shape[-2] + 1) // 2, (x.shape[-1] + 1) // 2
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    e, o = x[..., 0::2, :], x[..., 1::2, :]  # rows: even / odd phase of the padded image
    x = (e[..., :h, :] + e[..., 2:h + 2, :]) * k0 + (o[..., :h, :] + o[..., 1:h + 1, :]) * k1 + e[..., 1:h + 1, :] * k2
    e, o = x[..., 0::2].contiguous(), x[..., 1::2].contiguous()
    return (e[..., :w] + e[..., 2:w + 2]) * k0 + (o[..., :w] + o[..., 1:w + 1]) * k1 + e[..., 1:w + 1] * k2


def _reflect(i: torch.Tensor, n: int) -> torch.Tensor:
    """Mirror ("reflect", edge not repeated) indices for i in [-2, n + 1], n >= 3."""
    i = i.abs()
    return torch.where(i >= n, 2 * (n - 1) - i, i)


def _pyr_up_windows(g: torch.Tensor, size: tuple[int, int], ys: torch.Tensor, xs: torch.Tensor,
                    patch: int) -> torch.Tensor:
    """up(g) = 4 * blur(g zero-inserted to `size`) on the patch windows at (ys, xs) only:
    [B, C, P, patch, patch] (the same numbers as the full upsampled image, cut at those windows)."""
    off = torch.arange(-2, patch + 2)
    r, c = _reflect(ys[:, None] + off, size[0]), _reflect(xs[:, None] + off, size[1])  # [P, patch + 4]
    win = g[:, :, (r // 2)[:, :, None], (c // 2)[:, None, :]]
    win = win * ((r % 2 == 0)[:, :, None] & (c % 2 == 0)[:, None, :]).to(g.dtype)  # the inserted zeros
    win = sum(k * win[..., j:j + patch] for j, k in enumerate(_BINOMIAL_5))
    return 4.0 * sum(k * win[..., j:j + patch, :] for j, k in enumerate(_BINOMIAL_5))


def _level_sizes(h: int, w: int, levels: int) -> list[tuple[int, int]]:
    sizes = [(h, w)]
    for _ in range(levels - 1):
        h, w = (h + 1) // 2, (w + 1) // 2
        sizes.append((h, w))
    return sizes


def _patch_positions(seed: int, h: int, w: int, level: int, size: tuple[int, int], patch: int,
                     n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left corners of the patches at `level` of an H x W image: a function of (seed, H, W, level)."""
    rng = np.random.default_rng([seed, 1, h, w, level])
    ys = torch.from_numpy(rng.integers(0, size[0] - patch + 1, size=n))
    xs = torch.from_numpy(rng.integers(0, size[1] - patch + 1, size=n))
    return ys, xs


def _swd_descriptors(batch: torch.Tensor, levels: int, patch: int, patches_per_image: int,
                     seed: int) -> list[torch.Tensor | None]:
    """Per pyramid level, the [B * patches_per_image, C, patch, patch] float64 patches of `batch`
    ([B, C, H, W]), or None where the level is smaller than max(patch, 3) pixels.

    Level l < levels - 1 is the Laplacian band G_l - up(G_{l+1}); the last level is the Gaussian
    level G_{levels-1} itself (the low-pass residual, as in Karras et al.). Patch positions come
    from `_patch_positions`: the same for every image of a size. Only the Gaussian levels are
    computed in full; the upsampled ones only on the patch windows.
    """
    x = batch.detach().to("cpu", torch.float64)
    h, w = x.shape[-2:]
    sizes = _level_sizes(h, w, levels)
    min_size = max(patch, 3)  # the 5-tap mirror-padded blur needs 3 pixels
    usable = next((l for l, (lh, lw) in enumerate(sizes) if min(lh, lw) < min_size), levels)
    out: list[torch.Tensor | None] = [None] * levels
    if usable == 0:
        return out
    gauss = [x]
    for _ in range(min(usable, levels - 1)):  # G_0 .. G_usable (G_levels-1 at most)
        gauss.append(_pyr_down(gauss[-1]))
    ar = torch.arange(patch)
    for l in range(usable):
        ys, xs = _patch_positions(seed, h, w, l, sizes[l], patch, patches_per_image)
        rows, cols = ys[:, None] + ar, xs[:, None] + ar  # [P, patch] each
        p = gauss[l][:, :, rows[:, :, None], cols[:, None, :]]  # [B, C, P, patch, patch]
        if l < levels - 1:
            p = p - _pyr_up_windows(gauss[l + 1], sizes[l], ys, xs, patch)
        out[l] = p.transpose(1, 2).reshape(-1, x.shape[1], patch, patch)
    return out


def _swd_from_descriptors(restored: list[torch.Tensor | None], reference: list[torch.Tensor | None],
                          directions: int, seed: int) -> float:
    """x1e3 mean over levels of the sliced Wasserstein-1 distance (see `sliced_wasserstein_distance`)."""
    dists = []
    for l, (a, b) in enumerate(zip(restored, reference)):
        if a is None or b is None or b.shape[0] == 0:
            continue
        a, b = a.double(), b.double()
        mean = b.mean(dim=(0, 2, 3), keepdim=True)  # per channel, over patches and pixels
        std = b.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
        std = torch.where(std > 1e-12, std, torch.ones_like(std))  # a constant reference channel
        a = ((a - mean) / std).flatten(1)
        b = ((b - mean) / std).flatten(1)
        rng = np.random.default_rng([seed, 0, l])
        dirs = torch.from_numpy(rng.standard_normal((a.shape[1], directions)))
        dirs = dirs / dirs.norm(dim=0, keepdim=True)
        n = a.shape[0]
        chunk = max(1, min(directions, 2_000_000 // n))  # bounded memory for large sets
        total = a.new_zeros(())
        for start in range(0, directions, chunk):
            d = dirs[:, start:start + chunk].T.contiguous()  # [k, D]: projections sorted along rows
            pa = torch.sort(d @ a.T, dim=1).values
            pb = torch.sort(d @ b.T, dim=1).values
            total = total + (pa - pb).abs().sum()
        dists.append(total / (n * directions))
    if not dists:
        raise ValueError("sliced_wasserstein_distance: no pyramid level has patches")
    return float(torch.stack(dists).mean() * 1e3)


def _as_batches(images: Sequence[torch.Tensor] | torch.Tensor, what: str) -> list[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        images = [images]
    out = []
    for i, x in enumerate(images):
        if not isinstance(x, torch.Tensor) or x.ndim not in (3, 4) or not x.is_floating_point():
            raise ValueError(f"{what}[{i}]: expected a float tensor [C, H, W] or [B, C, H, W], got "
                             f"{type(x).__name__}{tuple(x.shape) if isinstance(x, torch.Tensor) else ''}")
        out.append(x[None] if x.ndim == 3 else x)
    return out


def sliced_wasserstein_distance(restored: Sequence[torch.Tensor] | torch.Tensor,
                                reference: Sequence[torch.Tensor] | torch.Tensor, *, levels: int = 4,
                                patch: int = 7, patches_per_image: int = 128, directions: int = 512,
                                seed: int = 0) -> float:
    """Set-level sliced Wasserstein distance (SWD, x1e3) between multi-scale patch statistics.

    Karras, Aila, Laine, Lehtinen: "Progressive Growing of GANs for Improved Quality, Stability,
    and Variation", ICLR 2018, section 5 ("multi-scale statistical similarity"). A distance between
    two SETS of images, not an average of per-image scores: it measures whether the restored images
    have the local structure (edges, texture, noise, colour) of the reference set at every scale.

    restored, reference: lists of float tensors in [0, 1], each [C, H, W] or [B, C, H, W] (C = 3 for
    RGB); sizes may differ between entries, restored[i] and reference[i] have the same shape. A
    single [B, C, H, W] tensor is one entry.

    Definition (all in float64, on the CPU):
      1. Pyramid: Gaussian levels G_0 = image, G_{l+1} = blur(G_l)[::2, ::2] with the separable 5x5
         binomial kernel [1, 4, 6, 4, 1] / 16 and mirror borders. Level l < levels - 1 is the
         Laplacian band G_l - up(G_{l+1}) (zero insertion, blur x4); the LAST level is the Gaussian
         level G_{levels-1} itself (the low-pass residual: colours and coarse layout, as Karras).
         levels=4 on 256 px images: bands at 256, 128, 64 px and the 32 px Gaussian.
      2. Descriptors: `patches_per_image` patch x patch neighbourhoods per image and level (7x7x3 =
         147 numbers) at uniformly random positions drawn from a generator seeded by (seed, H, W,
         level) only: independent of the image's place in the list (the result does not depend on
         the order), identical for restored[i] and reference[i].
      3. Normalisation: per level and channel, both sets by the REFERENCE set's mean and standard
         deviation (Karras normalises each set by its own statistics, which hides a global loss of
         contrast or blur; with a shared normalisation it stays visible). A constant reference
         channel (std 0) is left unscaled.
      4. Per level: the mean over `directions` random unit directions (a fixed generator seeded by
         (seed, level)) of the 1-D Wasserstein-1 distance between the two projected descriptor sets
         (both sorted, mean absolute difference; the sets have equal sizes).
      5. Result: the mean over levels, multiplied by 1e3 (Karras reports SWD x 1e3). 0 for identical
         sets; not symmetric (the reference's statistics normalise both).

    A level is used for an image only where it is at least max(patch, 3) pixels on both sides; a
    level no image reaches is left out of the mean. ValueError when no image reaches level 0.
    """
    for name, v, lo in (("levels", levels, 1), ("patch", patch, 1), ("patches_per_image", patches_per_image, 1),
                        ("directions", directions, 1), ("seed", seed, 0)):
        if int(v) != v or v < lo:
            raise ValueError(f"sliced_wasserstein_distance: {name} must be an integer >= {lo}, got {v!r}")
    a_list, b_list = _as_batches(restored, "restored"), _as_batches(reference, "reference")
    if len(a_list) != len(b_list) or not a_list:
        raise ValueError(f"sliced_wasserstein_distance: {len(a_list)} restored and {len(b_list)} reference "
                         "entries; expected the same, non-zero number")
    channels = {x.shape[1] for x in a_list + b_list}
    if len(channels) != 1:
        raise ValueError(f"sliced_wasserstein_distance: images have different channel counts {sorted(channels)}")
    a_desc: list[list[torch.Tensor]] = [[] for _ in range(levels)]
    b_desc: list[list[torch.Tensor]] = [[] for _ in range(levels)]
    for i, (a, b) in enumerate(zip(a_list, b_list)):
        if a.shape != b.shape:
            raise ValueError(f"sliced_wasserstein_distance: restored[{i}] {tuple(a.shape)} and reference[{i}] "
                             f"{tuple(b.shape)} differ in shape")
        for l, (da, db) in enumerate(zip(_swd_descriptors(a, levels, patch, patches_per_image, seed),
                                         _swd_descriptors(b, levels, patch, patches_per_image, seed))):
            if da is not None:
                a_desc[l].append(da)
                b_desc[l].append(db)
    if not a_desc[0]:
        m = max(patch, 3)
        raise ValueError(f"sliced_wasserstein_distance: every image is smaller than the minimum {m}x{m} pixels "
                         f"(patch={patch})")
    return _swd_from_descriptors([torch.cat(d) if d else None for d in a_desc],
                                 [torch.cat(d) if d else None for d in b_desc], directions, seed)


class SlicedWassersteinMetric(Metric):
    """`sliced_wasserstein_distance` accumulated over `update(pred, gt)` calls (DDP-reduced).

    Stores the patch descriptors (float64, on the CPU; 147 x patches_per_image numbers per image and
    level), not the images: a few hundred kB per image whatever its size. compute() equals
    `sliced_wasserstein_distance(all preds, all gts)` with the same options.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(self, levels: int = 4, patch: int = 7, patches_per_image: int = 128, directions: int = 512,
                 seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.levels, self.patch, self.patches_per_image = int(levels), int(patch), int(patches_per_image)
        self.directions, self.seed = int(directions), int(seed)
        for l in range(self.levels):
            self.add_state(f"restored_{l}", default=[], dist_reduce_fx="cat")
            self.add_state(f"reference_{l}", default=[], dist_reduce_fx="cat")

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        pred, gt = _as_batches(pred, "pred")[0], _as_batches(gt, "gt")[0]
        if pred.shape != gt.shape:
            raise ValueError(f"SlicedWassersteinMetric: pred {tuple(pred.shape)} and gt {tuple(gt.shape)} differ")
        args = (self.levels, self.patch, self.patches_per_image, self.seed)
        empty = torch.zeros(0, pred.shape[1], self.patch, self.patch, dtype=torch.float64)
        for l, (da, db) in enumerate(zip(_swd_descriptors(pred, *args), _swd_descriptors(gt, *args))):
            # One tensor per level and update, [0, C, p, p] where the image is too small: every rank
            # then gathers a 4-d tensor (the DDP gather pads sizes but needs equal dimensionality).
            getattr(self, f"restored_{l}").append(empty if da is None else da)
            getattr(self, f"reference_{l}").append(empty if db is None else db)

    def _sync_dist(self, dist_sync_fn=None, process_group=None) -> None:
        # The states live on the CPU (GPU memory is for the model); NCCL gathers CUDA tensors only.
        import torch.distributed as dist

        group = process_group or self.process_group
        device = torch.device("cpu")
        if dist.get_backend(group) == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        for attr in self._defaults:
            value = getattr(self, attr)
            if isinstance(value, list) and value:
                setattr(self, attr, [dim_zero_cat(value).to(device)])
        kwargs = {} if dist_sync_fn is None else {"dist_sync_fn": dist_sync_fn}
        super()._sync_dist(process_group=process_group, **kwargs)
        for attr in self._defaults:
            value = getattr(self, attr)
            setattr(self, attr, value.cpu() if isinstance(value, torch.Tensor) else [v.cpu() for v in value])

    def compute(self) -> torch.Tensor:
        """The SWD (x1e3) as a float64 scalar; ValueError when no image had a level-0 patch."""
        restored, reference = [], []
        for l in range(self.levels):
            a, b = getattr(self, f"restored_{l}"), getattr(self, f"reference_{l}")
            a = dim_zero_cat(a) if len(a) else None
            b = dim_zero_cat(b) if len(b) else None
            restored.append(a if a is not None and a.shape[0] else None)
            reference.append(b if b is not None and b.shape[0] else None)
        if reference[0] is None:
            m = max(self.patch, 3)
            raise ValueError(f"SWD: no image of at least {m}x{m} pixels was given")
        return torch.tensor(_swd_from_descriptors(restored, reference, self.directions, self.seed),
                            dtype=torch.float64)


# -- FID -------------------------------------------------------------------------------------------
INCEPTION_WEIGHTS_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                         "weights-inception-2015-12-05-6726825d.pth")
_FID_WARNED: set[str] = set()


def inception_weights_path() -> Path:
    """Where torch-fidelity's Inception-v3 weights are looked for: the torch hub cache, as
    torch.hub.load_state_dict_from_url would store them."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_URL.rsplit("/", 1)[-1]


def fid_metric(feature: nn.Module | None = None, *, weights_path: str | os.PathLike | None = None):
    """torchmetrics' FrechetInceptionDistance (normalize=True: float images in [0, 1]), or None with
    one warning per process (per weights file) where it cannot be built.

    feature None: the standard 2048-d Inception-v3 pool features. That needs the `torch-fidelity`
    package and its weights file (`weights_path`, default `inception_weights_path()`). A missing
    file is reported, never downloaded: torch-fidelity would otherwise fetch it from GitHub without
    a timeout, which can hang on machines without internet.

    feature an nn.Module: any feature network mapping float [N, 3, H, W] in [0, 1] to [N, d] (for
    tests, or a domain-specific extractor); the numbers are then not comparable to published FIDs.
    The metric needs at least two images per side to compute.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    if feature is not None:
        return FrechetInceptionDistance(feature=feature, normalize=True)
    from torchmetrics.utilities import imports

    weights = Path(weights_path) if weights_path is not None else inception_weights_path()
    reason = None
    if not imports._TORCH_FIDELITY_AVAILABLE:
        reason = "the torch-fidelity package (its Inception-v3) is not installed; pip install torch-fidelity"
    elif not weights.is_file():
        reason = (f"its Inception-v3 weights {weights} are missing (no download is attempted); "
                  f"fetch {INCEPTION_WEIGHTS_URL} to that path")
    else:
        try:
            return FrechetInceptionDistance(feature=2048, normalize=True, feature_extractor_weights_path=str(weights))
        except Exception as err:  # broken file, incompatible torch-fidelity / torchmetrics
            reason = f"the Inception network could not be loaded from {weights} ({type(err).__name__}: {err})"
    if str(weights) not in _FID_WARNED:
        _FID_WARNED.add(str(weights))
        warnings.warn(f"FID is skipped: {reason}.", RuntimeWarning, stacklevel=2)
    return None


class RestorationMetrics(nn.Module):
    """Accumulates metrics of restored images against ground truth; `compute()` returns a flat dict.

    Keys: psnr, psnr_y, ssim, ssim_y, lpips (when available), sec_per_image (when timed),
    psnr_lq (PSNR of the degraded input, when given), and the set-level realism measures over all
    images seen since the last reset: swd (`sliced_wasserstein_distance` x1e3 of restored against
    ground truth; `swd=False` turns it off) and fid (opt-in: `fid=True` for the Inception FID where
    torch-fidelity and its weights are present, else one warning and no key; or `fid=` a feature
    network, see `fid_metric`; needs at least two images).
    """

    def __init__(self, lpips: str = "pretrained", swd: bool = True, fid: bool | nn.Module = False):
        super().__init__()

        def psnr():
            return PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3), reduction="elementwise_mean")

        def ssim():
            return StructuralSimilarityIndexMeasure(data_range=1.0, reduction="elementwise_mean")

        self.psnr, self.psnr_y, self.psnr_lq = psnr(), psnr(), psnr()
        self.ssim, self.ssim_y = ssim(), ssim()
        self.lpips = MeanMetric()
        self.sec_per_image = MeanMetric()
        self.swd = SlicedWassersteinMetric() if swd else None
        self.lpips_mode = lpips
        self._lpips_net = None  # resolved lazily (first update), held outside the module tree
        # FID: resolved lazily (first update) and held outside the module tree, like the LPIPS net:
        # its Inception is neither moved with the model, averaged by EMA nor saved in checkpoints.
        self.__dict__["_fid_request"] = fid if isinstance(fid, nn.Module) else bool(fid)
        self.__dict__["_fid"] = None
        self._fid_resolved = False

    def _fid_metric(self):
        if not self._fid_resolved:
            self._fid_resolved = True
            if self._fid_request is not False:
                request = self._fid_request
                self.__dict__["_fid"] = fid_metric(request if isinstance(request, nn.Module) else None)
        return self.__dict__["_fid"]

    @torch.no_grad()
    def update(self, pred: torch.Tensor, gt: torch.Tensor, lq: torch.Tensor | None = None,
               seconds: float | None = None) -> None:
        pred, gt = pred.float().clamp(0, 1), gt.float().clamp(0, 1)
        self.psnr.update(pred, gt)
        self.ssim.update(pred, gt)
        py, gy = rgb_to_y(pred), rgb_to_y(gt)
        self.psnr_y.update(py, gy)
        self.ssim_y.update(py, gy)
        if lq is not None:
            self.psnr_lq.update(lq.float().clamp(0, 1), gt)
        net = load_lpips(self.lpips_mode)
        if net is not None:
            net = net.to(pred.device)
            self.lpips.update(net(pred * 2 - 1, gt * 2 - 1).flatten())
        if self.swd is not None:
            self.swd.update(pred, gt)
        fid = self._fid_metric()
        if fid is not None:
            fid = fid.to(pred.device)
            fid.update(gt, real=True)
            fid.update(pred, real=False)
        if seconds is not None:
            n = pred.shape[0]
            self.sec_per_image.update(torch.tensor(seconds / n), weight=n)

    def compute(self) -> dict[str, float]:
        out = {"psnr": self.psnr, "psnr_y": self.psnr_y, "ssim": self.ssim, "ssim_y": self.ssim_y}
        if self.psnr_lq.update_count:
            out["psnr_lq"] = self.psnr_lq
        if self.lpips.update_count:
            out["lpips"] = self.lpips
        if self.sec_per_image.update_count:
            out["sec_per_image"] = self.sec_per_image
        values = {k: m.compute().item() for k, m in out.items()}
        if self.swd is not None and self.swd.update_count:
            try:
                values["swd"] = self.swd.compute().item()
            except ValueError as err:  # every image below 7x7 pixels
                warnings.warn(f"SWD is skipped: {err}", RuntimeWarning, stacklevel=2)
        fid = self.__dict__["_fid"]
        if fid is not None and fid.update_count:
            try:
                values["fid"] = fid.compute().item()
            except RuntimeError as err:  # fewer than two images (after the DDP reduction)
                if "More than one sample" not in str(err):
                    raise
        return values

    def reset(self) -> None:
        for m in self.children():
            m.reset()
        if self.__dict__["_fid"] is not None:
            self.__dict__["_fid"].reset()
