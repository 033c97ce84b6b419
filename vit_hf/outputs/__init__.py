"""What a run leaves in output_dir and reads back: its layout (checkpoints, budget state), the lock, the
end-of-run summary, the plots, and runs compared side by side."""
