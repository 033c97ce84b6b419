"""vit_hf: train a Vision Transformer within a budget on the Hugging Face stack."""

from . import modeling  # noqa: F401 - registers model_type "vit_hf" with AutoConfig/AutoModelForImageClassification

__version__ = "0.1.0"
