"""The planner's rule and shapes: FLOPs that match torch's counter, curves fitted back from their own points,
regularization that grows with the epochs, and the recipe keys a plan sets."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import ViTConfig, ViTForImageClassification

from tests.helpers.recipes import tiny_recipe
from vit_hf.errors import RecipeError
from vit_hf.planning.candidates import BY_NAME, HYBRID, PLAIN, SHAPES, candidates
from vit_hf.planning.rule import REGIMES, best, fit_curve, fit_decay, regime_for
from vit_hf.recipe.load import recipe_from_dict, with_values
from vit_hf.recipe.schema import Recipe


@pytest.mark.parametrize("name", ["vit-6x128/8", "vit-9x192/4"])
def test_a_shapes_training_flops_match_torchs_counter_within_five_percent(name):
    shape = BY_NAME[name]
    config = ViTConfig(image_size=32, num_labels=10, **{k: v for k, v in shape.model_keys(32).items()
                                                        if k not in ("preset", "stem")})
    config._attn_implementation = "eager"  # the counter sees eager attention's matrix products
    model = ViTForImageClassification(config)
    with FlopCounterMode(display=False) as counter:
        model(pixel_values=torch.randn(2, 3, 32, 32)).logits.sum().backward()
    counted = counter.get_total_flops() / 2
    assert shape.train_flops(32) == pytest.approx(counted, rel=0.05)


def test_candidates_are_stock_vits_unless_the_conv_stem_is_allowed():
    plain = candidates(32, allow_conv_stem=False)
    assert plain and {s.stem for s in plain} == {PLAIN}
    both = candidates(32, allow_conv_stem=True)
    assert {s.stem for s in both} == {PLAIN, HYBRID} and len(both) == len(SHAPES)
    # At 224 px a grid of 8 is a patch of 28: a plain ViT takes it, a conv stem (stride-2 convs) cannot.
    assert all(s.stem == PLAIN for s in candidates(224, allow_conv_stem=True) if s.grid == 8)


def test_a_curve_is_fitted_back_from_points_it_made():
    floor, scale, decay = 0.08, 0.5, 0.6
    points = [(e, 1 - floor - scale * e ** -decay) for e in (0.5, 1.3, 3.0, 7.5, 20.0)]
    assert fit_curve(points, decay) == pytest.approx((floor, scale), abs=1e-9)
    assert fit_decay({"a": points, "b": [(e, a - 0.05) for e, a in points]}) == pytest.approx(decay)


def test_regularization_grows_with_the_epochs():
    assert [regime_for(e).name for e in (0.5, 12, 30, 99, 100, 400)] == [
        "light", "light", "medium", "medium", "strong", "strong"]
    strengths = [(r.mixup_alpha, r.random_erasing, r.drop_path_rate) for r in REGIMES]
    assert strengths == sorted(strengths)


def test_the_best_shape_wins_and_a_near_tie_goes_to_the_cheaper():
    cheap, large = BY_NAME["vit-6x128/8"], BY_NAME["vit-9x192/4"]
    assert best([(cheap, 0.60), (large, 0.65)]) is large
    assert best([(cheap, 0.649), (large, 0.650)]) is cheap
    assert best([(cheap, None), (large, None)]) is None


def test_with_values_sets_dotted_keys_and_checks_them_as_a_loaded_recipe(tmp_path):
    recipe: Recipe = recipe_from_dict(tiny_recipe(tmp_path, tmp_path / "out"))
    planned = with_values(recipe, {"model.hidden_size": 64, "learning_rate": 3e-4, "data.pad": 2})
    assert planned.vit_config["hidden_size"] == 64 and planned.training["learning_rate"] == 3e-4
    assert planned.data.pad == 2
    assert recipe.vit_config.get("hidden_size") != 64 and recipe.training["learning_rate"] != 3e-4  # untouched
    with pytest.raises(RecipeError, match="data.pad"):
        with_values(recipe, {"data.pad": "four"})
