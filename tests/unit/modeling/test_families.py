"""Fine-tuning each ViT family (vit_hf.modeling.families) from a tiny random checkpoint saved as the Hub holds one.

Per family: the new head and label maps with the backbone as saved; position information resized as the
family's own forward resamples it (the tables against an independent F.interpolate, the prefix tokens kept,
outputs at the new size unchanged, the saved model loading at that size with no flag); layer-wise learning-rate
decay's block index; the exact set of tensors weight decay skips; the checkpoint's normalization and size;
stochastic depth. The timm tests run where timm imports (it needs torchvision) and are skipped elsewhere.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoModelForImageClassification, Trainer

from tests.helpers.datagen import CLASSES
from tests.helpers.models import CHECKPOINT_LABELS, save_checkpoint
from vit_hf.errors import RecipeError
from vit_hf.modeling.build import load_pretrained
from vit_hf.modeling.families import (
    FAMILIES,
    check_progressive_resizing,
    family_of,
    resize_position_information,
    timm_pretrained_cfg,
)
from vit_hf.modeling.preprocessing import Preprocessing, pretrained_preprocessing, processor_preprocessing
from vit_hf.recipe.schema import ModelConfig
from vit_hf.training.optim import decay_parameter_names, layer_decay_groups, layer_index

LABELS = list(CLASSES)  # 3 labels, as many as the checkpoints': their heads have the same size
KINDS = ["vit", "deit_with_teacher", "beit_relative", "beit_shared_absolute", "dinov2_backbone"]
CLASS_NAMES = {"vit": "ViTForImageClassification", "deit_with_teacher": "DeiTForImageClassification",
               "beit_relative": "BeitForImageClassification", "beit_shared_absolute": "BeitForImageClassification",
               "dinov2_backbone": "Dinov2ForImageClassification", "timm_vit": "TimmWrapperForImageClassification"}
FLAGGED = {"vit", "deit_with_teacher"}  # their forward needs interpolate_pos_encoding=True at another size


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("checkpoints")
    return {kind: save_checkpoint(kind, root / kind) for kind in KINDS}


@pytest.fixture(scope="module")
def timm_checkpoint(tmp_path_factory):
    pytest.importorskip("timm")  # timm needs torchvision: not installable for torch's CPU build here
    return save_checkpoint("timm_vit", tmp_path_factory.mktemp("timm") / "timm_vit")


def fine_tuned(checkpoint, image_size: int = 16, labels=LABELS, **model_options):
    torch.manual_seed(0)
    return load_pretrained(ModelConfig(pretrained=str(checkpoint.path), **model_options), {}, labels, image_size)


def as_saved(checkpoint):
    """The checkpoint as its own class loads it (DeiT: WithTeacher; DINOv2: the head-less Dinov2Model)."""
    auto = AutoModel if checkpoint.kind == "dinov2_backbone" else AutoModelForImageClassification
    return auto.from_pretrained(checkpoint.path).eval()


def images(size: int, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(size))


def head_of(model) -> torch.nn.Linear:
    return model.timm_model.get_classifier() if hasattr(model, "timm_model") else model.classifier


def assert_fresh_head(model, checkpoint_head: torch.Tensor | None) -> None:
    """Initialized as the family initializes a missing head: zero bias, weights of std initializer_range."""
    head = head_of(model)
    assert head.out_features == len(LABELS)
    assert torch.equal(head.bias, torch.zeros(len(LABELS)))
    assert head.weight.std().item() == pytest.approx(model.config.initializer_range, rel=0.35)
    if checkpoint_head is not None and checkpoint_head.shape == head.weight.shape:
        assert not torch.equal(head.weight, checkpoint_head)


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    differ = [name for name in a if not torch.equal(a[name], b[name])]
    assert not differ, differ


# 1. The head and the label maps ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_the_head_is_new_for_the_dataset_labels_and_the_backbone_is_the_checkpoints(kind, checkpoints):
    checkpoint = checkpoints[kind]
    model, saved = fine_tuned(checkpoint), as_saved(checkpoint)
    assert type(model).__name__ == CLASS_NAMES[kind]
    assert model.config.num_labels == 3 and model.config.id2label == dict(enumerate(LABELS))
    assert model.config.label2id == {name: i for i, name in enumerate(LABELS)}
    assert_same_tensors(model.base_model.state_dict(), saved.base_model.state_dict())
    assert_fresh_head(model, getattr(saved, "classifier", None) and saved.classifier.weight)
    if kind == "deit_with_teacher":  # trained as DeiTForImageClassification: both teacher-class heads dropped
        assert not hasattr(model, "cls_classifier") and not hasattr(model, "distillation_classifier")
        assert model.deit.embeddings.distillation_token.shape == (1, 1, 32)
    if kind == "dinov2_backbone":  # its classifier reads the CLS token and the mean patch token
        assert model.classifier.in_features == 2 * 32


def test_a_checkpoint_whose_labels_are_the_datasets_keeps_its_head(checkpoints):
    checkpoint = checkpoints["vit"]
    model = fine_tuned(checkpoint, labels=CHECKPOINT_LABELS)
    torch.testing.assert_close(model.classifier.weight, as_saved(checkpoint).classifier.weight, rtol=0, atol=0)


def test_a_checkpoint_with_another_number_of_labels_gets_a_head_of_the_datasets_size(checkpoints):
    model = fine_tuned(checkpoints["beit_relative"], labels=["a", "b", "c", "d", "e"])
    assert model.classifier.out_features == 5 and model.config.id2label[4] == "e"


# 2. Position information at a new size ----------------------------------------------------------------


def bicubic(table: torch.Tensor, prefix: int, grid: int) -> torch.Tensor:
    """The expected resized table: prefix rows as they are, the patch grid resampled bicubically."""
    old = int(math.isqrt(table.shape[1] - prefix))
    patches = table[:, prefix:].reshape(1, old, old, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([table[:, :prefix], patches.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)], dim=1)


def bilinear_bias(table: torch.Tensor, window: int) -> torch.Tensor:
    """The expected BEiT relative position bias table: the (2W-1)^2 grid bilinearly, the 3 CLS entries kept."""
    old = int(math.isqrt(table.shape[0] - 3))
    grid = table[:-3].reshape(1, old, old, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(2 * window - 1, 2 * window - 1), mode="bilinear", align_corners=False)
    return torch.cat([grid.permute(0, 2, 3, 1).reshape((2 * window - 1) ** 2, -1), table[-3:]])


@pytest.mark.parametrize("kind", KINDS)
def test_position_information_is_resized_as_the_familys_forward_resamples_it(kind, checkpoints, tmp_path):
    checkpoint = checkpoints[kind]
    saved, model = as_saved(checkpoint), fine_tuned(checkpoint, image_size=24).eval()
    assert model.config.image_size == 24
    embeddings, before = model.base_model.embeddings, saved.base_model.embeddings
    if before.position_embeddings is not None:
        prefix = 2 if kind == "deit_with_teacher" else 1  # DeiT: CLS and distillation token
        assert embeddings.position_embeddings.shape == (1, prefix + 6 * 6, 32)
        torch.testing.assert_close(embeddings.position_embeddings, bicubic(before.position_embeddings, prefix, 6))
        assert torch.equal(embeddings.position_embeddings[:, :prefix], before.position_embeddings[:, :prefix])
    tables = {n: p for n, p in model.named_parameters() if n.endswith("relative_position_bias_table")}
    old_tables = dict(saved.named_parameters())
    assert len(tables) == {"beit_relative": 2, "beit_shared_absolute": 1}.get(kind, 0)
    for name, table in tables.items():
        torch.testing.assert_close(table, bilinear_bias(old_tables[name], window=6))
    flag = {"interpolate_pos_encoding": True} if kind in FLAGGED else {}
    with torch.no_grad():  # what the checkpoint computes at 24 px is what the resized model computes there
        torch.testing.assert_close(model.base_model(images(24)).last_hidden_state,
                                   saved.base_model(images(24), **flag).last_hidden_state, rtol=1e-5, atol=1e-5)
    model.save_pretrained(tmp_path)  # loads at its size with no interpolate flag, the way pipeline loads it
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(images(24)).logits, model(images(24)).logits, rtol=0, atol=0)


def test_an_image_size_that_is_not_a_multiple_of_the_patch_is_a_recipe_error(checkpoints):
    with pytest.raises(RecipeError, match="data.image_size: 22 is not a multiple of the DeiT checkpoint's patch size "
                                          "4; use 20 or 24"):
        fine_tuned(checkpoints["deit_with_teacher"], image_size=22)


def test_a_family_vit_hf_does_not_know_cannot_be_resized_and_says_what_works(tmp_path):
    from transformers import SwinConfig, SwinForImageClassification

    SwinForImageClassification(SwinConfig(image_size=16, patch_size=4, embed_dim=16, depths=[1], num_heads=[1],
                                          window_size=2, num_labels=3)).save_pretrained(tmp_path)
    checkpoint = SimpleNamespace(path=tmp_path)
    with pytest.raises(RecipeError, match=r"data.image_size: 24 differs from the checkpoint's 16, and vit_hf resizes "
                                          r"position information only for ViT \(vit/vit_hf\), DeiT.*not model_type "
                                          r"'swin'; use data.image_size 16"):
        fine_tuned(checkpoint, image_size=24)
    assert fine_tuned(checkpoint, image_size=16).classifier.out_features == 3  # at its own size it fine-tunes


def timm_stand_in(**timm_model):
    """A TimmWrapper model as far as resizing reads it (the real one needs timm): config and patch embedding."""
    from transformers import TimmWrapperConfig

    patch_embed = SimpleNamespace(img_size=(16, 16), patch_size=(4, 4))
    return SimpleNamespace(config=TimmWrapperConfig(architecture="vit_tiny_patch16_224"),
                           timm_model=SimpleNamespace(patch_embed=patch_embed, **timm_model))


def test_a_timm_model_without_set_input_size_is_a_recipe_error_before_training():
    with pytest.raises(RecipeError, match="data.image_size: 24 differs from the checkpoint's 16, and timm's "
                                          "vit_tiny_patch16_224 has no set_input_size.*use data.image_size 16"):
        resize_position_information(timm_stand_in(), 24)
    resize_position_information(timm_stand_in(), 16)  # at its own size nothing is resized


def test_progressive_resizing_is_a_recipe_error_for_timm_only(checkpoints):
    with pytest.raises(RecipeError, match="data.progressive_start_size: a timm model's forward takes no "
                                          "interpolate_pos_encoding flag"):
        check_progressive_resizing(timm_stand_in())
    for kind in KINDS:
        check_progressive_resizing(fine_tuned(checkpoints[kind]))


# 3. Layer-wise learning-rate decay ---------------------------------------------------------------------


# Parameter-name prefix -> layer (0: embeddings, i + 1: block i, 3: after the 2 blocks). Every parameter of the
# fine-tuned model must fall under exactly one prefix.
LAYERS = {
    "vit": {"vit.embeddings.": 0, "vit.layers.0.": 1, "vit.layers.1.": 2, "vit.layernorm.": 3, "classifier.": 3},
    "deit_with_teacher": {"deit.embeddings.": 0, "deit.layers.0.": 1, "deit.layers.1.": 2, "deit.layernorm.": 3,
                          "classifier.": 3},
    "beit_relative": {"beit.embeddings.": 0, "beit.layers.0.": 1, "beit.layers.1.": 2, "beit.pooler.": 3,
                      "classifier.": 3},
    # BEiT's own layer decay puts the shared relative position bias with the head (timm's with the stem)
    "beit_shared_absolute": {"beit.embeddings.": 0, "beit.layers.0.": 1, "beit.layers.1.": 2,
                             "beit.shared_position_bias.": 3, "beit.pooler.": 3, "classifier.": 3},
    "dinov2_backbone": {"dinov2.embeddings.": 0, "dinov2.encoder.layer.0.": 1, "dinov2.encoder.layer.1.": 2,
                        "dinov2.layernorm.": 3, "classifier.": 3},
}


@pytest.mark.parametrize("kind", KINDS)
def test_layer_decay_gives_each_parameter_its_blocks_learning_rate(kind, checkpoints):
    model = fine_tuned(checkpoints[kind])
    family = family_of(model.config)
    for name, _ in model.named_parameters():
        (layer,) = [layer for prefix, layer in LAYERS[kind].items() if name.startswith(prefix)]
        assert layer_index(name, 2, family) == layer, name
    groups = layer_decay_groups(model, set(), weight_decay=0.0, learning_rate=1.0, layer_decay=0.5)
    assert {group["layer"]: group["lr"] for group in groups} == {0: 0.125, 1: 0.25, 2: 0.5, 3: 1.0}


TIMM = next(family for family in FAMILIES if family.name == "timm")


@pytest.mark.parametrize("name, layer", [
    ("timm_model.cls_token", 0), ("timm_model.reg_token", 0), ("timm_model.pos_embed", 0),
    ("timm_model.patch_embed.proj.weight", 0), ("timm_model.norm_pre.weight", 0),
    ("timm_model.blocks.0.norm1.weight", 1), ("timm_model.blocks.0.ls1.gamma", 1),
    ("timm_model.blocks.3.attn.qkv.weight", 4), ("timm_model.blocks.11.mlp.fc2.bias", 12),
    ("timm_model.norm.weight", 13), ("timm_model.fc_norm.weight", 13), ("timm_model.head.weight", 13),
])
def test_timm_parameter_names_get_timm_vit_group_matcher_layers(name, layer):
    """timm's VisionTransformer.group_matcher: stem (cls/reg token, pos_embed, patch_embed, norm_pre), blocks.N,
    then the rest; here for a 12-block model, by name alone."""
    assert layer_index(name, 12, TIMM) == layer


# 4. Weight decay ---------------------------------------------------------------------------------------


# The tensors of more than one dimension that are not weight-decayed; every 1-D one is not either (biases, norms,
# layer scales: BEiT's lambda_1/lambda_2, DINOv2's layer_scale*.lambda1), and everything else is.
UNDECAYED = {
    "vit": {"vit.embeddings.cls_token", "vit.embeddings.position_embeddings"},
    "deit_with_teacher": {"deit.embeddings.cls_token", "deit.embeddings.distillation_token",
                          "deit.embeddings.position_embeddings"},
    "beit_relative": {"beit.embeddings.cls_token", "beit.layers.0.relative_position_bias.relative_position_bias_table",
                      "beit.layers.1.relative_position_bias.relative_position_bias_table"},
    "beit_shared_absolute": {"beit.embeddings.cls_token", "beit.embeddings.position_embeddings",
                             "beit.shared_position_bias.relative_position_bias_table"},
    "dinov2_backbone": {"dinov2.embeddings.cls_token", "dinov2.embeddings.mask_token",
                        "dinov2.embeddings.position_embeddings"},
}
LAYER_SCALES = {"beit_relative": {"beit.layers.0.lambda_1", "beit.layers.1.lambda_2"},
                "dinov2_backbone": {"dinov2.encoder.layer.0.layer_scale1.lambda1",
                                    "dinov2.encoder.layer.1.layer_scale2.lambda1"}}


def assert_decay_split(model, undecayed: set[str]) -> set[str]:
    decayed = set(decay_parameter_names(model, Trainer.get_decay_parameter_names(None, model)))
    for name, parameter in model.named_parameters():
        expected = parameter.ndim > 1 and name not in undecayed
        assert (name in decayed) == expected, name
    assert undecayed <= {name for name, _ in model.named_parameters()}  # the listed names exist
    return decayed


@pytest.mark.parametrize("kind", KINDS)
def test_weight_decay_skips_exactly_position_tables_tokens_and_1d_parameters(kind, checkpoints):
    decayed = assert_decay_split(fine_tuned(checkpoints[kind]), UNDECAYED[kind])
    assert not LAYER_SCALES.get(kind, set()) & decayed


# 5. The checkpoint's preprocessing ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_the_checkpoints_own_processor_gives_size_mean_and_std(kind, checkpoints):
    """ViT: size; DeiT, BEiT, DINOv2 (Bit): shortest edge or size, then a 16 px center crop: the crop counts."""
    checkpoint = checkpoints[kind]
    found = pretrained_preprocessing(str(checkpoint.path))
    assert found["image_size"] == 16
    assert list(found["mean"]) == checkpoint.mean and list(found["std"]) == checkpoint.std


def test_timms_processor_layout_is_read_from_its_data_config():
    """TimmWrapperImageProcessor keeps timm's resolved data config (a stand-in here: building one needs timm)."""
    processor = SimpleNamespace(data_config={"input_size": (3, 384, 384), "mean": (0.5, 0.5, 0.5),
                                             "std": (0.25, 0.25, 0.25), "crop_pct": 1.0, "crop_mode": "center",
                                             "interpolation": "bicubic"})
    assert processor_preprocessing(processor) == {"image_size": 384, "mean": [0.5] * 3, "std": [0.25] * 3}


