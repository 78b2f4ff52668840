"""`make bench`: what linreg_exp costs on top of the bare tutorial (see bench.py)."""
