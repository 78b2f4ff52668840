"""Running a Task (messages.Task): a function named 'module:name', imported where it runs."""

from __future__ import annotations

import importlib
from typing import Any


def run_task(function: str, *args: Any) -> list[str]:
    """Call `function` with `args`; it returns the paths of the files it wrote."""
    module, _, name = function.partition(":")
    return [str(path) for path in getattr(importlib.import_module(module), name)(*args)]
