"""What the tests share: generated data (datagen), a local Hub (hub_server), tiny recipes (recipes),
tiny models and trainers (models, trainers), and where things are."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED_CIFAR10 = ROOT.parent / "shared" / "datasets" / "cifar10"
