"""The recipe: one YAML file -> a validated Recipe, before any data or model is touched.

schema (sections, fields, constraints, presets), load (YAML + overrides), validate (across sections),
training_args (the one TrainingArguments builder), search_space, help. Imported by everything else;
imports nothing of vit_hf but errors and the metric registry (vit_hf/metrics/__init__.py, plain data).
"""
