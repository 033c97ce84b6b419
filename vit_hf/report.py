"""`python -m vit_hf.report OUTPUT_DIR ...`, the documented command: see vit_hf/cli/report.py."""

import sys

from .cli.report import main

if __name__ == "__main__":
    sys.exit(main())
