"""`python -m vit_hf.run RECIPE.yaml ...`, the documented command: see vit_hf/cli/run.py."""

import sys

from .cli.run import main

if __name__ == "__main__":
    sys.exit(main())
