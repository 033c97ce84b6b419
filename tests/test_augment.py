"""Batched device augmentation (vit_hf/data/augment.py), on CPU."""

import pytest
import torch
import torch.nn.functional as F

from vit_hf.config import DataConfig
from vit_hf.data.augment import (
    build_eval_transform,
    build_train_augment,
    color_jitter,
    hflip,
    normalize,
    pad_crop,
    random_resized_crop,
)

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

# Each random op with settings that make it do something, called as op(x, generator=...).
RANDOM_OPS = {
    "random_resized_crop": lambda x, generator: random_resized_crop(x, hflip_p=0.5, generator=generator),
    "pad_crop": lambda x, generator: pad_crop(x, 4, generator=generator),
    "hflip": lambda x, generator: hflip(x, 0.5, generator=generator),
    "color_jitter": lambda x, generator: color_jitter(x, 0.4, generator=generator),
}


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images_uint8(batch: int = 16, height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, generator=seeded(seed))


def images(batch: int = 16, height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    """A float batch on the ops' 0-255 scale."""
    return images_uint8(batch, height, width, seed).float()


def one_image_repeated(batch: int = 16) -> torch.Tensor:
    """The same image B times: whatever differs across the output came from per-sample parameters.

    A smooth image, so that crops and shifts of it cannot coincide by accident.
    """
    ramp = torch.linspace(0, 255, 32)
    rows, cols = torch.meshgrid(ramp, ramp, indexing="ij")
    image = torch.stack([cols, rows, (rows + cols) / 2])
    return image.expand(batch, -1, -1, -1).contiguous()


# --- properties every random op shares -------------------------------------------------------


@pytest.mark.parametrize("name", RANDOM_OPS)
def test_op_keeps_shape_dtype_and_range(name):
    out = RANDOM_OPS[name](images(), generator=seeded())
    assert out.shape == (16, 3, 32, 32)
    assert out.dtype == torch.float32
    # Bilinear weights sum to 1 only up to rounding, hence the hair of slack.
    assert out.min() >= -1e-3 and out.max() <= 255 + 1e-3


@pytest.mark.parametrize("name", RANDOM_OPS)
def test_op_leaves_its_input_unchanged(name):
    x = images()
    before = x.clone()
    RANDOM_OPS[name](x, generator=seeded())
    assert torch.equal(x, before)


@pytest.mark.parametrize("name", RANDOM_OPS)
def test_op_is_deterministic_given_the_seed(name):
    op, x = RANDOM_OPS[name], images()
    assert torch.equal(op(x, generator=seeded(1)), op(x, generator=seeded(1)))
    assert not torch.equal(op(x, generator=seeded(1)), op(x, generator=seeded(2)))


@pytest.mark.parametrize("name", RANDOM_OPS)
def test_op_draws_parameters_per_sample(name):
    out = RANDOM_OPS[name](one_image_repeated(), generator=seeded())
    distinct = {tuple(sample.flatten().tolist()) for sample in out}
    assert len(distinct) > 1


# --- hflip ----------------------------------------------------------------------------------


def test_hflip_always_mirrors_at_p1_and_never_at_p0():
    x = images()
    assert torch.equal(hflip(x, 1.0, generator=seeded()), x.flip(-1))
    assert torch.equal(hflip(x, 0.0, generator=seeded()), x)


def test_hflip_mirrors_some_samples_and_keeps_the_others():
    x = images(batch=64)
    out = hflip(x, 0.5, generator=seeded())
    mirrored = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x)]
    kept = [torch.equal(o, i) for o, i in zip(out, x)]
    assert all(m or k for m, k in zip(mirrored, kept))
    assert 10 < sum(mirrored) < 54


# --- pad_crop -------------------------------------------------------------------------------


def test_pad_crop_without_padding_is_identity():
    x = images()
    assert torch.equal(pad_crop(x, 0, generator=seeded()), x)


def test_pad_crop_output_is_a_window_of_the_reflect_padded_image():
    x, pad = images(), 4
    padded = F.pad(x, (pad,) * 4, mode="reflect")
    out = pad_crop(x, pad, generator=seeded())
    offsets = []
    for sample, source in zip(out, padded):
        windows = [
            (top, left)
            for top in range(2 * pad + 1)
            for left in range(2 * pad + 1)
            if torch.equal(sample, source[:, top : top + 32, left : left + 32])
        ]
        assert windows, "output is not a window of the padded image"
        offsets.append(windows[0])
    assert len(set(offsets)) > 1


# --- random_resized_crop --------------------------------------------------------------------


@pytest.mark.parametrize("height, width", [(32, 32), (24, 40)])
def test_random_resized_crop_of_the_whole_image_reproduces_it(height, width):
    x = images(height=height, width=width)
    aspect = width / height
    out = random_resized_crop(x, scale=(1, 1), ratio=(aspect, aspect), generator=seeded())
    assert (out - x).abs().max() < 1


def test_random_resized_crop_folds_in_the_flip():
    x = images()
    out = random_resized_crop(x, scale=(1, 1), ratio=(1, 1), hflip_p=1.0, generator=seeded())
    assert (out - x.flip(-1)).abs().max() < 1


