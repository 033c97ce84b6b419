"""The planner's rule and shapes: FLOPs that match torch's counter, curves fitted back from their own points,
regularization that grows with the epochs, and the recipe keys a plan sets."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import ViTConfig, ViTForImageClassification

from tests.helpers import ROOT
from tests.helpers.recipes import tiny_recipe
from vit_hf.errors import RecipeError
from vit_hf.planning.candidates import BY_NAME, HYBRID, PLAIN, SHAPES, candidates
from vit_hf.planning.rule import (
    CURVES,
    DECAY,
    REGIMES,
    best,
    epochs_for,
    fit_curve,
    fit_curves,
    fit_decay,
    predicted_accuracy,
    regime_for,
)
from vit_hf.recipe.load import recipe_from_dict, with_values
from vit_hf.recipe.schema import Recipe
from vit_hf.training.plan import Candidate, planned_values


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


def test_the_rules_curves_are_the_fit_of_the_sweep_table_kept_in_benchmarks():
    rows = [json.loads(line) for line in (ROOT / "benchmarks" / "budget_sweep.json").read_text().splitlines() if line]
    decay, curves = fit_curves([(r["shape"], r["epochs"], r["accuracy"]) for r in rows])
    assert decay == pytest.approx(DECAY)
    assert curves.keys() == CURVES.keys()
    for name, curve in curves.items():
        assert curve == pytest.approx(CURVES[name], abs=1e-3), name


def test_a_fitted_curve_never_promises_more_than_100_percent_nor_more_than_its_epochs_support():
    for name in CURVES:
        shape = BY_NAME[name]
        accuracies = [predicted_accuracy(shape, e) for e in (0.5, 2, 10, 100, 1e4, 1e6)]
        assert accuracies == sorted(accuracies) and accuracies[-1] < 1.0
        assert predicted_accuracy(shape, 1e4) == predicted_accuracy(shape, 1e6)  # credited up to a bound


def test_a_cpus_minutes_buy_the_cheap_shape_and_a_gpus_minutes_the_large_one():
    """Images/s as measured in the sweep (2-core CPU), and a GPU 100x faster: 10 minutes of each."""
    rates = {"vit-6x128/8": 1_200, "hybrid-6x128/8": 1_000, "vit-6x128/4": 275, "vit-9x192/4": 130}

    def choice(speedup: float, names) -> str:
        scored = [(BY_NAME[n], predicted_accuracy(BY_NAME[n], epochs_for(540, speedup * rates[n], 45_000)))
                  for n in names]
        return best(scored).name

    assert choice(1, rates) == "hybrid-6x128/8"
    assert choice(1, [n for n in rates if not n.startswith("hybrid")]) == "vit-6x128/8"
    assert choice(100, rates) == "vit-9x192/4"


@pytest.mark.parametrize("epochs", [2.0, 40.0, 300.0])  # light, medium, strong
@pytest.mark.parametrize("name", ["vit-6x128/8", "hybrid-6x128/8"])
def test_every_plan_is_a_valid_recipe(name, epochs, tmp_path):
    recipe: Recipe = recipe_from_dict(tiny_recipe(tmp_path, tmp_path / "out"))
    for image_size in [size for size in (32, 64, 224) if BY_NAME[name].fits(size)]:
        chosen = Candidate(BY_NAME[name], images_per_second=1000.0, epochs=epochs)
        planned = with_values(recipe, {**planned_values(chosen, image_size), "data.image_size": image_size})
        assert planned.data.auto_augment == regime_for(epochs).auto_augment
        assert planned.vit_config["hidden_size"] == BY_NAME[name].hidden_size
