"""A save that fails ends the run with a clear error (exit 5), removes what it left half-written and
keeps the previous checkpoint.

How each failure is made: a real full disk, a 448 KiB tmpfs that holds one tiny checkpoint but not two
(when this machine lets root mount one; skipped otherwise); a real unwritable path, a regular file
where a checkpoint folder must go; and, for ENOSPC at an exact moment, a monkeypatched writer: the
Trainer's trainer_state.json write (the last file of a checkpoint) and the image processor's save
(after model.safetensors in the final save) raise OSError(ENOSPC).
"""

from __future__ import annotations

import errno
import json
import subprocess
from pathlib import Path

import pytest
from transformers import BitImageProcessorPil, TrainerState

from tests.helpers.datagen import make_imagefolder
from tests.helpers.recipes import tiny_recipe, write_recipe
from vit_hf.cli.run import main
from vit_hf.outputs.layout import latest_checkpoint


def saving_recipe(tmp_path: Path, out: Path) -> Path:
    """4 steps, a checkpoint every 2: checkpoint-2 is written before checkpoint-4 is tried."""
    data = make_imagefolder(tmp_path / "data", per_class=4, size=16)
    recipe = tiny_recipe(data, out, max_steps=4, eval_strategy="no", save_strategy="steps", save_steps=2)
    return write_recipe(tmp_path, recipe)


def assert_intact(checkpoint: Path) -> None:
    assert latest_checkpoint(checkpoint.parent) == str(checkpoint)
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == 2
    assert (checkpoint / "model.safetensors").is_file()


def no_space(path) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", str(path))


@pytest.fixture
def tiny_disk(tmp_path):
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=448k", "tmpfs", str(mount_point)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_a_full_disk_mid_checkpoint_removes_it_and_names_the_intact_one(tmp_path, tiny_disk, capsys):
    out = tiny_disk / "out"
    assert main([str(saving_recipe(tmp_path, out))]) == 5
    err = capsys.readouterr().err
    assert "error: disk full while saving checkpoint-4; checkpoint-2 is intact" in err
    assert not (out / "checkpoint-4").exists()  # never mistaken for a checkpoint
    assert_intact(out / "checkpoint-2")


def test_enospc_at_the_last_file_of_a_checkpoint(tmp_path, monkeypatch, capsys):
    save_to_json = TrainerState.save_to_json

    def full_at_checkpoint_4(state, json_path):
        if "checkpoint-4" in str(json_path):
            raise no_space(json_path)
        save_to_json(state, json_path)

    monkeypatch.setattr(TrainerState, "save_to_json", full_at_checkpoint_4)
    out = tmp_path / "out"
    assert main([str(saving_recipe(tmp_path, out))]) == 5
    assert "error: disk full while saving checkpoint-4; checkpoint-2 is intact" in capsys.readouterr().err
    assert not (out / "checkpoint-4").exists()
    assert_intact(out / "checkpoint-2")


def test_an_unwritable_checkpoint_folder_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "checkpoint-4").write_text("a file where the checkpoint folder must go")
    assert main([str(saving_recipe(tmp_path, out))]) == 5
    err = capsys.readouterr().err
    assert "error: cannot write checkpoint-4" in err and "checkpoint-2 is intact" in err
    assert (out / "checkpoint-4").read_text().startswith("a file")  # not ours: left alone
    assert_intact(out / "checkpoint-2")


def test_enospc_during_the_final_save_leaves_no_truncated_model(tmp_path, monkeypatch, capsys):
    save_pretrained = BitImageProcessorPil.save_pretrained

    def full_in_output_dir(processor, folder, *args, **kwargs):
        if Path(folder) == out:
            raise no_space(folder)
        return save_pretrained(processor, folder, *args, **kwargs)

    monkeypatch.setattr(BitImageProcessorPil, "save_pretrained", full_in_output_dir)
    out = tmp_path / "out"
    assert main([str(saving_recipe(tmp_path, out))]) == 5
    err = capsys.readouterr().err
    assert "error: disk full while saving the final model; checkpoint-4 is intact" in err
    assert not list(out.glob("model*.safetensors"))
