"""End-to-end checks of the fake Hub in tests/hub_server.py, with the real clients and no network.

Everything goes over HTTP to a local server: huggingface_hub uploads (inline and LFS), transformers
downloads (`from_pretrained`, `pipeline`) and a `Trainer` pushing checkpoints while it trains.
"""

from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import HfHubHTTPError, RemoteEntryNotFoundError, RepositoryNotFoundError
from PIL import Image
from transformers import (
    Trainer,
    TrainingArguments,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
    pipeline,
)

from tests.helpers.hub_server import FAKE_TOKEN

LABELS = {0: "cat", 1: "dog", 2: "bird"}


def tiny_vit() -> ViTForImageClassification:
    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=16,
        patch_size=8,
        num_labels=len(LABELS),
        id2label=LABELS,
        label2id={name: idx for idx, name in LABELS.items()},
    )
    return ViTForImageClassification(config)


def tiny_processor() -> ViTImageProcessor:
    return ViTImageProcessor(size={"height": 16, "width": 16})


def save_tiny_model(folder: Path) -> ViTForImageClassification:
    model = tiny_vit()
    model.save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    return model


def assert_same_weights(expected: torch.nn.Module, actual: torch.nn.Module) -> None:
    expected_state, actual_state = expected.state_dict(), actual.state_dict()
    assert expected_state.keys() == actual_state.keys()
    for name, tensor in expected_state.items():
        torch.testing.assert_close(actual_state[name], tensor, rtol=0, atol=0, msg=name)


def commit_messages(server, repo_id: str) -> list[str]:
    return [commit.message for commit in server.repos[repo_id].commits]


# --------------------------------------------------------------------------------------------------


def test_fixture_overrides_offline_mode_and_endpoint(hub_server):
    # The suite runs with HF_HUB_OFFLINE=1, read by huggingface_hub at import: the fixture must undo it.
    assert constants.HF_HUB_OFFLINE is False
    assert constants.ENDPOINT == hub_server.url
    assert huggingface_hub.whoami()["name"] == "user"


def test_create_repo_first_time_then_exist_ok(hub_server):
    first = huggingface_hub.create_repo("user/name", private=True, exist_ok=True, token=FAKE_TOKEN)
    again = huggingface_hub.create_repo("user/name", private=True, exist_ok=True, token=FAKE_TOKEN)

    assert first.repo_id == again.repo_id == "user/name"
    assert hub_server.repos["user/name"].private is True
    assert [r.status for r in hub_server.find_requests("POST", "/api/repos/create")] == [200, 409]
    assert all(r.headers["authorization"] == f"Bearer {FAKE_TOKEN}" for r in hub_server.requests)
    with pytest.raises(HfHubHTTPError) as error:
        huggingface_hub.create_repo("user/name", token=FAKE_TOKEN)  # exist_ok=False
    assert error.value.response.status_code == 409


def test_upload_folder_then_from_pretrained_and_pipeline(hub_server, tmp_path):
    original = save_tiny_model(tmp_path / "model")
    huggingface_hub.create_repo("user/name", private=True)

    HfApi().upload_folder(folder_path=tmp_path / "model", repo_id="user/name", commit_message="Add tiny ViT")

    repo = hub_server.repos["user/name"]
    assert commit_messages(hub_server, "user/name") == ["initial commit", "Add tiny ViT"]
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= repo.files.keys()
    # .safetensors matches the Hub's default LFS rules: it must have gone through the LFS batch + PUT.
    assert "model.safetensors" in repo.commits[-1].lfs_paths
    assert hub_server.find_requests("PUT", "/_fake_lfs/")

    assert_same_weights(original, ViTForImageClassification.from_pretrained("user/name"))
    classifier = pipeline("image-classification", model="user/name", device="cpu")
    predictions = classifier(Image.new("RGB", (32, 32), color=(200, 30, 30)))
    assert {p["label"] for p in predictions} == set(LABELS.values())
    assert hub_server.server_errors == []


def test_regular_upload_mode_sends_content_inline(hub_server, tmp_path):
    hub_server.upload_mode = "regular"
    huggingface_hub.create_repo("user/inline")
    payload = torch.randn(1000).numpy().tobytes()

    HfApi().upload_file(path_or_fileobj=payload, path_in_repo="model.safetensors", repo_id="user/inline")

    assert not hub_server.find_requests(path_contains="/info/lfs/")
    assert hub_server.repos["user/inline"].commits[-1].lfs_paths == frozenset()
    downloaded = huggingface_hub.hf_hub_download("user/inline", "model.safetensors")
    assert Path(downloaded).read_bytes() == payload


