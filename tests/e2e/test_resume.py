"""Stops and restarts of real processes: SIGTERM saves and exits cleanly, SIGKILL loses at most
`budget.save_every`, and a rerun of the same command resumes on the same budget."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT
from tests.helpers.datagen import make_imagefolder, make_saved_dataset
from tests.helpers.recipes import tiny_recipe, write_recipe
from vit_hf.cli.run import main
from vit_hf.outputs.layout import BUDGET_STATE, STREAM_POSITION, latest_checkpoint

TRAINING_STARTED = "at the start of training"


def budget_recipe(tmp_path: Path, seconds: int, **training) -> Path:
    data = make_imagefolder(tmp_path / "data", per_class=12, size=20)
    training = {"eval_strategy": "no", "save_strategy": "no"} | training
    recipe = tiny_recipe(data, tmp_path / "out", lr_scheduler_type="cosine", warmup_steps=0.05, **training)
    del recipe["training"]["num_train_epochs"]
    recipe["budget"] = {"time": seconds}
    return write_recipe(tmp_path, recipe)


def start(recipe: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vit_hf.run", str(recipe)], cwd=ROOT,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_for(log: Path, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in the log within {timeout}s:\n{log.read_text()[-2000:]}")


def rerun(recipe: Path, log: Path) -> tuple[int, float]:
    started = time.monotonic()
    process = start(recipe, log)
    return process.wait(timeout=120), time.monotonic() - started


def final_state(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "out" / "trainer_state.json").read_text())


def test_sigterm_saves_a_checkpoint_and_a_rerun_resumes_on_the_same_budget(tmp_path):
    recipe = budget_recipe(tmp_path, seconds=25)
    log = tmp_path / "first.log"
    process = start(recipe, log)
    wait_for(log, TRAINING_STARTED)
    time.sleep(3)
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, log.read_text()[-2000:]
    assert time.monotonic() - sent < 10  # within a few seconds
    checkpoint = latest_checkpoint(tmp_path / "out")
    assert checkpoint is not None and (Path(checkpoint) / BUDGET_STATE).is_file()
    assert "stopped by a signal" in log.read_text() and "Traceback" not in log.read_text()
    assert not (tmp_path / "out" / "model.safetensors").exists()  # no final model: the run is not over
    spent = json.loads((Path(checkpoint) / BUDGET_STATE).read_text())["spent"]
    stopped_at = int(Path(checkpoint).name.split("-")[1])

    code, elapsed = rerun(recipe, tmp_path / "second.log")
    assert code == 0
    second_log = (tmp_path / "second.log").read_text()
    assert f"resume: from {checkpoint}" in second_log
    assert final_state(tmp_path)["global_step"] > stopped_at
    interpreter_startup = 10
    assert elapsed < 25 - spent + interpreter_startup  # the rerun gets only what the first left
    lrs = [e["learning_rate"] for e in final_state(tmp_path)["log_history"] if "learning_rate" in e]
    assert lrs[-1] < 3e-3 * 1e-3  # and anneals on the same curve to the same end


def test_sigkill_loses_at_most_save_every_and_the_rerun_continues(tmp_path):
    recipe = budget_recipe(tmp_path, seconds=30)
    raw = yaml.safe_load(recipe.read_text())
    raw["budget"]["save_every"] = "2s"
    recipe.write_text(yaml.safe_dump(raw))
    log = tmp_path / "first.log"
    process = start(recipe, log)
    wait_for(log, TRAINING_STARTED)
    time.sleep(6)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    checkpoint = latest_checkpoint(tmp_path / "out")
    assert checkpoint is not None, "save_every: 2s wrote no checkpoint in 6 s of training"
    saved_at = os.path.getmtime(Path(checkpoint) / "trainer_state.json")
    assert time.time() - saved_at < 2 + 3  # the newest checkpoint is at most ~save_every old
    stopped_at = int(Path(checkpoint).name.split("-")[1])

    code, _ = rerun(recipe, tmp_path / "second.log")
    assert code == 0
    assert f"resume: from {checkpoint}" in (tmp_path / "second.log").read_text()
    assert final_state(tmp_path)["global_step"] > stopped_at
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_resume_never_starts_over(tmp_path):
    recipe = budget_recipe(tmp_path, seconds=8, save_steps=2, save_strategy="steps", max_steps=4)
    assert main([str(recipe)]) == 0
    assert main([str(recipe), "--resume", "never", "--training.max_steps", "2"]) == 0
    assert final_state(tmp_path)["global_step"] == 2  # a fresh run, not a continuation of step 4


def test_an_incomplete_checkpoint_is_skipped(tmp_path):
    good = tmp_path / "checkpoint-4"
    good.mkdir()
    (good / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-6").mkdir()  # killed mid-save: no trainer_state.json
    assert latest_checkpoint(tmp_path) == str(good)


def test_resume_from_the_hub_continues_a_pushed_checkpoint(hub_server, tmp_path):
    recipe = budget_recipe(tmp_path, seconds=120, save_steps=3, save_strategy="steps", push_to_hub=True,
                           hub_model_id="user/run", hub_strategy="checkpoint", max_steps=6)
    assert main([str(recipe)]) == 0
    assert any(p.startswith("last-checkpoint/") for p in hub_server.repos["user/run"].files)

    # Another machine: an empty output_dir, the same recipe with a longer run and resume: hub.
    raw = yaml.safe_load(recipe.read_text())
    raw["training"]["output_dir"] = str(tmp_path / "elsewhere")
    raw["training"]["max_steps"] = 9
    raw["resume"] = "hub"
    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text(yaml.safe_dump(raw))
    assert main([str(elsewhere)]) == 0
    state = json.loads((tmp_path / "elsewhere" / "trainer_state.json").read_text())
    assert state["global_step"] == 9
    assert (tmp_path / "elsewhere" / "last-checkpoint" / BUDGET_STATE).is_file()


@pytest.mark.parametrize("value", ["somewhere/that/does/not/exist"])
def test_resume_from_a_missing_folder_is_a_clear_error(tmp_path, value):
    recipe = budget_recipe(tmp_path, seconds=8)
    assert main([str(recipe), "--resume", value]) == 2


def test_rerunning_a_finished_run_trains_a_new_one(tmp_path, caplog):
    recipe = budget_recipe(tmp_path, seconds=60, save_steps=2, save_strategy="steps", max_steps=4)
    assert main([str(recipe)]) == 0
    with caplog.at_level("INFO"):
        assert main([str(recipe)]) == 0
    assert "holds a finished run" in caplog.text and "resume: from" not in caplog.text
    assert final_state(tmp_path)["global_step"] == 4


def test_a_checkpoint_of_another_model_is_a_clear_error(tmp_path, capsys):
    recipe = budget_recipe(tmp_path, seconds=60, save_steps=2, save_strategy="steps", max_steps=2)
    assert main([str(recipe)]) == 0
    checkpoint = latest_checkpoint(tmp_path / "out")
    code = main([str(recipe), "--resume", checkpoint, "--model.hidden_size", "64",
                 "--training.output_dir", str(tmp_path / "other")])
    assert code == 2
    assert "different model or optimizer setup" in capsys.readouterr().err


def test_an_optimizer_state_of_another_setup_is_a_clear_error(tmp_path, capsys):
    # The same model, optimizer parameter groups of another shape: layer-wise rates make one group per layer.
    recipe = budget_recipe(tmp_path, seconds=60, save_steps=2, save_strategy="steps", max_steps=2)
    assert main([str(recipe)]) == 0
    checkpoint = latest_checkpoint(tmp_path / "out")
    code = main([str(recipe), "--resume", checkpoint, "--extras.layer_decay", "0.75",
                 "--training.max_steps", "4", "--training.output_dir", str(tmp_path / "other")])
    assert code == 2
    error = capsys.readouterr().err
    assert "different model or optimizer setup" in error and checkpoint in error


def test_a_streamed_run_resumes_in_the_pass_and_at_the_batch_its_checkpoint_holds(tmp_path, caplog):
    # 18 training images in batches of 8: a pass is 3 batches (8, 8, 2), so step 4 is the first batch of pass 1.
    data = make_saved_dataset(tmp_path / "data", per_class=6, size=20)
    recipe = tiny_recipe(data, tmp_path / "out", max_steps=4, save_strategy="steps", save_steps=4,
                         eval_strategy="no")
    recipe["data"]["streaming"] = True
    assert main([str(write_recipe(tmp_path, recipe))]) == 0
    position = json.loads((tmp_path / "out" / "checkpoint-4" / STREAM_POSITION).read_text())
    assert position == {"passes": 1, "batches": 1}
    (tmp_path / "out" / "model.safetensors").unlink()  # an unfinished run: `resume: auto` continues it
    recipe["training"]["max_steps"] = 6
    with caplog.at_level("INFO"):
        assert main([str(write_recipe(tmp_path, recipe))]) == 0
    assert any("continues in pass 1 after its first 1 batches" in r.getMessage() for r in caplog.records)
    position = json.loads((tmp_path / "out" / "checkpoint-6" / STREAM_POSITION).read_text())
    assert position == {"passes": 1, "batches": 3}  # batches 2 and 3 of pass 1, not the start of pass 0
    assert final_state(tmp_path)["global_step"] == 6
