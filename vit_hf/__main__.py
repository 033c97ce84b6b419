"""`python -m vit_hf RECIPE.yaml ...`: the same as `python -m vit_hf.run` (vit_hf/cli/run.py)."""

import sys

from .cli.run import main

sys.exit(main())