def test_missing_file_and_repo_raise_the_client_errors(hub_server):
    hub_server.add_repo("user/seeded", files={"config.json": "{}"})

    assert Path(huggingface_hub.hf_hub_download("user/seeded", "config.json")).read_text() == "{}"
    with pytest.raises(RemoteEntryNotFoundError):
        huggingface_hub.hf_hub_download("user/seeded", "missing.json")
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("user/nope")


def test_injected_failure_makes_upload_fail_until_reset(hub_server):
    huggingface_hub.create_repo("user/flaky")
    api = HfApi()
    hub_server.fail_next(1, status=503, path_contains="/commit/")

    with pytest.raises(HfHubHTTPError) as error:
        api.upload_file(path_or_fileobj=b"v1", path_in_repo="notes.txt", repo_id="user/flaky")
    assert error.value.response.status_code == 503

    hub_server.fail_all(status=500, path_contains="/commit/")
    with pytest.raises(HfHubHTTPError):
        api.upload_file(path_or_fileobj=b"v1", path_in_repo="notes.txt", repo_id="user/flaky")
    assert "notes.txt" not in hub_server.repos["user/flaky"].files

    hub_server.reset_failures()
    api.upload_file(path_or_fileobj=b"v1", path_in_repo="notes.txt", repo_id="user/flaky")
    assert hub_server.repos["user/flaky"].files["notes.txt"] == b"v1"


def test_require_token_rejects_missing_and_wrong_tokens(hub_server):
    huggingface_hub.create_repo("user/locked")
    hub_server.require_token("hf_right")
    api = HfApi()

    with pytest.raises(RepositoryNotFoundError) as missing:  # no token on a repo URL reads as "not found"
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="user/locked", token=False)
    assert missing.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError, match="Invalid user token") as wrong:
        api.whoami(token="hf_wrong")
    assert wrong.value.response.status_code == 401

    api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="user/locked", token="hf_right")
    assert hub_server.repos["user/locked"].files["x.txt"] == b"x"


class RandomImages(torch.utils.data.Dataset):
    def __init__(self, size: int = 8):
        generator = torch.Generator().manual_seed(0)
        self.pixels = torch.randn(size, 3, 16, 16, generator=generator)
        self.labels = torch.randint(0, len(LABELS), (size,), generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"pixel_values": self.pixels[index], "labels": self.labels[index]}


def train_and_push(output_dir: Path, hub_strategy: str, repo_id: str = "user/pushed") -> Trainer:
    args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=4,
        save_steps=2,
        save_strategy="steps",
        per_device_train_batch_size=4,
        push_to_hub=True,
        hub_model_id=repo_id,
        hub_strategy=hub_strategy,
        report_to="none",
        use_cpu=True,
    )
    trainer = Trainer(model=tiny_vit(), args=args, train_dataset=RandomImages(), processing_class=tiny_processor())
    trainer.train()
    trainer.push_to_hub()
    return trainer


def test_trainer_pushes_every_save_and_at_the_end(hub_server, tmp_path):
    train_and_push(tmp_path / "run", hub_strategy="every_save")

    messages = commit_messages(hub_server, "user/pushed")
    assert messages[-1] == "End of training"
    # The step-4 push is skipped when the step-2 one is still running (hub_always_push=False).
    assert "Training in progress, step 2" in messages
    assert hub_server.find_requests("PUT", "/_fake_lfs/")  # model.safetensors and training_args.bin are LFS
    pushed = ViTForImageClassification.from_pretrained("user/pushed")
    assert_same_weights(ViTForImageClassification.from_pretrained(tmp_path / "run"), pushed)
    assert not any(path.startswith("checkpoint-") for path in hub_server.repos["user/pushed"].files)
    assert hub_server.server_errors == []


@pytest.mark.parametrize("hub_strategy", ["checkpoint", "end"])
def test_trainer_hub_strategies(hub_server, tmp_path, hub_strategy):
    train_and_push(tmp_path / "run", hub_strategy=hub_strategy)

    files = hub_server.repos["user/pushed"].files
    if hub_strategy == "end":
        assert commit_messages(hub_server, "user/pushed") == ["initial commit", "End of training"]
        assert not any(path.startswith("last-checkpoint/") for path in files)
    else:  # resumable state goes to last-checkpoint/ (which step it holds depends on push timing)
        assert {"last-checkpoint/optimizer.pt", "last-checkpoint/trainer_state.json"} <= files.keys()
    assert_same_weights(
        ViTForImageClassification.from_pretrained(tmp_path / "run"),
        ViTForImageClassification.from_pretrained("user/pushed"),
    )
    assert hub_server.server_errors == []
