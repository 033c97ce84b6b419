"""`python -m vit_hf.run RECIPE --search`: an optuna study over runs that share the decoded data (study.py).
The search space itself is recipe validation: vit_hf/recipe/search_space.py."""
