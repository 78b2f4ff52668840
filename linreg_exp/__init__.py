"""linreg_exp: the PyTorch linear-regression tutorial as a config-driven Hydra + MLflow run."""

__version__ = "0.1.0"
