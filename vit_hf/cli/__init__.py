"""The commands: `python -m vit_hf.run` (train, evaluate, search; cli/run.py, the only reader of argv) and
`python -m vit_hf.report` (compare runs; cli/report.py)."""
