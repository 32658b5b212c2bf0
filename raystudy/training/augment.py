"""Batched image augmentations on whole tensors on the training device (paper Sect. 3.1).

Input: uint8 (B, C, H, W), C = 1 (grey) or 3. Output: float (B, out_channels, crop, crop),
normalised with (mean, std). Every random parameter is drawn per sample, as a tensor,
in one go; there is no PIL and no Python loop over images. Pass a ``torch.Generator``
for reproducible draws (it may live on the CPU while the images are on the GPU).

Geometry (resize -> crop -> resize to crop_size -> flip -> rotation) is one affine map
per sample, applied with a single ``F.affine_grid`` + ``F.grid_sample``. Colour jitter,
blur and solarisation are applied after the warp, on the crop_size output:
jitter and solarisation are pointwise, so they commute with any warp; the Gaussian blur
is isotropic, so it commutes with flips and rotations, and its sigma is in crop_size
pixels exactly as when blurring after the crop (paper order). The one approximation:
contrast jitter blends with the mean of the rotated crop (border-padded corners included)
rather than of the unrotated crop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

Stat = float | Sequence[float]
_GREY = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale


# -- random draws --------------------------------------------------------------------------
def _uniform(
    shape: tuple[int, ...], low: float, high: float, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """U(low, high) drawn on the generator's device (for determinism), moved to `device`."""
    gen_device = generator.device if generator is not None else device
    u = torch.rand(shape, generator=generator, device=gen_device).to(device)
    return low + (high - low) * u


