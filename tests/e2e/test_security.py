"""Security: the Hub token never reaches a file, a log or the Hub; pushes are private unless the recipe
says otherwise; recipes and weights never run code (no YAML object tags, no pickled weights, no remote
code without model.trust_remote_code)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import torch
import yaml
from transformers import TrainingArguments, ViTForImageClassification

import vit_hf.hub.push
from tests.helpers.datagen import make_imagefolder
from tests.helpers.hub_server import FAKE_TOKEN
from tests.helpers.models import tiny_vit_config
from tests.helpers.recipes import tiny_recipe, write_recipe
from vit_hf.cli.run import main

RECIPE_TOKEN = "hf_recipe_secret_7f3a9c2e51"


class RunsCode:
    """A pickle that runs `touch marker` when loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_the_hub_token_is_never_written_anywhere(hub_server, tmp_path, capfd, caplog):
    """HF_TOKEN (planted by the fixture) and training.hub_token: the push uses the recipe's, nothing keeps either."""
    hub_server.require_token(RECIPE_TOKEN)  # the push succeeds only with the recipe's token
    data = make_imagefolder(tmp_path / "data", per_class=4, size=16)
    recipe = tiny_recipe(data, tmp_path / "out", max_steps=4, eval_strategy="no", save_strategy="steps",
                         save_steps=2, push_to_hub=True, hub_model_id="user/secret-vit", hub_strategy="checkpoint",
                         hub_token=RECIPE_TOKEN)
    assert main([str(write_recipe(tmp_path, recipe))]) == 0
    repo = hub_server.repos["user/secret-vit"]
    assert repo.private  # private unless the recipe says otherwise
    assert "last-checkpoint/training_args.bin" in repo.files and "README.md" in repo.files

    written = {str(p): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    written |= {f"hub:{name}": content for name, content in repo.files.items()}
    assert any(name.endswith("training_args.bin") for name in written)
    captured = capfd.readouterr()
    logs = (captured.out + captured.err + caplog.text).encode()
    for token in (RECIPE_TOKEN, FAKE_TOKEN):
        assert not [name for name, content in written.items() if token.encode() in content], token
        assert token.encode() not in logs
    assert "hub_token" not in yaml.safe_load((tmp_path / "out" / "recipe.yaml").read_text())["training"]


def test_a_recipe_may_make_the_repository_public(hub_server, tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), hub_model_id="user/public-vit", hub_private_repo=False)
    trainer = SimpleNamespace(args=args, is_world_process_zero=lambda: True)
    pusher = vit_hf.hub.push.HubPusher()
    pusher.start(trainer)
    assert pusher.pushes.repo_ready and not hub_server.repos["user/public-vit"].private


def test_recipe_yaml_tags_that_build_objects_never_run(tmp_path, capsys):
    marker = tmp_path / "ran"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"data:\n  dataset: !!python/object/apply:os.system ['touch {marker}']\n")
    assert main([str(recipe)]) == 2
    assert not marker.exists() and "error:" in capsys.readouterr().err


def test_pickled_weights_are_refused_before_anything_loads(tmp_path, capsys):
    marker, pretrained = tmp_path / "ran", tmp_path / "pickled"
    pretrained.mkdir()
    tiny_vit_config().save_pretrained(pretrained)
    torch.save(RunsCode(marker), pretrained / "pytorch_model.bin")
    recipe = tiny_recipe(make_imagefolder(tmp_path / "data", per_class=2, size=16), tmp_path / "out")
    recipe["model"] = {"pretrained": str(pretrained)}
    assert main([str(write_recipe(tmp_path, recipe))]) == 2
    err = capsys.readouterr().err
    assert "model.pretrained" in err and "pickle" in err and "safetensors" in err
    assert not marker.exists()


def test_a_checkpoint_holding_a_code_pickle_is_refused_on_resume(tmp_path, capsys):
    marker = tmp_path / "ran"
    data = make_imagefolder(tmp_path / "data", per_class=4, size=16)
    recipe = tiny_recipe(data, tmp_path / "out", max_steps=2, eval_strategy="no", save_strategy="steps", save_steps=2)
    assert main([str(write_recipe(tmp_path, recipe))]) == 0
    torch.save(RunsCode(marker), tmp_path / "out" / "checkpoint-2" / "optimizer.pt")
    checkpoint = str(tmp_path / "out" / "checkpoint-2")  # the run finished: continue it on purpose
    assert main([str(write_recipe(tmp_path, recipe)), "--training.max_steps", "4", "--resume", checkpoint]) == 2
    assert "refused to load" in capsys.readouterr().err and not marker.exists()


def test_remote_code_in_a_pretrained_folder_does_not_run_without_trust_remote_code(tmp_path):
    marker, pretrained = tmp_path / "ran", tmp_path / "remote"
    ViTForImageClassification(tiny_vit_config()).save_pretrained(pretrained)
    (pretrained / "evil.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    config = json.loads((pretrained / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.Config", "AutoModelForImageClassification": "evil.Model"}
    (pretrained / "config.json").write_text(json.dumps(config))
    recipe = tiny_recipe(make_imagefolder(tmp_path / "data", per_class=2, size=16), tmp_path / "out", max_steps=1)
    recipe["model"] = {"pretrained": str(pretrained)}
    assert main([str(write_recipe(tmp_path, recipe))]) == 0  # the built-in ViT code, not evil.py
    assert not marker.exists()
