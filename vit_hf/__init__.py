"""vit_hf: train a Vision Transformer within a budget on the Hugging Face stack.

`import vit_hf` registers vit_hf's model type (a conv stem or a GAP head, vit_hf/modeling) with
transformers' Auto classes, so that `pipeline(...)` and `AutoModel*.from_pretrained(...)` load such a
model with no remote code. The commands are `python -m vit_hf.run` and `python -m vit_hf.report`.
"""

from .modeling import register_model_type

register_model_type()

__version__ = "0.1.0"
