"""python -m vit_hf.data.demo DIR: write scikit-learn's 8x8 digits as an imagefolder, for the offline demo.

scikit-learn ships the 1,797 digits inside the package, so the demo needs no network; writing them
as PNG files (grayscale, as they are) runs the same local-folder loader that user datasets take.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

TEST_FRACTION = 0.2
SEED = 0


def write_digits(root: str | Path) -> Path:
    """root/{train,test}/<digit>/<n>.png, a stratified, seeded 80/20 split; returns root. Idempotent."""
    from sklearn.datasets import load_digits  # optional: pip install vit_hf[demo]
    from sklearn.model_selection import train_test_split

    root = Path(root)
    done = root / ".complete"
    if done.exists():
        return root
    digits = load_digits()
    # 0..16 ink levels -> 0..255 gray.
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    splits = train_test_split(
        images, digits.target, test_size=TEST_FRACTION, stratify=digits.target, random_state=SEED
    )
    for split, (xs, ys) in {"train": (splits[0], splits[2]), "test": (splits[1], splits[3])}.items():
        for n, (x, y) in enumerate(zip(xs, ys)):
            folder = root / split / str(y)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x, mode="L").save(folder / f"{n:04d}.png")
    done.touch()
    return root


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m vit_hf.data.demo DIR", file=sys.stderr)
        return 2
    print(f"digits written to {write_digits(argv[0])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
