"""The data path: sources -> decode -> augmentation."""
