"""Restoration metrics: per-image PSNR and SSIM (RGB and Y channel), LPIPS, seconds per image.

torchmetrics does the bookkeeping, so values are reduced correctly across DDP ranks:
PSNR with `dim=(1, 2, 3)` is computed per image and then averaged (not the PSNR of the pooled
MSE), SSIM is averaged per image, both with an explicit `data_range` of 1 for images in [0, 1].

The Y channel is ITU-R BT.601 "studio swing" luma, as MATLAB's rgb2ycbcr and IR-SDE's evaluation
compute it: Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255 for R, G, B in [0, 1].

LPIPS (Zhang et al., CVPR 2018) comes from the `lpips` package. Its AlexNet backbone is a
torchvision download; where it cannot be fetched, LPIPS is skipped with one warning.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

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


class RestorationMetrics(nn.Module):
    """Accumulates metrics of restored images against ground truth; `compute()` returns a flat dict.

    Keys: psnr, psnr_y, ssim, ssim_y, lpips (when available), sec_per_image (when timed),
    psnr_lq (PSNR of the degraded input, when given).
    """

    def __init__(self, lpips: str = "pretrained"):
        super().__init__()

        def psnr():
            return PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3), reduction="elementwise_mean")

        def ssim():
            return StructuralSimilarityIndexMeasure(data_range=1.0, reduction="elementwise_mean")

        self.psnr, self.psnr_y, self.psnr_lq = psnr(), psnr(), psnr()
        self.ssim, self.ssim_y = ssim(), ssim()
        self.lpips = MeanMetric()
        self.sec_per_image = MeanMetric()
        self.lpips_mode = lpips
        self._lpips_net = None  # resolved lazily (first update), held outside the module tree

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
        return {k: m.compute().item() for k, m in out.items()}

    def reset(self) -> None:
        for m in self.children():
            m.reset()