def test_random_resized_crop_resizes_to_the_requested_size():
    out = random_resized_crop(images(), size=24, generator=seeded())
    assert out.shape == (16, 3, 24, 24)


def test_random_resized_crop_zooms_in():
    # A crop of at most a quarter of the area shows a blown-up part: neighbours differ less.
    x = images()
    out = random_resized_crop(x, scale=(0.1, 0.25), generator=seeded())
    roughness = lambda t: (t[..., 1:] - t[..., :-1]).abs().mean()
    assert roughness(out) < roughness(x) / 2


# --- color_jitter ---------------------------------------------------------------------------


def test_color_jitter_of_strength_zero_is_identity():
    x = images()
    assert torch.equal(color_jitter(x, 0.0, generator=seeded()), x)


def test_color_jitter_changes_brightness_per_sample_and_stays_in_range():
    x = one_image_repeated()
    out = color_jitter(x, 0.8, generator=seeded())
    assert out.min() >= 0 and out.max() <= 255
    brightness = out.mean(dim=(1, 2, 3))
    assert len(set(brightness.tolist())) == len(brightness)
    assert brightness.std() > 5


# --- normalize ------------------------------------------------------------------------------


def test_normalize_matches_the_formula_for_uint8_and_float():
    x = images_uint8()
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    expected = (x.float() / 255 - mean) / std
    assert normalize(x, MEAN, STD).dtype == torch.float32
    assert torch.equal(normalize(x, MEAN, STD), expected)
    assert torch.equal(normalize(x.float(), MEAN, STD), expected)


# --- the composed transforms ----------------------------------------------------------------


def augment(**data):
    """The train augment for DataConfig(**data) and its output on the standard batch."""
    transform = build_train_augment(DataConfig(**data), MEAN, STD)
    return transform, transform(images_uint8(), seeded())


def test_train_augment_with_everything_off_only_normalizes():
    transform, out = augment(crop="none", hflip=0.0, color_jitter=0.0)
    assert torch.equal(out, normalize(images_uint8(), MEAN, STD))
    assert repr(transform) == repr(build_eval_transform(MEAN, STD))


def test_train_augment_pads_and_crops():
    transform, out = augment(crop="pad", pad=4, hflip=0.0)
    assert "pad_crop(pad=4)" in repr(transform)
    assert torch.equal(out, normalize(pad_crop(images(), 4, generator=seeded()), MEAN, STD))


def test_train_augment_skips_pad_crop_without_padding():
    transform, out = augment(crop="pad", pad=0, hflip=0.0)
    assert "pad_crop" not in repr(transform)
    assert torch.equal(out, normalize(images_uint8(), MEAN, STD))


def test_train_augment_flips_as_a_separate_op_without_random_resized_crop():
    transform, out = augment(crop="none", hflip=1.0)
    assert "hflip(p=1.0)" in repr(transform)
    assert torch.equal(out, normalize(images_uint8().flip(-1), MEAN, STD))


def test_train_augment_folds_the_flip_into_random_resized_crop():
    transform, out = augment(crop="random_resized", crop_scale=[1.0, 1.0], crop_ratio=[1.0, 1.0], hflip=1.0)
    assert "random_resized_crop(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip_p=1.0)" in repr(transform)
    assert "hflip(" not in repr(transform)
    assert (out - normalize(images_uint8().flip(-1), MEAN, STD)).abs().max() < 1 / 255 / min(STD)


def test_train_augment_jitters_colour():
    transform, out = augment(crop="none", hflip=0.0, color_jitter=0.4)
    assert "color_jitter(strength=0.4)" in repr(transform)
    assert not torch.equal(out, normalize(images_uint8(), MEAN, STD))


def test_train_augment_lists_its_ops_in_order():
    transform, _ = augment(crop="pad", hflip=0.5, color_jitter=0.2)
    names = [line.strip().split("(")[0] for line in repr(transform).splitlines()[1:-1]]
    assert names == ["pad_crop", "hflip", "color_jitter", "normalize"]


@pytest.mark.parametrize("crop", ["random_resized", "pad", "none"])
def test_train_augment_on_a_full_batch(crop):
    # The shape of a CIFAR step; benchmarks/augment_throughput.py times it.
    transform = build_train_augment(DataConfig(crop=crop, color_jitter=0.4), MEAN, STD)
    x = images_uint8(batch=256)
    out = transform(x, seeded())
    assert out.shape == (256, 3, 32, 32) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_train_augment_rejects_what_it_cannot_use():
    with pytest.raises(ValueError, match="data.crop"):
        build_train_augment(DataConfig(crop="center"), MEAN, STD)
    with pytest.raises(ValueError, match="3 values"):
        build_train_augment(DataConfig(), (0.5,), STD)
    transform = build_train_augment(DataConfig(), MEAN, STD)
    with pytest.raises(TypeError, match="uint8"):
        transform(images(), seeded())
    with pytest.raises(ValueError, match="Generator"):
        transform(images_uint8())


def test_eval_transform_only_normalizes():
    transform = build_eval_transform(MEAN, STD)
    assert torch.equal(transform(images_uint8()), normalize(images_uint8(), MEAN, STD))
    assert repr(transform) == f"BatchTransform(\n  normalize(mean={MEAN!r}, std={STD!r}),\n)"
