"""Model options beyond plain ViTForImageClassification, each opt-in (recipe keys under `model:`).

- stem: conv, pool: gap change inference, so they need a class: VitHfForImageClassification
  (model_type "vit_hf", modeling_vit_hf.py). Two routes load a saved one:
  with vit_hf imported, the Auto classes (and so `pipeline`) know "vit_hf" (`register_model_type`, which
  vit_hf/__init__.py calls), no remote code runs; without vit_hf, config.json's `auto_map` names the
  configuration_vit_hf.py and modeling_vit_hf.py that save_pretrained copies beside the weights, which
  `trust_remote_code=True` loads.
- posemb: sincos2d (posemb.py) and drop_path_rate (drop_path.py) leave inference a plain ViT: they
  work on either class, and a model with only these saves as a ViTForImageClassification.
"""

from transformers import AutoConfig, AutoModelForImageClassification

from .configuration_vit_hf import VitHfConfig
from .modeling_vit_hf import ConvStem, VitHfForImageClassification


def register_model_type() -> None:
    """Teach transformers' Auto classes the "vit_hf" model type, and have save_pretrained copy its code."""
    AutoConfig.register(VitHfConfig.model_type, VitHfConfig, exist_ok=True)
    AutoModelForImageClassification.register(VitHfConfig, VitHfForImageClassification, exist_ok=True)
    VitHfConfig.register_for_auto_class()
    VitHfForImageClassification.register_for_auto_class("AutoModelForImageClassification")


__all__ = ["ConvStem", "VitHfConfig", "VitHfForImageClassification", "register_model_type"]
