"""Training augmentation, batched on the training device: ops, policies, the composed transform, Mixup/CutMix,
progressive resizing."""
