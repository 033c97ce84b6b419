"""Checks that need the file system but no data or model: they fail before anything is loaded.

    check_output_dir(args.output_dir)            # exists or can be made, and a file can be written there
    check_weight_files(recipe)                   # local weights are safetensors, never pickles
    check_gpu_decode(recipe.data, args)          # data.gpu_decode: a CUDA device and torchvision

Each raises RecipeError (exit code 2) naming the key, the value and what would be right.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

from ..errors import RecipeError

# Weight files that are Python pickles. transformers 5.24 loads them with torch.load(weights_only=True),
# which refuses arbitrary objects; vit_hf goes further and reads local weights only from safetensors,
# which hold tensors and nothing else.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def check_output_dir(path: str) -> None:
    """output_dir exists (made if missing) and takes a new file: a real write, as os.access says yes to root."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix="_vit_hf_probe"):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        message = f"training.output_dir: cannot write to {path!r} ({reason}); choose a writable folder"
        raise RecipeError(message) from None


def check_weight_files(recipe) -> None:
    """model.pretrained and a resume folder, when local, must hold safetensors weights, not only pickles."""
    for key, path in (("model.pretrained", recipe.model.pretrained), ("resume", recipe.resume),
                      ("training.resume_from_checkpoint", recipe.training.get("resume_from_checkpoint"))):
        if isinstance(path, str) and Path(path).is_dir():
            _check_safetensors(key, Path(path))


def _check_safetensors(key: str, folder: Path) -> None:
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES and p.name != "training_args.bin")
    if pickles:
        raise RecipeError(
            f"{key}: {str(folder)!r} holds its weights only as pickle files {pickles}, and vit_hf loads weights "
            "from safetensors only (a pickle can run code when loaded). If you trust the file, convert it once: "
            "python -c \"from transformers import AutoModelForImageClassification as M; "
            f"M.from_pretrained('{folder}').save_pretrained('{folder}')\""
        )


def check_gpu_decode(data, args) -> None:
    """data.gpu_decode: true decodes each batch's JPEGs on a CUDA device with torchvision: both must be there.
    `args` (TrainingArguments): its device is only read when data.gpu_decode is on (reading it sets up devices)."""
    if not data.gpu_decode:
        return
    device = args.device
    if device.type != "cuda":
        raise RecipeError(f"data.gpu_decode: true decodes JPEGs on a CUDA device, and this run trains on {device}: set "
                          "data.gpu_decode: false (the DataLoader workers decode them), or run on a CUDA GPU")
    if importlib.util.find_spec("torchvision") is None:
        raise RecipeError("data.gpu_decode: true decodes with torchvision.io.decode_jpeg, and torchvision is not "
                          "installed: pip install vit_hf[gpu-decode] (torchvision built for the installed torch), or "
                          "set data.gpu_decode: false")
