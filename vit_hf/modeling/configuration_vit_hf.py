"""VitHfConfig: a ViTConfig with the two options that change inference, the stem and the pooling.

This file and modeling_vit_hf.py are copied next to every saved VitHf model (`auto_map` in its
config.json), so that `trust_remote_code=True` loads it without vit_hf installed: they import only
torch, transformers (with its huggingface_hub) and each other.
"""

from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import ViTConfig


@strict
class VitHfConfig(ViTConfig):
    r"""
    stem (`str`, *optional*, defaults to `"patch"`):
        `"patch"`: ViT's patch_size x patch_size projection. `"conv"`: a stack of 3x3 stride-2
        convolutions with BatchNorm and ReLU, then a 1x1 convolution to hidden_size (Xiao et al. 2021,
        "Early convolutions help transformers see better"); one stride-2 conv per factor 2 of patch_size.
    pool (`str`, *optional*, defaults to `"cls"`):
        `"cls"`: classify the CLS token (ViT). `"gap"`: classify the mean of the patch tokens after the
        final LayerNorm (big_vision's `pool_type: gap`); the CLS token stays in the sequence, unread.
    """

    model_type = "vit_hf"

    stem: Literal["patch", "conv"] = "patch"
    pool: Literal["cls", "gap"] = "cls"