def _device(device: torch.device | str | None, generator: torch.Generator | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return generator.device if generator is not None else torch.device("cpu")


def _bernoulli(p: float, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return _uniform((n,), 0.0, 1.0, generator, device) < p  # (n,) bool


def _sample_crop(
    n: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None,
    device: torch.device,
    tries: int = 10,
) -> dict[str, torch.Tensor]:
    """RandomResizedCrop on the unit square, vectorised: 10 tries, first valid one wins.

    area: fraction of the (resized, square) image; ratio: width / height; center in
    normalised [-1, 1] coordinates. Fallback when no try fits: the whole image.
    """
    area = _uniform((n, tries), scale[0], scale[1], generator, device)  # (B, T)
    log_r = _uniform((n, tries), math.log(ratio[0]), math.log(ratio[1]), generator, device)
    r = log_r.exp()
    w, h = (area * r).sqrt(), (area / r).sqrt()  # fractions of the image side
    ok = (w <= 1) & (h <= 1)  # (B, T)
    first = ok.float().argmax(dim=1, keepdim=True)  # (B, 1) first valid try
    any_ok = ok.any(dim=1)
    area = torch.where(any_ok, area.gather(1, first).squeeze(1), torch.ones_like(any_ok, dtype=area.dtype))
    r = torch.where(any_ok, r.gather(1, first).squeeze(1), torch.ones_like(area))
    w, h = (area * r).sqrt(), (area / r).sqrt()  # (B,)
    # the crop [c - w, c + w] (normalised half-extent = fraction) must stay inside [-1, 1]
    u = _uniform((n, 2), -1.0, 1.0, generator, device)
    center = u * (1 - torch.stack([w, h], dim=1)).clamp_min(0)  # (B, 2)
    return {"area": area, "ratio": r, "center": center}


def _sample_flips(n: int, p: float, generator: torch.Generator | None, device: torch.device) -> dict[str, torch.Tensor]:
    """With probability p flip, horizontally or vertically (50/50), never both."""
    flip = _bernoulli(p, n, generator, device)
    horizontal = _bernoulli(0.5, n, generator, device)
    return {"flip_h": flip & horizontal, "flip_v": flip & ~horizontal}


def _jitter_factors(
    n: int, strength: float, apply: torch.Tensor, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    f = _uniform((n,), max(0.0, 1 - strength), 1 + strength, generator, device)
    return torch.where(apply, f, torch.ones_like(f))  # (B,), 1 = unchanged


# -- tensor ops ----------------------------------------------------------------------------
def affine_theta(
    area: torch.Tensor,
    ratio: torch.Tensor,
    center: torch.Tensor,
    angle: torch.Tensor | None = None,
    flip_h: torch.Tensor | None = None,
    flip_v: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample theta (B, 2, 3) mapping output coords to input coords, all normalised.

    input = center + diag(w, h) @ diag(±1, ±1) @ M(angle) @ output: un-rotate the output
    (a square, so normalised coords are isotropic), un-flip, place in the crop box.
    A positive angle turns the image counter-clockwise on screen, as torchvision's rotate
    (with y pointing down, M(a) = [[cos a, -sin a], [sin a, cos a]]).
    """
    w, h = (area * ratio).sqrt(), (area / ratio).sqrt()  # (B,)
    a = torch.deg2rad(angle) if angle is not None else torch.zeros_like(w)
    cos, sin = a.cos(), a.sin()
    fx = 1 - 2 * flip_h.to(w.dtype) if flip_h is not None else torch.ones_like(w)
    fy = 1 - 2 * flip_v.to(w.dtype) if flip_v is not None else torch.ones_like(w)
    row0 = torch.stack([w * fx * cos, -w * fx * sin, center[:, 0]], dim=1)  # (B, 3)
    row1 = torch.stack([h * fy * sin, h * fy * cos, center[:, 1]], dim=1)  # (B, 3)
    return torch.stack([row0, row1], dim=1)  # (B, 2, 3)


def warp(x: torch.Tensor, theta: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) float -> (B, C, size, size), bilinear, border padding."""
    grid = F.affine_grid(theta.to(x.dtype), [x.shape[0], x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def to_grey(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma; (B, 1, H, W) unchanged."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor(_GREY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def color_jitter(
    x: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor, saturation: torch.Tensor
) -> torch.Tensor:
    """Per-sample factors (B,), fixed order brightness -> contrast -> saturation (torchvision
    shuffles the order per call); saturation is a no-op on grey. x in [0, 1]."""
    x = (x * brightness.view(-1, 1, 1, 1)).clamp(0, 1)
    mean = to_grey(x).mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    c = contrast.view(-1, 1, 1, 1)
    x = (c * x + (1 - c) * mean).clamp(0, 1)
    if x.shape[1] == 3:
        s = saturation.view(-1, 1, 1, 1)
        x = (s * x + (1 - s) * to_grey(x)).clamp(0, 1)
    return x


def blur_kernel_size(crop_size: int) -> int:
    """About 10 % of the crop, odd (23 for 224), at least 3."""
    k = max(3, int(round(0.1 * crop_size)))
    return k if k % 2 == 1 else k + 1


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable blur with a per-sample sigma (B,); sigma 0 leaves the sample unchanged.

    One depthwise conv per axis over all images at once (groups = B * C), reflect padding.
    """
    b, c, hgt, wid = x.shape
    r = kernel_size // 2
    t = torch.arange(kernel_size, dtype=x.dtype, device=x.device) - r  # (K,)
    s = sigma.to(x.dtype).clamp_min(1e-6).view(-1, 1)  # (B, 1); tiny sigma -> delta kernel
    k = torch.exp(-(t**2) / (2 * s**2))
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (B*C, K)
    y = F.pad(x.reshape(1, b * c, hgt, wid), (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k.view(b * c, 1, kernel_size, 1), groups=b * c)  # vertical
    y = F.conv2d(y, k.view(b * c, 1, 1, kernel_size), groups=b * c)  # horizontal
    return y.view(b, c, hgt, wid)


def solarize(x: torch.Tensor, mask: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Where mask (B,) is set, invert pixels >= threshold (x in [0, 1])."""
    return torch.where(mask.view(-1, 1, 1, 1) & (x >= threshold), 1 - x, x)


# -- transforms ----------------------------------------------------------------------------
class _BatchTransform:
    """uint8 -> float [0, 1], channel handling, optional anti-aliased resize, normalisation."""

    def __init__(
        self, resize: int, crop_size: int, out_channels: int, mean: Stat, std: Stat, antialias: bool = True
    ) -> None:
        if out_channels not in (1, 3):
            raise ValueError(f"out_channels must be 1 or 3, got {out_channels}")
        self.resize = resize
        self.crop_size = crop_size
        self.out_channels = out_channels
        self.mean = _stat(mean, out_channels)
        self.std = _stat(std, out_channels)
        self.antialias = antialias

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected uint8 (B, 1|3, H, W) images, got {images.dtype} {tuple(images.shape)}")
        x = images.float().div_(255)
        if self.out_channels == 1:
            # exact: brightness/contrast commute with luma, saturation vanishes under it
            x = to_grey(x)
        if self.antialias and max(x.shape[-2:]) > self.resize:
            # the paper's resize to resize x resize; only done to avoid aliasing when shrinking
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", antialias=True, align_corners=False)
        return x

    def sample_params(
        self, batch_size: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> dict[str, torch.Tensor]:
        """Random parameters for ``batch_size`` images (each augmentation defines its own)."""
        raise NotImplementedError

    def apply(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """The transform of ``images`` under ``params`` (each augmentation defines its own)."""
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float (B, out_channels, crop, crop), fresh parameters per call."""
        return self.apply(images, self.sample_params(images.shape[0], generator, images.device))

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.out_channels:
            x = x.expand(-1, self.out_channels, -1, -1)  # grey -> 3 identical channels
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std


def _stat(v: Stat, channels: int) -> tuple[float, ...]:
    vals = (float(v),) * channels if isinstance(v, (int, float)) else tuple(float(a) for a in v)
    if len(vals) != channels:
        raise ValueError(f"expected {channels} mean/std values, got {len(vals)}")
    return vals


class FinetuneAugment(_BatchTransform):
    """Downstream augmentation (Sect. 3.1): resize 256, random crop of 60-100 % of the area
    resized to 224, random horizontal OR vertical flip; one ``grid_sample``.

    Args:
        resize: side the image is (notionally) resized to before cropping.
        crop_size: side of the output crop.
        crop_scale, crop_ratio: RandomResizedCrop's area fraction and aspect ratio ranges.
        flip_p: probability of a flip (horizontal or vertical, 50/50).
        out_channels: 1 (grey) or 3 (grey repeated).
        mean, std: normalisation of the [0, 1] pixels.
        antialias: shrink inputs larger than ``resize`` with an anti-aliased resize first.

    Shapes: uint8 (B, 1|3, H, W) on any device -> float (B, out_channels, crop_size, crop_size).

    Example:
        >>> aug = FinetuneAugment(resize=40, crop_size=32)
        >>> x = aug(torch.randint(0, 255, (8, 1, 40, 40), dtype=torch.uint8), torch.Generator().manual_seed(0))
    """

    def __init__(
        self,
        resize: int = 256,
        crop_size: int = 224,
        crop_scale: tuple[float, float] = (0.6, 1.0),
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip_p: float = 0.5,
        out_channels: int = 1,
        mean: Stat = 0.5,
        std: Stat = 0.5,
        antialias: bool = True,
    ) -> None:
        super().__init__(resize, crop_size, out_channels, mean, std, antialias)
        self.crop_scale, self.crop_ratio, self.flip_p = crop_scale, crop_ratio, flip_p

    def sample_params(
        self, batch_size: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> dict[str, torch.Tensor]:
        """area, ratio, center (B, 2), flip_h, flip_v."""
        dev = _device(device, generator)
        p = _sample_crop(batch_size, self.crop_scale, self.crop_ratio, generator, dev)
        p.update(_sample_flips(batch_size, self.flip_p, generator, dev))
        return p

    def apply(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self._prepare(images)
        p = {k: v.to(x.device) for k, v in params.items()}
        theta = affine_theta(p["area"], p["ratio"], p["center"], None, p["flip_h"], p["flip_v"])
        return self._finish(warp(x, theta, self.crop_size))


class PretrainAugment(FinetuneAugment):
    """Upstream augmentation (Sect. 3.1): resize 256, random crop of 60-100 % of the area
    resized to 224, colour jitter, Gaussian blur, solarisation, horizontal OR vertical flip,
    rotation in [0, 180] degrees. Each call draws fresh parameters: call twice for two views.

    Resize + crop + flip + rotation are one ``grid_sample`` with a per-sample affine theta:
    resizing the whole image to resize x resize does not move anything in normalised
    coordinates, so a crop of the resized image is the same affine map of the original
    (the explicit anti-aliased resize is only done when the input is larger than
    ``resize``, to avoid aliasing). Border padding fills the corners a rotation exposes;
    where a rotated crop reaches past the crop box, real image content is sampled.

    Args (besides :class:`FinetuneAugment`'s):
        jitter_p: probability of colour jitter; brightness, contrast, saturation: its strengths.
        blur_p, blur_sigma: probability and sigma range of the Gaussian blur.
        solarize_p, solarize_threshold: probability and threshold of solarisation.
        rotation_degrees: range of the uniform rotation angle.

    Shapes: uint8 (B, 1|3, H, W) -> float (B, out_channels, crop_size, crop_size).

    Example:
        >>> aug = PretrainAugment(resize=40, crop_size=32)
        >>> g = torch.Generator().manual_seed(0)
        >>> view1, view2 = aug(images, g), aug(images, g)  # two views of the same batch
    """

    def __init__(
        self,
        resize: int = 256,
        crop_size: int = 224,
        crop_scale: tuple[float, float] = (0.6, 1.0),
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        jitter_p: float = 0.8,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.2,
        blur_p: float = 0.5,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        solarize_p: float = 0.2,
        solarize_threshold: float = 0.5,
        flip_p: float = 0.5,
        rotation_degrees: tuple[float, float] = (0.0, 180.0),
        out_channels: int = 1,
        mean: Stat = 0.5,
        std: Stat = 0.5,
        antialias: bool = True,
    ) -> None:
        super().__init__(resize, crop_size, crop_scale, crop_ratio, flip_p, out_channels, mean, std, antialias)
        self.jitter_p, self.brightness, self.contrast, self.saturation = jitter_p, brightness, contrast, saturation
        self.blur_p, self.blur_sigma = blur_p, blur_sigma
        self.blur_kernel = blur_kernel_size(crop_size)
        self.solarize_p, self.solarize_threshold = solarize_p, solarize_threshold
        self.rotation_degrees = rotation_degrees

    def sample_params(
        self, batch_size: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> dict[str, torch.Tensor]:
        """Per-sample parameters, each (B,) except center (B, 2).

        area, ratio, center: crop; angle: degrees; flip_h / flip_v: bool;
        brightness / contrast / saturation: factors (1 = not jittered); sigma: blur
        (0 = not blurred); solarize: bool.
        """
        dev = _device(device, generator)
        n = batch_size
        p = super().sample_params(n, generator, dev)  # crop and flips, as for fine-tuning
        p["angle"] = _uniform((n,), *self.rotation_degrees, generator, dev)
        jitter = _bernoulli(self.jitter_p, n, generator, dev)
        p["brightness"] = _jitter_factors(n, self.brightness, jitter, generator, dev)
        p["contrast"] = _jitter_factors(n, self.contrast, jitter, generator, dev)
        p["saturation"] = _jitter_factors(n, self.saturation, jitter, generator, dev)
        blur = _bernoulli(self.blur_p, n, generator, dev)
        sigma = _uniform((n,), *self.blur_sigma, generator, dev)
        p["sigma"] = torch.where(blur, sigma, torch.zeros_like(sigma))
        p["solarize"] = _bernoulli(self.solarize_p, n, generator, dev)
        return p

    def apply(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """uint8 (B, C, H, W) + params -> float (B, out_channels, crop, crop)."""
        x = self._prepare(images)
        p = {k: v.to(x.device) for k, v in params.items()}
        theta = affine_theta(p["area"], p["ratio"], p["center"], p["angle"], p["flip_h"], p["flip_v"])
        x = warp(x, theta, self.crop_size)  # (B, C, crop, crop)
        x = color_jitter(x, p["brightness"], p["contrast"], p["saturation"])
        x = gaussian_blur(x, p["sigma"], self.blur_kernel)
        x = solarize(x, p["solarize"], self.solarize_threshold)
        return self._finish(x)


class EvalTransform(_BatchTransform):
    """Deterministic: resize to resize x resize (anti-aliased), centre crop crop_size.

    Shapes: uint8 (B, 1|3, H, W) -> float (B, out_channels, crop_size, crop_size).

    Example:
        >>> EvalTransform(resize=40, crop_size=32)(torch.zeros(2, 1, 40, 40, dtype=torch.uint8)).shape
        torch.Size([2, 1, 32, 32])
    """

    def __init__(
        self, resize: int = 256, crop_size: int = 224, out_channels: int = 1, mean: Stat = 0.5, std: Stat = 0.5
    ) -> None:
        if crop_size > resize:
            raise ValueError(f"crop_size {crop_size} > resize {resize}")
        super().__init__(resize, crop_size, out_channels, mean, std, antialias=True)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = self._prepare(images)  # shrinks inputs larger than resize
        if tuple(x.shape[-2:]) != (self.resize, self.resize):
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", antialias=True, align_corners=False)
        top = int(round((self.resize - self.crop_size) / 2))
        x = x[..., top : top + self.crop_size, top : top + self.crop_size]
        return self._finish(x)
