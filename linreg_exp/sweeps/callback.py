"""Hydra's hooks, for tracking (conf/config.yaml names this callback under hydra.callbacks).

A launch (launch.py: a single run, or a sweep and its parent run) opens before any job, so its
helper imports MLflow while the first job starts (the store opens when a run needs it); each
job is handed its description and its tracker just before it runs; the launch closes after the
last job. Hydra gives a task function only the job's config, so the hand-over goes through the
task function's `receive` (app.JobRunner).

Hydra turns an Exception raised in a hook into a warning and goes on: a launch that cannot open
or close raises Abort, which the app reports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.types import HydraContext
from omegaconf import DictConfig

from linreg_exp import signals
from linreg_exp.errors import Abort, ConfigError
from linreg_exp.sweeps import jobs
from linreg_exp.sweeps.launch import Launch, LaunchInfo
from linreg_exp.sweeps.trackers import tracker_for_job


class LaunchCallback(Callback):
    def __init__(self) -> None:
        self._launch: Launch | None = None  # open in this process
        self._info: LaunchInfo | None = None  # travels to jobs that run elsewhere

    @staticmethod
    def launch_in(hydra_context: HydraContext) -> Launch:
        """The launch open in this process, for a launcher that runs jobs here itself (the
        batched launcher): the callback among Hydra's that holds it."""
        for callback in hydra_context.callbacks.callbacks:
            if isinstance(callback, LaunchCallback) and callback._launch is not None:
                return callback._launch
        raise Abort(ConfigError("hydra.callbacks: linreg_exp's launch callback is missing"))

    def __getstate__(self) -> dict[str, Any]:
        """What a job elsewhere (joblib, submitit) gets of its launch: the plain part."""
        return {"_launch": None, "_info": self._info}

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._open(Launch.single, config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._open(Launch.sweep, config)

    def _open(self, how: Callable[[DictConfig], Launch], config: DictConfig) -> None:
        try:
            self._launch = how(config)
        except Exception as error:  # a store or a directory that cannot be used, bad values
            raise Abort(error) from error
        self._info = self._launch.info

    def on_job_start(
        self, config: DictConfig, *, task_function: Callable[[Any], Any], **kwargs: Any
    ) -> None:
        receive = getattr(task_function, "receive", None)
        if self._info is None or receive is None:
            raise Abort(ConfigError("linreg_exp's jobs run only as `python -m linreg_exp`"))
        if self._launch is None:  # a job elsewhere: a job wrapper's handlers give way to ours
            signals.install()
        output_dir = str(config.hydra.runtime.output_dir)
        tracker, owned = tracker_for_job(self._launch, self._info, output_dir)
        made = None if self._launch is None or self._launch.info.multirun else self._launch.made
        receive(jobs.Assignment(jobs.describe(config, self._info), tracker, owned, made))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if self._launch is not None:
            self._launch.announce()

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._close()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._close()

    def _close(self) -> None:
        launch, self._launch = self._launch, None
        if launch is None:
            return
        try:
            closed = launch.close()
        except Exception as error:
            raise Abort(error) from error
        if closed.error is not None:  # a job's outcome could not be logged
            raise Abort(RuntimeError(closed.error))
