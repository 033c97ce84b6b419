"""The training loop: train (the story), build (the pieces), trainer (VitTrainer), batches, budget and
schedule, checkpoints and resume, stopping (signals, non-finite), monitor, distributed, EMA, optimizer
groups, metrics, evaluation-only mode, the host-sync check."""
