"""The data path: sources and streams -> splits of (image, label) -> decode once -> stores and loaders.

sources (open and shape a dataset; splits, streaming), decode (bytes -> uint8 RGB, the image
processor), cache (decode once), loaders (device / memory / mmap stores and their DataLoader settings),
pipeline (from splits to what the Trainer iterates), demo (the offline digits). No model, no loop.
"""
