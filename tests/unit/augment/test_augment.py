"""Batched device augmentation (vit_hf/data/augment.py), on CPU."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageOps

from vit_hf.augment.ops import (
    adjust_brightness,
    adjust_contrast,
    adjust_saturation,
    adjust_sharpness,
    affine,
    auto_contrast,
    color_jitter,
    equalize,
    hflip,
    normalize,
    pad_crop,
    posterize,
    random_erasing,
    random_resized_crop,
    solarize,
)
from vit_hf.augment.policies import AUGMENT_OPS, one_op_per_sample, rand_augment, trivial_augment
from vit_hf.augment.transform import build_eval_transform, build_train_augment
from vit_hf.errors import RecipeError
from vit_hf.recipe.schema import DataConfig

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

# Each random op with settings that make it do something, called as op(x, generator=...).
RANDOM_OPS = {
    "random_resized_crop": lambda x, generator: random_resized_crop(x, hflip_p=0.5, generator=generator),
    "pad_crop": lambda x, generator: pad_crop(x, 4, generator=generator),
    "hflip": lambda x, generator: hflip(x, 0.5, generator=generator),
    "color_jitter": lambda x, generator: color_jitter(x, 0.4, generator=generator),
    "rand_augment": lambda x, generator: rand_augment(x, 2, 9, generator=generator),
    "trivial_augment": lambda x, generator: trivial_augment(x, generator=generator),
    "random_erasing": lambda x, generator: random_erasing(x, 0.5, generator=generator),
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


# --- RandAugment / TrivialAugment single ops, against PIL where PIL has them ---------------------


def to_pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(image.permute(1, 2, 0).to(torch.uint8).numpy())


def from_pil(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float()


def like_pil(pil_op, x: torch.Tensor, settings) -> torch.Tensor:
    """pil_op(image, setting) on each sample of x, as a float batch."""
    return torch.stack([from_pil(pil_op(to_pil(sample), setting)) for sample, setting in zip(x, settings)])


def low_contrast_images(batch: int = 4) -> torch.Tensor:
    """Integer images squeezed into [40, 140): what auto-contrast and equalize are for."""
    return (images(batch) * 100 / 255 + 40).floor()


def test_solarize_matches_pil():
    x, thresholds = images(batch=4), [0, 1, 128, 255]
    assert torch.equal(solarize(x, torch.tensor(thresholds)), like_pil(ImageOps.solarize, x, thresholds))


def test_posterize_matches_pil():
    x, bits = images(batch=4), [1, 2, 4, 8]
    assert torch.equal(posterize(x, torch.tensor(bits)), like_pil(ImageOps.posterize, x, bits))


def test_auto_contrast_matches_pil_and_spans_the_range():
    x = low_contrast_images()
    out = auto_contrast(x)
    # PIL truncates its lookup table to integers; here the values stay exact.
    expected = like_pil(lambda image, _: ImageOps.autocontrast(image), x, range(4))
    torch.testing.assert_close(out, expected, atol=1, rtol=0)
    assert out.amin(dim=(-2, -1)).eq(0).all() and out.amax(dim=(-2, -1)).eq(255).all()


def test_auto_contrast_leaves_a_flat_channel_alone():
    x = torch.full((2, 3, 8, 8), 77.0)
    assert torch.equal(auto_contrast(x), x)


@pytest.mark.parametrize("make", [images, low_contrast_images])
def test_equalize_matches_pil(make):
    x = make(4)
    assert torch.equal(equalize(x), like_pil(lambda image, _: ImageOps.equalize(image), x, range(4)))


def test_equalize_flattens_the_histogram():
    out = equalize(low_contrast_images(1))
    counts = torch.bincount(out[0, 0].long().flatten(), minlength=256)
    spread = lambda t: t.max() - t.min()
    assert spread(out) > 250 and spread(low_contrast_images(1)) <= 100
    assert counts.float().cumsum(0)[127] / counts.sum() == pytest.approx(0.5, abs=0.1)


@pytest.mark.parametrize("factor", [0.0, 0.5, 1.0, 1.9])
def test_adjust_sharpness_matches_pil(factor):
    x = images(batch=2)
    out = adjust_sharpness(x, torch.full((2,), factor))
    expected = like_pil(lambda image, f: ImageEnhance.Sharpness(image).enhance(f), x, [factor] * 2)
    # PIL rounds its smoothed image (off by up to 0.5 x |1 - factor|) and truncates the blend.
    torch.testing.assert_close(out, expected, atol=1.5, rtol=0)


@pytest.mark.parametrize(
    "adjust, pil_enhance",
    [(adjust_brightness, ImageEnhance.Brightness), (adjust_contrast, ImageEnhance.Contrast),
     (adjust_saturation, ImageEnhance.Color)],
)
def test_enhance_ops_match_pil(adjust, pil_enhance):
    x, factors = images(batch=4), [0.0, 0.5, 1.0, 1.7]
    out = adjust(x, torch.tensor(factors))
    expected = like_pil(lambda image, f: pil_enhance(image).enhance(f), x, factors)
    # PIL works in integers (its greyscale and mean grey are rounded), so a level or two apart.
    torch.testing.assert_close(out, expected, atol=2, rtol=0)
    assert torch.equal(out[2], x[2])  # factor 1 is the identity


def test_affine_identity_reproduces_the_image():
    x = images(batch=2, height=24, width=40)
    out = affine(x, torch.eye(2).expand(2, 2, 2), torch.zeros(2, 2))
    assert (out - x).abs().max() < 1e-3


def test_affine_turns_counter_clockwise_about_the_centre():
    x = images(batch=2)
    quarter_turn = torch.tensor([[0.0, -1.0], [1.0, 0.0]]).expand(2, 2, 2)
    out = affine(x, quarter_turn, torch.zeros(2, 2))
    assert (out - torch.rot90(x, 1, dims=(-2, -1))).abs().max() < 1e-3


def test_affine_shift_moves_the_content_and_fills_black():
    x = images(batch=2)
    out = affine(x, torch.eye(2).expand(2, 2, 2), torch.tensor([[3.0, 2.0], [3.0, 2.0]]))  # 3 right, 2 down
    assert (out[..., 2:, 3:] - x[..., :-2, :-3]).abs().max() < 1e-3
    assert out[..., :2, :].abs().max() < 1e-3 and out[..., :, :3].abs().max() < 1e-3


def test_affine_shear_x_slides_rows_by_their_distance_from_the_centre():
    x = images(batch=1)
    shear = 2 / 31  # the outer rows of 32 are 15.5 px from the centre: they move 1 px, in opposite ways
    out = affine(x, torch.tensor([[[1.0, shear], [0.0, 1.0]]]), torch.zeros(1, 2))
    assert (out[..., 31, :-1] - x[..., 31, 1:]).abs().max() < 1e-3
    assert (out[..., 0, 1:] - x[..., 0, :-1]).abs().max() < 1e-3


# --- one op per sample, RandAugment, TrivialAugment -------------------------------------------


def grey(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1).expand_as(x)


@pytest.mark.parametrize(
    "name, strength, expected",
    [
        ("identity", 0.0, lambda x: x),
        ("rotate", 90.0, lambda x: torch.rot90(x, 1, dims=(-2, -1))),
        ("translate_x", 3.0, lambda x: F.pad(x[..., :-3], (3, 0))),
        ("translate_y", -2.0, lambda x: F.pad(x[..., 2:, :], (0, 0, 0, 2))),
        ("shear_x", 0.0, lambda x: x),
        ("solarize", 55.0, lambda x: torch.where(x >= 200, 255 - x, x)),
        ("posterize", 4.0, lambda x: x - x % 16),
        ("brightness", -1.0, lambda x: torch.zeros_like(x)),
        ("color", -1.0, grey),
        ("contrast", 0.0, lambda x: x),
        ("sharpness", 0.0, lambda x: x),
        ("auto_contrast", 0.0, auto_contrast),
        ("equalize", 0.0, equalize),
    ],
)
def test_one_op_per_sample_applies_the_named_op_at_its_strength(name, strength, expected):
    x = images(batch=4)
    out = one_op_per_sample(x, torch.full((4,), AUGMENT_OPS.index(name)), torch.full((4,), strength))
    torch.testing.assert_close(out, expected(x), atol=1e-3, rtol=0)


def test_one_op_per_sample_gives_each_sample_its_own_op():
    x = images(batch=3 * len(AUGMENT_OPS))
    op_index = torch.randperm(len(x), generator=seeded()) % len(AUGMENT_OPS)
    strength = torch.rand(len(x), generator=seeded()) * 4 - 2
    out = one_op_per_sample(x, op_index, strength)
    alone = torch.cat([one_op_per_sample(x[[i]], op_index[[i]], strength[[i]]) for i in range(len(x))])
    torch.testing.assert_close(out, alone, atol=1e-3, rtol=0)


def test_the_masked_path_makes_the_grouped_paths_pixels(monkeypatch):
    # The accelerator's path never reads the device (no group sizes on the host); same result.
    x = images(batch=4 * len(AUGMENT_OPS))
    op_index = torch.randperm(len(x), generator=seeded()) % len(AUGMENT_OPS)
    strength = torch.rand(len(x), generator=seeded()) * 4 - 2
    grouped = one_op_per_sample(x, op_index, strength, grouped=True)
    reads = []
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: reads.append(self) or [])
    masked = one_op_per_sample(x, op_index, strength, grouped=False)
    assert not reads
    torch.testing.assert_close(masked, grouped, atol=1e-4, rtol=0)


def test_one_op_per_sample_resamples_all_geometric_ops_at_once(monkeypatch):
    calls = []
    grid_sample = F.grid_sample
    monkeypatch.setattr(F, "grid_sample", lambda *a, **k: calls.append(1) or grid_sample(*a, **k))
    op_index = torch.arange(16) % len(AUGMENT_OPS)  # all five geometric ops and the others
    one_op_per_sample(images(), op_index, torch.ones(16))
    assert len(calls) == 1


def test_rand_augment_with_no_ops_is_identity():
    x = images()
    assert torch.equal(rand_augment(x, 0, 9, generator=seeded()), x)


def mean_change(out: torch.Tensor, x: torch.Tensor) -> float:
    return (out - x).abs().mean().item()


def test_rand_augment_changes_images_more_at_a_higher_magnitude():
    x = one_image_repeated(batch=256)
    change = {m: mean_change(rand_augment(x, 2, m, generator=seeded()), x) for m in (1, 5, 10)}
    assert change[1] < change[5] < change[10]


def test_trivial_augment_changes_most_images_in_many_ways():
    # Identity, level 0 and auto-contrast (a no-op on this full-range image) leave about a fifth alone;
    # equalize, and each op at each of its 31 levels, give the same result on identical inputs.
    x = one_image_repeated(batch=256)
    out = trivial_augment(x, generator=seeded())
    changed = (out - x).abs().amax(dim=(1, 2, 3)) > 1
    assert changed.float().mean() > 0.7
    assert len({tuple(sample.flatten().tolist()) for sample in out[changed]}) > 0.5 * changed.sum()


# --- random erasing ---------------------------------------------------------------------------


def erased_boxes(out: torch.Tensor, x: torch.Tensor) -> list[tuple[int, int, int, int] | None]:
    """Per sample, (top, left, height, width) of the changed pixels, checked to be one filled box."""
    boxes = []
    for changed in (out != x).any(dim=1):
        if not changed.any():
            boxes.append(None)
            continue
        rows, cols = changed.any(dim=1).nonzero().flatten(), changed.any(dim=0).nonzero().flatten()
        top, left, height, width = rows[0], cols[0], rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        assert changed[top : top + height, left : left + width].all() and changed.sum() == height * width
        boxes.append((int(top), int(left), int(height), int(width)))
    return boxes


def test_random_erasing_at_p0_is_identity():
    x = images()
    assert torch.equal(random_erasing(x, 0.0, generator=seeded()), x)


def test_random_erasing_at_p1_erases_one_box_per_image_within_scale_and_ratio():
    x = images(batch=64)
    boxes = erased_boxes(random_erasing(x, 1.0, generator=seeded()), x)
    assert all(box is not None for box in boxes)
    areas = [h * w / (32 * 32) for _, _, h, w in boxes]
    aspects = [h / w for _, _, h, w in boxes]
    # Sides are rounded to whole pixels, hence the slack around timm's scale (0.02, 1/3) and ratio (0.3, 3.3).
    assert 0.015 <= min(areas) and max(areas) <= 0.4 and max(areas) > 0.2
    assert 0.25 <= min(aspects) and max(aspects) <= 4


def test_random_erasing_erases_about_p_of_the_images_with_noise():
    x = one_image_repeated(batch=400)
    out = random_erasing(x, 0.5, generator=seeded())
    erased = [box is not None for box in erased_boxes(out, x)]
    assert 0.4 < sum(erased) / len(erased) < 0.6
    fill = out[out != x]
    assert fill.min() >= 0 and fill.max() <= 255 and fill.std() > 60  # uniform on [0, 255]: std 74


def test_random_erasing_keeps_the_rest_of_the_image():
    x = images()
    out = random_erasing(x, 1.0, scale=(0.1, 0.1), ratio=(1, 1), generator=seeded())
    assert all(h * w in (100, 110) or (h, w) == (10, 10) for _, _, h, w in erased_boxes(out, x))
    assert (out == x).float().mean() > 0.85


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


def test_train_augment_adds_rand_augment_and_erases_last():
    transform, out = augment(crop="pad", hflip=0.5, color_jitter=0.2, auto_augment="randaugment", random_erasing=0.25)
    names = [line.strip().split("(")[0] for line in repr(transform).splitlines()[1:-1]]
    assert names == ["pad_crop", "hflip", "rand_augment", "color_jitter", "random_erasing", "normalize"]
    assert "rand_augment(num_ops=2, magnitude=9)" in repr(transform)
    assert "random_erasing(p=0.25)" in repr(transform)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_train_augment_adds_trivial_augment():
    transform, out = augment(crop="none", hflip=0.0, auto_augment="trivialaugment")
    assert "trivial_augment()" in repr(transform)
    assert not torch.equal(out, normalize(images_uint8(), MEAN, STD))


def test_train_augment_erasing_fill_is_normalized_with_the_image():
    _, out = augment(crop="none", hflip=0.0, random_erasing=1.0)
    low, high = normalize(torch.tensor([0.0, 255.0]).view(2, 1, 1, 1).expand(2, 3, 1, 1), MEAN, STD)
    assert (out >= low - 1e-5).all() and (out <= high + 1e-5).all()


@pytest.mark.parametrize("size, batch", [(32, 256), (224, 8)])
def test_train_augment_with_every_op_on_a_full_batch(size, batch):
    cfg = DataConfig(crop="random_resized", color_jitter=0.4, auto_augment="randaugment", random_erasing=0.25)
    out = build_train_augment(cfg, MEAN, STD)(images_uint8(batch, size, size), seeded())
    assert out.shape == (batch, 3, size, size) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_train_augment_rejects_an_unknown_policy():
    with pytest.raises(ValueError, match="data.auto_augment"):
        build_train_augment(DataConfig(auto_augment="autoaugment"), MEAN, STD)


@pytest.mark.parametrize(
    "key, value",
    [("randaugment_ops", 0), ("randaugment_magnitude", 11), ("randaugment_magnitude", -1), ("random_erasing", 1.5)],
)
def test_recipe_rejects_augment_settings_out_of_range(key, value):
    with pytest.raises(RecipeError, match=f"data.{key}: {value}"):
        DataConfig(**{key: value})  # each field's constraint is checked as its section is built
