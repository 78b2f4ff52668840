"""linreg_exp: the PyTorch linear-regression tutorial as a config-driven Hydra + MLflow run."""

import os

# MLflow resets its logger to INFO when it is imported, which happens inside the job, after
# Hydra configured logging: keep its schema-migration chatter out unless the user asks for it.
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

__version__ = "0.1.0"
