"""Batched augmentations: shapes, parameter ranges, geometry, determinism, colour ops."""

from __future__ import annotations

import pytest
import torch

from raystudy.training.augment import (
    EvalTransform,
    FinetuneAugment,
    PretrainAugment,
    blur_kernel_size,
    gaussian_blur,
)

pytestmark = pytest.mark.usefixtures("one_thread")


B = 8


def images(c: int = 1, h: int = 40, w: int = 36, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (B, c, h, w), generator=g, dtype=torch.uint8)


def identity_params(n: int = B, **over: torch.Tensor) -> dict[str, torch.Tensor]:
    p = {
        "area": torch.ones(n), "ratio": torch.ones(n), "center": torch.zeros(n, 2), "angle": torch.zeros(n),
        "flip_h": torch.zeros(n, dtype=torch.bool), "flip_v": torch.zeros(n, dtype=torch.bool),
        "brightness": torch.ones(n), "contrast": torch.ones(n), "saturation": torch.ones(n),
        "sigma": torch.zeros(n), "solarize": torch.zeros(n, dtype=torch.bool),
    }  # fmt: skip
    p.update(over)
    return p


def unnorm(y: torch.Tensor) -> torch.Tensor:
    return y * 0.5 + 0.5


@pytest.mark.parametrize("in_c,out_c", [(1, 1), (3, 1), (1, 3), (3, 3)])
@pytest.mark.parametrize("cls", [PretrainAugment, FinetuneAugment, EvalTransform])
def test_output_shape_dtype_range(cls, in_c: int, out_c: int) -> None:
    aug = cls(resize=36, crop_size=32, out_channels=out_c)
    y = aug(images(in_c), torch.Generator().manual_seed(0))
    assert y.shape == (B, out_c, 32, 32) and y.dtype == torch.float32
    assert y.min() >= -1 - 1e-6 and y.max() <= 1 + 1e-6  # (x - 0.5) / 0.5 of x in [0, 1]
    assert torch.isfinite(y).all()


def test_custom_normalization_and_bad_inputs() -> None:
    aug = EvalTransform(resize=32, crop_size=32, out_channels=3, mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.5))
    x = torch.full((2, 1, 32, 32), 255, dtype=torch.uint8)
    y = aug(x)
    assert torch.allclose(y[:, :, 0, 0], torch.tensor([1.8, 1.6, 1.4]).expand(2, 3))
    with pytest.raises(ValueError, match="uint8"):
        aug(x.float())
    with pytest.raises(ValueError, match="mean/std"):
        EvalTransform(out_channels=3, mean=(0.5, 0.5))


def test_sample_params_ranges() -> None:
    aug = PretrainAugment()
    p = aug.sample_params(4096, torch.Generator().manual_seed(0))
    assert all(v.shape[0] == 4096 for v in p.values())
    assert p["area"].min() >= 0.6 and p["area"].max() <= 1.0
    assert p["ratio"].min() >= 3 / 4 - 1e-6 and p["ratio"].max() <= 4 / 3 + 1e-6
    assert p["angle"].min() >= 0.0 and p["angle"].max() <= 180.0
    assert p["angle"].std() > 40  # spread over the range
    w, h = (p["area"] * p["ratio"]).sqrt(), (p["area"] / p["ratio"]).sqrt()
    assert (w <= 1 + 1e-6).all() and (h <= 1 + 1e-6).all()
    assert (p["center"][:, 0].abs() + w <= 1 + 1e-5).all() and (p["center"][:, 1].abs() + h <= 1 + 1e-5).all()
    assert not (p["flip_h"] & p["flip_v"]).any()  # horizontal OR vertical
    assert 0.2 < p["flip_h"].float().mean() < 0.3 and 0.2 < p["flip_v"].float().mean() < 0.3
    assert p["brightness"].min() >= 0.6 and p["brightness"].max() <= 1.4
    assert p["saturation"].min() >= 0.8 and p["saturation"].max() <= 1.2
    jittered = (p["brightness"] != 1).float().mean()
    assert 0.75 < jittered < 0.85  # jitter_p = 0.8
    blurred = p["sigma"] > 0
    assert 0.45 < blurred.float().mean() < 0.55
    assert p["sigma"][blurred].min() >= 0.1 and p["sigma"][blurred].max() <= 2.0
    assert 0.17 < p["solarize"].float().mean() < 0.23
    assert p["solarize"].dtype == torch.bool


def test_crop_fallback_when_nothing_fits() -> None:
    aug = FinetuneAugment(crop_scale=(1.0, 1.0), crop_ratio=(2.0, 2.0))  # w = sqrt(2) > 1 always
    p = aug.sample_params(16, torch.Generator().manual_seed(0))
    assert torch.equal(p["area"], torch.ones(16)) and torch.equal(p["ratio"], torch.ones(16))


def test_determinism_and_independent_views() -> None:
    x = images()
    aug = PretrainAugment(resize=36, crop_size=32)
    a = aug(x, torch.Generator().manual_seed(42))
    b = aug(x, torch.Generator().manual_seed(42))
    assert torch.equal(a, b)
    g = torch.Generator().manual_seed(42)
    v1, v2 = aug(x, g), aug(x, g)
    assert torch.equal(v1, a)
    assert not torch.allclose(v1, v2)
    assert (v1 - v2).flatten(1).abs().amax(dim=1).gt(1e-3).all()  # every sample differs
    p1 = aug.sample_params(B, torch.Generator().manual_seed(1))
    p2 = aug.sample_params(B, torch.Generator().manual_seed(2))
    assert not torch.equal(p1["angle"], p2["angle"])
    f = FinetuneAugment(resize=36, crop_size=32)
    assert torch.equal(f(x, torch.Generator().manual_seed(3)), f(x, torch.Generator().manual_seed(3)))


