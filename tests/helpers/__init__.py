"""What the tests share: generated data (datagen), a local Hub (hub_server), tiny recipes (recipes),
tiny models and trainers (models, trainers), where things are, and a free port for torchrun."""

import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED_CIFAR10 = ROOT.parent / "shared" / "datasets" / "cifar10"


def free_port() -> int:
    """A TCP port nothing listens on now: torchrun's --master_port, so that two launches never meet."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
