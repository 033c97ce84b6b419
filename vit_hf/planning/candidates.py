"""The shapes a budget can choose from: width, depth, heads, MLP and tokens per image (patch or stem stride).

The same table drives the planner (plan.py) and the sweep its rule is fitted from (benchmarks/budget_sweep.py),
so a shape's name means one thing everywhere. Ordered from cheapest to largest; `grid` scales with the image:
a patch (or stem stride) of image_size / grid gives grid x grid tokens at any resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

PLAIN, HYBRID = "patch", "conv"  # model.stem: the ViT's own patchify, or a convolutional stem


@dataclass(frozen=True)
class Shape:
    name: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    grid: int  # tokens per side: patch_size = image_size // grid
    stem: str = PLAIN

    def patch_size(self, image_size: int) -> int:
        return max(1, image_size // self.grid)

    def fits(self, image_size: int) -> bool:
        """The patch divides the image, and a conv stem needs a power-of-two stride (its stride-2 convs)."""
        patch = self.patch_size(image_size)
        if image_size % patch or patch < 2:
            return False
        return self.stem == PLAIN or (patch >= 4 and patch & (patch - 1) == 0)

    def model_keys(self, image_size: int) -> dict:
        """The recipe's `model:` section for this shape."""
        return {
            "preset": "vit-tiny",  # overridden field by field below
            "stem": self.stem,
            "patch_size": self.patch_size(image_size),
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
        }

    def train_flops(self, image_size: int, num_labels: int = 10) -> float:
        """FLOPs of one training image (forward + backward = 3 x forward; FLOPs, not MACs), the transformer
        blocks' matrix products and attention only: the patch projection, stem and head add a few percent.
        Checked against torch.utils.flop_counter: 1.125 GFLOP counted for vit-9x192/4 at 32 px, 1.11 here."""
        tokens = self.grid * self.grid + 1
        d, mlp = self.hidden_size, self.intermediate_size
        per_token_macs = 4 * d * d + 2 * d * mlp + 2 * tokens * d  # qkv + out, MLP, scores + values
        return 3 * 2 * per_token_macs * tokens * self.num_hidden_layers


# From cheapest to largest. The two families share widths so the stem's worth is measured on like shapes.
SHAPES: tuple[Shape, ...] = (
    Shape("vit-6x128/8", 128, 6, 4, 512, grid=4),
    Shape("hybrid-6x128/8", 128, 6, 4, 512, grid=4, stem=HYBRID),  # recipes/cifar10_cpu_10m.yaml
    Shape("vit-6x128/4", 128, 6, 4, 512, grid=8),
    Shape("hybrid-6x128/4", 128, 6, 4, 512, grid=8, stem=HYBRID),
    Shape("vit-9x192/4", 192, 9, 12, 384, grid=8),  # recipes/cifar10_tiny.yaml (Lee et al. 2021's ViT)
    Shape("vit-12x192/4", 192, 12, 3, 768, grid=8),  # ViT-Tiny/4
    Shape("hybrid-12x192/4", 192, 12, 3, 768, grid=8, stem=HYBRID),  # recipes/cifar10_hybrid.yaml
    Shape("vit-12x384/4", 384, 12, 6, 1536, grid=8),  # ViT-Small/4: for budgets of hours on a GPU
)
BY_NAME = {shape.name: shape for shape in SHAPES}


def candidates(image_size: int, allow_conv_stem: bool) -> list[Shape]:
    """The shapes a run may take: plain ViTs (a stock ViTForImageClassification), and hybrids when allowed."""
    return [s for s in SHAPES if s.fits(image_size) and (allow_conv_stem or s.stem == PLAIN)]
