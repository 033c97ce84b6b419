"""Fixed 2-D sin-cos position embeddings (big_vision `posemb: sincos2d`; MoCo v3), never trained.

They stay a ViT's `position_embeddings` parameter, filled by formula and frozen, so the saved model
is a plain ViT checkpoint any ViT loader reads. `config.posemb = "sincos2d"` records the choice, so
that fine-tuning the checkpoint (models.load_pretrained) keeps them frozen and recomputes them for a
new resolution instead of interpolating.
"""

from __future__ import annotations

import torch

SINCOS2D = "sincos2d"


def sincos2d_table(grid_h: int, grid_w: int, width: int, temperature: float = 10_000.0) -> torch.Tensor:
    """[grid_h * grid_w, width], row-major over the grid: big_vision's posemb_sincos_2d.

    A quarter of the channels each: sin(x * omega), cos(x * omega), sin(y * omega), cos(y * omega),
    with omega = temperature ** -(k / (width/4 - 1)), k = 0 .. width/4 - 1.
    """
    if width % 4 or width < 8:
        raise ValueError(f"sincos2d position embeddings need a width divisible by 4 and >= 8, got {width}")
    y, x = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    quarter = width // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float64) / (quarter - 1))
    x = x.flatten()[:, None] * omega[None, :]
    y = y.flatten()[:, None] * omega[None, :]
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1).float()


def use_sincos2d(model) -> None:
    """Fill the ViT's position embeddings by formula for its current grid, freeze them, record it.

    The CLS token's position is zeros, as in MoCo v3 (big_vision's sincos2d ViT has no CLS token).
    """
    embeddings = model.base_model.embeddings
    height, width = embeddings.patch_embeddings.image_size
    patch_h, patch_w = embeddings.patch_embeddings.patch_size
    hidden = embeddings.position_embeddings.shape[-1]
    table = sincos2d_table(height // patch_h, width // patch_w, hidden)
    table = torch.cat([torch.zeros(1, hidden), table])[None]
    with torch.no_grad():
        embeddings.position_embeddings.copy_(table)
    embeddings.position_embeddings.requires_grad_(False)
    model.config.posemb = SINCOS2D


def has_fixed_posemb(config) -> bool:
    return getattr(config, "posemb", None) == SINCOS2D
