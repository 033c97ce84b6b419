"""The Hugging Face Hub: pushes that never cost the run (push), resume: hub (resume), the model card (card)."""