@pytest.mark.parametrize("crop_pct", [1.0, 0.95, 0.9, 0.875])
def test_the_timm_config_records_the_trained_preprocessing_with_vit_hf_geometry(crop_pct):
    from transformers import TimmWrapperConfig

    config = TimmWrapperConfig(architecture="vit_tiny_patch16_224", pretrained_cfg={"tag": "kept", "crop_pct": 0.9})
    for size in range(8, 520):
        timm_pretrained_cfg(config, Preprocessing(size, crop_pct, [0.1, 0.2, 0.3], [0.4, 0.5, 0.6]))
        scale_size = math.floor(size / config.pretrained_cfg["crop_pct"])  # timm's eval transform (transforms_factory)
        assert scale_size == round(size / crop_pct), size  # vit_hf's decode_image and saved processor
    assert config.pretrained_cfg["input_size"] == [3, 519, 519] and config.pretrained_cfg["tag"] == "kept"
    assert (config.pretrained_cfg["mean"], config.pretrained_cfg["std"]) == ([0.1, 0.2, 0.3], [0.4, 0.5, 0.6])
    assert config.to_dict()["pretrained_cfg"] == config.pretrained_cfg  # written into config.json


# Stochastic depth --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_drop_path_hooks_every_familys_residual_branches_and_turns_its_own_off(kind, checkpoints):
    model = fine_tuned(checkpoints[kind], drop_path_rate=0.5)
    family = family_of(model.config)
    blocks = model.get_submodule(family.blocks)
    hooks = [sum(len(block.get_submodule(branch)._forward_hooks) for branch in family.branches) for block in blocks]
    assert hooks == [0, 2]  # rates linear in depth from 0: the first block is never dropped
    if family.native_drop_path:  # BEiT's config has 0.1 of its own, which is turned off, not stacked
        assert model.config.drop_path_rate == 0.0
    x = images(16)
    with torch.no_grad():
        assert not torch.allclose(model.train()(x).logits, model.eval()(x).logits)