def test_identity_params_reproduce_input() -> None:
    x = images(h=32, w=32)
    aug = PretrainAugment(resize=32, crop_size=32)
    assert torch.allclose(unnorm(aug.apply(x, identity_params())), x.float() / 255, atol=1e-5)


def test_geometry_crop_flip_rotation() -> None:
    x = images(h=64, w=64)
    xf = x.float() / 255
    aug = PretrainAugment(resize=64, crop_size=32)
    quarter = identity_params(area=torch.full((B,), 0.25), center=torch.tensor([[-0.5, -0.5]]).expand(B, 2))
    assert torch.allclose(unnorm(aug.apply(x, quarter)), xf[..., :32, :32], atol=1e-5)  # top-left quadrant
    aug = PretrainAugment(resize=64, crop_size=64)
    flip_h = identity_params(flip_h=torch.ones(B, dtype=torch.bool))
    assert torch.allclose(unnorm(aug.apply(x, flip_h)), xf.flip(-1), atol=1e-5)
    flip_v = identity_params(flip_v=torch.ones(B, dtype=torch.bool))
    assert torch.allclose(unnorm(aug.apply(x, flip_v)), xf.flip(-2), atol=1e-5)
    rot = identity_params(angle=torch.full((B,), 90.0))
    assert torch.allclose(unnorm(aug.apply(x, rot)), torch.rot90(xf, 1, dims=(-2, -1)), atol=1e-5)  # CCW
    rot180 = identity_params(angle=torch.full((B,), 180.0))
    assert torch.allclose(unnorm(aug.apply(x, rot180)), xf.flip(-1).flip(-2), atol=1e-5)


def test_large_input_resized_first() -> None:
    x = torch.zeros(2, 1, 512, 512, dtype=torch.uint8)
    x[..., ::2, :] = 255  # a line pattern that aliases without the anti-aliased resize
    y = unnorm(FinetuneAugment(resize=64, crop_size=32)(x, torch.Generator().manual_seed(0)))
    assert torch.allclose(y, torch.full_like(y, 0.5), atol=0.05)


def test_solarize_inverts_above_threshold() -> None:
    x = images(h=32, w=32)
    aug = PretrainAugment(resize=32, crop_size=32)
    mask = torch.tensor([True, False] * (B // 2))
    y = unnorm(aug.apply(x, identity_params(solarize=mask)))
    xf = x.float() / 255
    expected = torch.where(xf >= 0.5, 1 - xf, xf)
    assert torch.allclose(y[mask], expected[mask], atol=1e-5)
    assert torch.allclose(y[~mask], xf[~mask], atol=1e-5)
    assert y[mask].max() <= 0.5 + 1e-5


def test_color_jitter_brightness_contrast() -> None:
    x = images(h=32, w=32)
    xf = x.float() / 255
    aug = PretrainAugment(resize=32, crop_size=32)
    y = unnorm(aug.apply(x, identity_params(brightness=torch.full((B,), 0.5))))
    assert torch.allclose(y, xf * 0.5, atol=1e-5)
    y = unnorm(aug.apply(x, identity_params(contrast=torch.zeros(B))))  # all pixels -> image mean
    assert torch.allclose(y, xf.mean(dim=(1, 2, 3), keepdim=True).expand_as(y), atol=1e-5)
    rgb = PretrainAugment(resize=32, crop_size=32, out_channels=3)
    y = unnorm(rgb.apply(images(3, 32, 32), identity_params(saturation=torch.zeros(B))))
    assert torch.allclose(y[:, 0], y[:, 1], atol=1e-5) and torch.allclose(y[:, 1], y[:, 2], atol=1e-5)


def test_gaussian_blur() -> None:
    assert blur_kernel_size(224) == 23 and blur_kernel_size(32) == 3 and blur_kernel_size(10) == 3
    x = torch.rand(4, 1, 32, 32)
    sigma = torch.tensor([0.0, 0.5, 1.0, 2.0])
    y = gaussian_blur(x, sigma, 9)
    assert torch.allclose(y[0], x[0], atol=1e-6)  # sigma 0: unchanged
    var = y.flatten(1).var(dim=1)
    assert var[1] > var[2] > var[3] and var[1] < x[1].var()
    const = torch.full((2, 3, 16, 16), 0.3)
    assert torch.allclose(gaussian_blur(const, torch.tensor([1.0, 2.0]), 5), const, atol=1e-6)


def test_eval_transform_is_center_crop() -> None:
    x = images(h=40, w=40)
    y = EvalTransform(resize=40, crop_size=32)(x)
    assert torch.allclose(unnorm(y), x.float()[..., 4:36, 4:36] / 255, atol=1e-6)
    assert torch.equal(EvalTransform(resize=36, crop_size=32)(x), EvalTransform(resize=36, crop_size=32)(x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_with_cpu_generator() -> None:
    x = images()
    aug = PretrainAugment(resize=36, crop_size=32)
    cpu = aug(x, torch.Generator().manual_seed(0))
    gpu = aug(x.cuda(), torch.Generator().manual_seed(0))
    assert gpu.is_cuda and torch.allclose(gpu.cpu(), cpu, atol=1e-4)
    assert aug(x.cuda()).is_cuda  # no generator: drawn on the GPU
