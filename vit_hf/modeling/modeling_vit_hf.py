"""VitHfForImageClassification: ViTForImageClassification with a convolutional stem and/or
global-average pooling, the two options that change inference.

Everything else is transformers' ViT, so its weights, attention kernels and image processor apply.
Imports only torch, transformers and configuration_vit_hf (see that file for why).
"""

import torch
from torch import nn
from transformers import ViTForImageClassification
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.utils.generic import can_return_tuple

from .configuration_vit_hf import VitHfConfig


class ConvStem(nn.Module):
    """Xiao et al. 2021: 3x3 stride-2 convs, each followed by BatchNorm and ReLU, then a 1x1 conv.

    log2(patch_size) convs give the same token grid as the patchify it replaces (two for patch 4 at
    32 px, four for patch 16). Channels double at each conv and the last has hidden_size, as in the
    paper's ViTC-1GF/4GF stems (24-48-96-192 for width 192). Keeps ViTPatchEmbeddings' interface
    (`projection`, `image_size`, `num_patches`, ...), which ViTModel and ViTEmbeddings read.
    """

    def __init__(self, config: VitHfConfig):
        super().__init__()
        size, patch = config.image_size, config.patch_size
        self.image_size = (size, size) if isinstance(size, int) else tuple(size)
        self.patch_size = (patch, patch) if isinstance(patch, int) else tuple(patch)
        self.num_patches = (self.image_size[0] // self.patch_size[0]) * (self.image_size[1] // self.patch_size[1])
        self.num_channels = config.num_channels
        depth = self.patch_size[0].bit_length() - 1  # log2(patch_size) stride-2 convs
        widths = [max(1, config.hidden_size >> (depth - 1 - i)) for i in range(depth)]
        layers, channels = [], config.num_channels
        for width in widths:
            layers += [
                nn.Conv2d(channels, width, kernel_size=3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            channels = width
        self.convs = nn.Sequential(*layers)
        self.projection = nn.Conv2d(channels, config.hidden_size, kernel_size=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.projection(self.convs(pixel_values)).flatten(2).transpose(1, 2)


class VitHfForImageClassification(ViTForImageClassification):
    config_class = VitHfConfig

    def __init__(self, config: VitHfConfig):
        super().__init__(config)
        if config.stem == "conv":
            self.vit.embeddings.patch_embeddings = ConvStem(config)
            self.post_init()  # initializes the stem: modules initialized by super() are flagged and kept

    def pool(self, sequence_output: torch.Tensor) -> torch.Tensor:
        """cls: the CLS token. gap: the mean of the patch tokens, after ViTModel's final LayerNorm, as
        big_vision's pool_type 'gap' (encoder_norm, then mean); the CLS token is left out of the mean."""
        if self.config.pool == "gap":
            return sequence_output[:, 1:].mean(dim=1)
        return sequence_output[:, 0]

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> ImageClassifierOutput:
        outputs = self.vit(
            pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, attention_mask=attention_mask, **kwargs
        )
        logits = self.classifier(self.pool(outputs.last_hidden_state))
        loss = self.loss_function(labels, logits, self.config, **kwargs) if labels is not None else None
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