# timm, where it imports ------------------------------------------------------------------------------------


def test_timm_head_backbone_and_label_maps(timm_checkpoint, tmp_path):
    model = fine_tuned(timm_checkpoint)
    model.save_pretrained(tmp_path)  # TimmWrapperConfig saves label names, not id2label
    assert json.loads((tmp_path / "config.json").read_text())["label_names"] == LABELS
    saved = AutoModelForImageClassification.from_pretrained(timm_checkpoint.path)
    assert type(model).__name__ == CLASS_NAMES["timm_vit"] and model.config.id2label == dict(enumerate(LABELS))
    head = {f"timm_model.{name}" for name, _ in model.timm_model.get_classifier().named_parameters(prefix="head")}
    ours, theirs = model.state_dict(), saved.state_dict()
    assert_same_tensors({k: v for k, v in ours.items() if k not in head}, {k: v for k, v in theirs.items()
                                                                           if k not in head})
    assert_fresh_head(model, saved.timm_model.get_classifier().weight)


def test_timm_position_embeddings_resize_with_timms_antialiased_bicubic_and_reload(timm_checkpoint, tmp_path):
    saved = AutoModelForImageClassification.from_pretrained(timm_checkpoint.path).eval()
    model = fine_tuned(timm_checkpoint, image_size=24).eval()
    prefix = saved.timm_model.num_prefix_tokens  # CLS and one register token
    assert prefix == 2 and model.timm_model.pos_embed.shape == (1, prefix + 36, 32)
    old = saved.timm_model.pos_embed
    patches = F.interpolate(old[:, prefix:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2), size=(6, 6), mode="bicubic",
                            align_corners=False, antialias=True).permute(0, 2, 3, 1).reshape(1, 36, -1)
    torch.testing.assert_close(model.timm_model.pos_embed, torch.cat([old[:, :prefix], patches], dim=1))
    assert model.config.model_args["img_size"] == 24
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(images(24)).logits, model(images(24)).logits, rtol=0, atol=0)


def test_timm_layer_decay_counts_its_blocks_and_weight_decay_follows_its_no_weight_decay(timm_checkpoint):
    model = fine_tuned(timm_checkpoint)
    groups = layer_decay_groups(model, set(), weight_decay=0.0, learning_rate=1.0, layer_decay=0.5)
    assert {group["layer"]: group["lr"] for group in groups} == {0: 0.125, 1: 0.25, 2: 0.5, 3: 1.0}
    assert_decay_split(model, {"timm_model.cls_token", "timm_model.reg_token", "timm_model.pos_embed"})


def test_timm_processor_is_read_from_the_checkpoint_config(timm_checkpoint):
    found = pretrained_preprocessing(str(timm_checkpoint.path))
    assert found == {"image_size": 16, "mean": timm_checkpoint.mean, "std": timm_checkpoint.std}
