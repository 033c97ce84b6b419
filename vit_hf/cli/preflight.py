"""Checks that need the file system but no data or model: they fail before anything is loaded.

    check_output_dir(args.output_dir)            # exists or can be made, and a file can be written there
    check_weight_files(recipe)                   # local weights are safetensors, never pickles

Both raise RecipeError (exit code 2) naming the key, the value and what would be right.
"""

from __future__ import annotations

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
