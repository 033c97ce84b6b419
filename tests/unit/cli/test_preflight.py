"""Recipe and command-line errors through the real entry point: one message naming the key, the value
and what would be right, exit code 2, before any model is built or any step is trained."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest
import torch

from tests.helpers.datagen import make_imagefolder
from tests.helpers.recipes import tiny_recipe, write_recipe
from vit_hf.cli.preflight import check_gpu_decode
from vit_hf.cli.run import main
from vit_hf.errors import RecipeError
from vit_hf.recipe.schema import DataConfig


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_imagefolder(tmp_path_factory.mktemp("data"), per_class=2, size=16)


def run_cli(tmp_path, recipe: dict, *overrides: str) -> int:
    return main([str(write_recipe(tmp_path, recipe)), *overrides])


def test_load_best_model_with_mismatched_strategies_names_both_keys(tmp_path, data, capsys):
    recipe = tiny_recipe(data, tmp_path / "out", load_best_model_at_end=True, save_strategy="steps")
    assert run_cli(tmp_path, recipe) == 2
    err = capsys.readouterr().err
    assert ("training.load_best_model_at_end needs a checkpoint at each evaluation, but training.save_strategy "
            "is 'steps' and training.eval_strategy is 'epoch'; set both to 'epoch'") in err


def test_training_arguments_errors_name_recipe_keys_not_flags(tmp_path, data, capsys):
    recipe = tiny_recipe(data, tmp_path / "out", load_best_model_at_end=True, eval_strategy="steps",
                         save_strategy="steps", eval_steps=2, save_steps=3)
    assert run_cli(tmp_path, recipe) == 2
    err = capsys.readouterr().err
    assert "training.load_best_model_at_end requires" in err and "--" not in err.split("error:", 1)[1]


def test_bf16_on_a_gpu_without_bf16_is_a_recipe_error(tmp_path, data, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "Tesla V100-SXM2-16GB")
    recipe = tiny_recipe(tmp_path / "not-loaded-yet", tmp_path / "out", bf16=True)
    assert run_cli(tmp_path, recipe) == 2
    err = capsys.readouterr().err
    assert "training.bf16: true, but this GPU (Tesla V100-SXM2-16GB) has no bf16 support" in err
    assert "set training.fp16: true" in err


def test_a_label_column_that_does_not_exist_lists_the_columns(tmp_path, data, capsys):
    assert run_cli(tmp_path, tiny_recipe(data, tmp_path / "out"), "--data.label_column", "species") == 2
    err = capsys.readouterr().err
    assert "data.label_column: no column 'species'" in err and "its columns are ['image', 'label']" in err
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_an_output_dir_that_cannot_be_written_is_refused_before_anything_loads(tmp_path, data, capsys):
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    assert run_cli(tmp_path, tiny_recipe(data, a_file / "out")) == 2
    err = capsys.readouterr().err
    assert f"training.output_dir: cannot write to '{a_file / 'out'}' (Not a directory); choose a writable folder" in err


def test_a_missing_dataset_path_names_it(tmp_path, capsys):
    assert run_cli(tmp_path, tiny_recipe(tmp_path / "nowhere", tmp_path / "out")) == 2
    assert f"data.dataset: {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_gpu_decode_without_cuda_is_refused_before_the_dataset_is_looked_for(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path / "not-loaded-yet", tmp_path / "out")
    recipe["data"] |= {"loader": "decode", "gpu_decode": True}
    assert run_cli(tmp_path, recipe) == 2
    err = capsys.readouterr().err
    assert "data.gpu_decode: true decodes JPEGs on a CUDA device, and this run trains on cpu: set " in err
    assert "data.gpu_decode: false" in err and "does not exist" not in err  # before any data


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed here")
def test_gpu_decode_without_torchvision_names_the_extra_that_brings_it():
    with pytest.raises(RecipeError, match=r"torchvision is not installed: pip install vit_hf\[gpu-decode\]"):
        check_gpu_decode(DataConfig(dataset="x", loader="decode", gpu_decode=True),
                         SimpleNamespace(device=torch.device("cuda")))  # TrainingArguments' device, on a GPU
