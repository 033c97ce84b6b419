"""push_to_hub end to end against a real HTTP server on 127.0.0.1 speaking the Hub's API."""

from __future__ import annotations

import numpy as np
import torch
import yaml
from transformers import ViTForImageClassification, pipeline

from tests.helpers.datagen import CLASSES, class_image, make_imagefolder
from tests.helpers.hub_server import FAKE_TOKEN
from tests.helpers.recipes import tiny_recipe
from vit_hf.cli.run import main


def test_run_pushes_checkpoints_and_the_final_model_with_a_card(hub_server, tmp_path, caplog):
    data = make_imagefolder(tmp_path / "data", per_class=8, size=20)
    out = tmp_path / "out"
    recipe = tiny_recipe(data, out, num_train_epochs=2, push_to_hub=True, hub_model_id="user/tiny-vit",
                         hub_strategy="every_save", report_to="tensorboard")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))

    assert main([str(path)]) == 0

    repo = hub_server.repos["user/tiny-vit"]
    assert repo.private  # private unless the recipe says otherwise
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "README.md"):
        assert name in repo.files, name
    commits = [c.message for c in repo.commits]
    assert any("End of training" in m for m in commits) and len(commits) >= 3  # checkpoints, then the end
    # TensorBoard's event files grow while training runs: they go up with the final push, complete.
    assert any(name.startswith("runs/") and "tfevents" in name for name in repo.files)
    assert not any("failed" in record.getMessage() for record in caplog.records if record.name.startswith("vit_hf"))
    assert all(r.headers.get("authorization") == f"Bearer {FAKE_TOKEN}"
               for r in hub_server.find_requests("POST", "/commit/"))

    pushed = ViTForImageClassification.from_pretrained("user/tiny-vit").state_dict()
    local = ViTForImageClassification.from_pretrained(out).state_dict()
    assert pushed.keys() == local.keys() and all(torch.equal(pushed[k], local[k]) for k in local)
    classify = pipeline("image-classification", model="user/tiny-vit")
    answer = classify(class_image(0, np.random.default_rng(3), size=20))
    assert answer[0]["label"] in CLASSES
