"""vit_hf: train a Vision Transformer within a budget on the Hugging Face stack."""

__version__ = "0.1.0"
