"""Start-up speed: why `python -m linreg_exp` ends about when the bare tutorial script would.

A default run's own work (composing its config, importing torch, training, drawing) is what the
bare script pays too, and less: the trainer's own SGD never builds a torch.optim optimizer, whose
first construction imports torch._dynamo (about 1 s of CPU). Two things would add
seconds to it, and are kept off the job's path (benchmarks/results.md says what each costs):

1. MLflow. Importing it and opening the store is slow. A helper process (tracking/helper.py),
   started before Hydra composes the config (tracking/helper.start_early) and taken by the
   launch (sweeps/launch.py), does that beside the job's own imports (the store's own module
   too: uris.store_module),
   and the job asks for the store only once its data is read (engine.py): by then the helper
   has about imported MLflow, and a run rejected before (its device, say) made no store. Then
   the helper imports HELPER_PRELOAD, the report's plotting, while the job trains: it draws the
   run's pictures (a post-run Task) without loading matplotlib then.
2. Teardown. Once the exit code is decided and every run is stored, the process ends at once,
   without the interpreter destroying torch's and MLflow's modules after the last line of output.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
from typing import NoReturn

HELPER_PRELOAD = ("linreg_exp.report.plots",)


def exit_now(code: int) -> NoReturn:
    """Flush the job's log file and the standard streams, then end the process with `code`."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe (`| head`) must not change the code
            stream.flush()
    os._exit(code)


class TeardownSkipped:
    """An exit handler, registered first so that it runs after every other (the launch's, the
    libraries'): it ends the process with `code` once main() has set it."""

    def __init__(self) -> None:
        self.code: int | None = None  # None: main() did not finish, Python exits as usual
        atexit.register(self._exit)

    def _exit(self) -> None:
        if self.code is not None:
            exit_now(self.code)
