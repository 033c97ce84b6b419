"""Hub failures never cost the run: training goes on, local checkpoints stay, pushes are retried and
reported, and the run exits 3 only after the model is saved locally.

Against tests/hub_server.py (a real HTTP server speaking the Hub API) made to fail: server errors,
refused tokens, a stopped server, and a server that accepts connections but never answers.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub.utils._http import default_client_factory

import vit_hf.hub.push
from tests.helpers.datagen import make_imagefolder
from tests.helpers.hub_server import point_clients_at
from tests.helpers.recipes import tiny_recipe, write_recipe
from vit_hf.cli.run import main
from vit_hf.outputs.layout import latest_checkpoint

REPO = "user/robust-vit"


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    """Retries after 0.05 s, requests that give up after 1 s; huggingface_hub's own client restored after."""
    monkeypatch.setattr(vit_hf.hub.push, "RETRY_DELAYS", (0.05, 0.05, 0.05))
    monkeypatch.setattr(vit_hf.hub.push, "REQUEST_TIMEOUT", 1.0)
    monkeypatch.setattr(vit_hf.hub.push, "BACKGROUND_WAIT", 30.0)
    yield
    huggingface_hub.set_client_factory(default_client_factory)


def push_recipe(tmp_path: Path, hub_strategy: str = "checkpoint") -> Path:
    data = make_imagefolder(tmp_path / "data", per_class=4, size=16)
    recipe = tiny_recipe(data, tmp_path / "out", max_steps=4, eval_strategy="no", save_strategy="steps",
                         save_steps=2, push_to_hub=True, hub_model_id=REPO, hub_strategy=hub_strategy)
    return write_recipe(tmp_path, recipe)


def assert_kept_locally(out: Path) -> None:
    assert (out / "model.safetensors").is_file() and (out / "eval_results.json").is_file()
    assert latest_checkpoint(out) == str(out / "checkpoint-4")


def test_failed_checkpoint_pushes_are_pushed_again_at_the_end(hub_server, tmp_path, caplog):
    hub_server.fail_next(3, status=500, path_contains="/commit/")  # the first pushes, during training
    assert main([str(push_recipe(tmp_path))]) == 0
    files = hub_server.repos[REPO].files
    assert json.loads(files["last-checkpoint/trainer_state.json"])["global_step"] == 4
    assert "model.safetensors" in files and "README.md" in files
    assert "failed during the run" in caplog.text and "up to date now" in caplog.text
    assert_kept_locally(tmp_path / "out")


def test_a_hub_that_keeps_failing_ends_in_exit_3_after_the_local_save(hub_server, tmp_path, capsys):
    hub_server.fail_all(status=503, path_contains="/commit/")
    assert main([str(push_recipe(tmp_path, hub_strategy="every_save"))]) == 3
    err = capsys.readouterr().err
    assert f"error: the model is saved in {tmp_path / 'out'}, but pushing it to the Hub failed" in err
    assert f"hf upload {REPO}" in err and "Traceback" not in err
    assert_kept_locally(tmp_path / "out")
    final_attempts = [r for r in hub_server.find_requests("POST", "/commit/")][-4:]
    assert len(final_attempts) == 4 and all(r.status == 503 for r in final_attempts)  # 1 + 3 retries


def test_a_refused_token_is_not_retried_and_says_so(hub_server, tmp_path, capsys):
    hub_server.require_token("hf_some_other_token")
    assert main([str(push_recipe(tmp_path))]) == 3
    err = capsys.readouterr().err
    assert "401" in err and "The Hub refused the token: check HF_TOKEN" in err
    assert_kept_locally(tmp_path / "out")
    assert REPO not in hub_server.repos


def test_a_hub_that_is_down_from_the_start_does_not_stop_training(hub_server, tmp_path, capsys):
    hub_server.stop()
    assert main([str(push_recipe(tmp_path))]) == 3
    assert "pushing it to the Hub failed: the final push" in capsys.readouterr().err
    assert_kept_locally(tmp_path / "out")


def test_a_hub_that_never_answers_times_out(tmp_path, monkeypatch, capsys):
    class SilentHub:
        """Accepts connections (the kernel's backlog does) and never answers."""

        def __init__(self):
            self.socket = socket.create_server(("127.0.0.1", 0), backlog=64)

        @property
        def url(self) -> str:
            return f"http://127.0.0.1:{self.socket.getsockname()[1]}"

    silent = SilentHub()
    point_clients_at(silent, monkeypatch, tmp_path / "hf_home")
    monkeypatch.setattr(vit_hf.hub.push, "REQUEST_TIMEOUT", 0.3)
    try:
        assert main([str(push_recipe(tmp_path))]) == 3
    finally:
        silent.socket.close()
    assert "ReadTimeout" in capsys.readouterr().err
    assert_kept_locally(tmp_path / "out")
