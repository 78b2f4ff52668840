"""The tags every run gets from where it was made: MLflow's own context (user, source type),
named after linreg_exp, linreg_exp's version and, from a git checkout, its commit and state."""

from __future__ import annotations

import functools
from pathlib import Path

from mlflow.tracking.context.registry import resolve_tags

from linreg_exp import __version__
from linreg_exp.vocab import Tag

SOURCE_NAME = "linreg_exp"  # the UI's Source column: the entry point, not the process logging


@functools.cache
def default_tags() -> dict[str, str]:
    """What MLflow's fluent API would add, and the commit of linreg_exp's source with whether
    its work tree had changes, so the run's reproduce command is not taken on trust."""
    tags = {**resolve_tags(), "mlflow.source.name": SOURCE_NAME, Tag.VERSION: __version__}
    source = Path(__file__).resolve().parents[1]
    try:
        import git

        repo = git.Repo(source, search_parent_directories=True)
        tags["mlflow.source.git.commit"] = repo.head.commit.hexsha
        tags[Tag.GIT_DIRTY] = str(repo.is_dirty(untracked_files=True)).lower()
    except Exception:  # not a git checkout (an installed wheel), or no git at all
        tags.pop("mlflow.source.git.commit", None)
    return tags
