"""The model card of a finished run: valid Hub metadata, the accuracy in its model-index, what a reader needs."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

from vit_hf.hub.card import describe_hardware, write_model_card
from vit_hf.recipe.load import recipe_from_dict


def test_the_card_is_valid_hub_metadata_with_the_accuracy_in_its_model_index(finished):
    path, _, _, metrics = finished
    write_model_card(path, model_id="someone/vit-tiny-cifar10")
    card = ModelCard.load(path / "README.md")  # parses the YAML front matter as the Hub does
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "image-classification"
    assert data["datasets"] == ["uoft-cs/cifar10"] and data["metrics"] == ["accuracy"] and "vit_hf" in data["tags"]
    name, results = model_index_to_eval_results(data["model-index"])
    assert name == "vit-tiny-cifar10"
    accuracy = next(r for r in results if r.metric_type == "accuracy")
    assert accuracy.metric_value == pytest.approx(metrics["eval_accuracy"])
    assert accuracy.task_type == "image-classification" and accuracy.dataset_type == "uoft-cs/cifar10"
    assert json.loads((path / "eval_results.json").read_text())["eval_accuracy"] == accuracy.metric_value


def test_the_card_tells_how_to_load_it_what_ran_where_and_shows_the_curves(finished):
    path, *_ = finished
    text = write_model_card(path, model_id="someone/vit-tiny-cifar10").read_text()
    assert 'pipeline("image-classification", model="someone/vit-tiny-cifar10")' in text
    assert "![training curves](curves.png)" in text and "![confusion matrix](confusion_matrix.png)" in text
    assert (path / "recipe.yaml").read_text().strip() in text  # the resolved recipe, inline
    assert describe_hardware() in text and "10m00s for the whole run" in text
    assert "| accuracy (top-1) |" in text and "- steps: 6" in text


def test_push_to_hub_writes_our_card_not_the_trainers(finished):
    path, trainer, *_ = finished
    (path / "README.md").unlink(missing_ok=True)
    trainer.create_model_card(model_name="ignored")  # what push_to_hub calls before uploading output_dir
    assert "## Recipe" in (path / "README.md").read_text()


def test_a_local_dataset_is_not_claimed_as_a_hub_dataset(tmp_path):
    folder = tmp_path / "my_images"
    folder.mkdir()
    path = tmp_path / "out"
    (path).mkdir()
    (path / "recipe.yaml").write_text(recipe_from_dict({"data": {"dataset": str(folder)}}).to_yaml())
    (path / "eval_results.json").write_text(json.dumps({"eval_accuracy": 0.75}))
    card = ModelCard.load(write_model_card(path))
    assert card.data.datasets is None
    assert card.data.eval_results[0].dataset_type == "my_images"
    assert card.data.eval_results[0].metric_value == 0.75


def test_a_card_is_written_even_before_the_run_left_anything(tmp_path):
    card = ModelCard.load(write_model_card(tmp_path, model_id="someone/empty"))
    assert card.data.library_name == "transformers" and card.data.eval_results is None


def test_every_metric_of_the_run_is_a_model_index_metric_typed_by_the_hub_metric_that_computes_it(tmp_path):
    metrics = ["accuracy", "top5_accuracy", "f1_macro", "recall_macro", "evaluate-metric/matthews_correlation"]
    (tmp_path / "recipe.yaml").write_text(
        recipe_from_dict({"data": {"dataset": "uoft-cs/cifar10"}, "evaluation": {"metrics": metrics}}).to_yaml())
    results = {"eval_accuracy": 0.75, "eval_top5_accuracy": 0.95, "eval_f1_macro": 0.7, "eval_recall_macro": 0.72,
                "eval_matthews_correlation": 0.6}
    (tmp_path / "eval_results.json").write_text(json.dumps(results))
    card = ModelCard.load(write_model_card(tmp_path, model_id="someone/run"))
    entries = {r.metric_type: (r.metric_name, r.metric_args, r.metric_value) for r in card.data.eval_results}
    assert entries == {
        "accuracy": ("Accuracy", None, 0.75),
        "top_5_accuracy": ("Top-5 Accuracy", None, 0.95),
        "f1": ("F1 (macro)", {"average": "macro"}, 0.7),
        "recall": ("Recall (macro)", {"average": "macro"}, 0.72),
        "matthews_correlation": ("matthews_correlation", None, 0.6),
    }
    assert card.data.metrics == ["accuracy", "f1", "recall", "matthews_correlation"]  # Hub metric ids only
    assert "| F1 (macro) | 0.7000 |" in card.text and "| matthews_correlation | 0.6000 |" in card.text
