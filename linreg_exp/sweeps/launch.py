"""What a launch holds open in the launching process: the tracker its runs are recorded through
(for a sweep, the owner of its parent run) and its sweep dir's lock; and what every job of it
needs to know, wherever it runs (`LaunchInfo`, which travels to jobs elsewhere with the callback).

A launch closes when Hydra says the run or the sweep ended, or else when the process exits:
Hydra skips its end hooks after a failed job, a sweep its sweeper rejected, or a stop signal.
Then the parent ends KILLED if a signal stopped the process, FAILED otherwise.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import shlex
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf

from linreg_exp import signals, startup, tracking
from linreg_exp.errors import Abort, ConfigError
from linreg_exp.report import sweep as sweep_report
from linreg_exp.schema import CONFIG_DIR, TableConfig, validate
from linreg_exp.sweeps import naming
from linreg_exp.sweeps.hydra_internals import BASIC_LAUNCHER
from linreg_exp.sweeps.pruning import BATCHED_LAUNCHER, prepare_study
from linreg_exp.tracking.messages import Closed, Open, Parent, describe_error
from linreg_exp.tracking.recorder import Tracker
from linreg_exp.tracking.spool import is_offline
from linreg_exp.tracking.uris import mask_override, resolve_tracking_uri, run_url
from linreg_exp.vocab import FAILED, KILLED, Tag

log = logging.getLogger(__name__)


Jobs = Literal["here", "workers", "scheduler"]


@dataclass(frozen=True)
class LaunchInfo:
    """What every job of a launch needs, wherever it runs (picklable)."""

    tracking_uri: str
    experiment_name: str
    multirun: bool
    swept: tuple[str, ...] = ()  # the keys a sweep varies: they name its jobs' runs
    parent_run_id: str | None = None  # known before any job starts where jobs run elsewhere
    # (jobs_need_parent_id); for the batched launcher's writers, once they start (writers)
    jobs: Jobs = "here"  # where the jobs run (messages.Parent)
    outage_timeout: float = 300.0  # mlflow.outage_timeout


@dataclass(frozen=True)
class MadeDirs:
    """A run's or sweep's dir and the highest dir above it that its launch found missing
    (`outputs/` on a first run): what a launch rejected before any run removes, so that bad
    input leaves nothing behind, and nothing another run has put there since."""

    path: Path
    top: Path

    @classmethod
    def before_making(cls, path: Path) -> MadeDirs | None:
        """What making `path` (resolved) will create; None if it exists."""
        top = None
        for each in (path, *path.parents):
            if each.exists():
                break
            top = each
        return None if top is None else cls(path, top)

    def remove(self) -> None:
        """`path`, then each dir above it up to `top` that is left empty."""
        shutil.rmtree(self.path, ignore_errors=True)
        for parent in self.path.parents:
            if not parent.is_relative_to(self.top):
                break
            try:
                parent.rmdir()
            except OSError:  # another run's output is in it now (or it is gone)
                break


def sweep_key(sweep_dir: Path) -> str:
    """A sweep's identity, safe to search by: a hash of its (resolved) sweep dir, on its parent
    run and, for an Optuna search, on its trials."""
    return hashlib.sha256(str(sweep_dir).encode()).hexdigest()[:16]


# Hydra overrides that say where a launch writes, not what it runs: a sweep's command leaves them
# out (rerun as it is, it makes a new sweep; with hydra.sweep.dir=<its dir> added, it resumes).
WHERE_OVERRIDES = ("hydra.mode=", "hydra.sweep.dir=", "hydra.run.dir=")


def config_flags(hydra: DictConfig) -> list[str]:
    """The flags that name the config dirs and name a launch was composed from (absolute, from
    its `hydra` node), so that its command runs the same from any directory."""
    flags = []
    for source in hydra.runtime.config_sources:
        if source.provider == "main" and Path(str(source.path)) != CONFIG_DIR:
            flags += ["--config-path", str(source.path)]
        elif source.provider == "command-line":
            flags += ["--config-dir", str(source.path)]
    if hydra.job.config_name != "config":
        flags += ["--config-name", str(hydra.job.config_name)]
    return flags


def sweep_command(hydra: DictConfig) -> str:
    """The command that runs the sweep again: its config flags, its Hydra overrides (the
    launcher and the sweeper's settings: `hydra/launcher=joblib hydra.launcher.n_jobs=2`,
    `hydra.sweeper.n_trials=4`) but where it writes, then its overrides, passwords masked."""
    kept = [str(o) for o in hydra.overrides.hydra if not str(o).startswith(WHERE_OVERRIDES)]
    overrides = [mask_override(o) for o in [*kept, *hydra.overrides.task]]
    return shlex.join(["python", "-m", "linreg_exp", "-m", *config_flags(hydra), *overrides])


def jobs_of(launcher: str) -> Jobs:
    """Where a launcher runs the jobs: in this process, in its workers, or on a scheduler. The
    batched launcher counts as workers: it runs its jobs here, but records them through helper
    processes of its own, on a parent run that exists before it starts."""
    if launcher == BASIC_LAUNCHER:
        return "here"
    return "scheduler" if "submitit" in launcher else "workers"


def jobs_need_parent_id(launcher: str) -> bool:
    """Whether jobs in other processes need the parent run's id before the first starts
    (joblib's workers, submitit's jobs: the launch waits for its store to create it). The
    batched launcher's jobs run here; only its extra writers need the id, and they are given it
    once the jobs are composed (Launch.open_writers), so that the launching process composes
    the sweep while its helpers import MLflow, and imports torch while they open the store:
    about 2 s of each."""
    return jobs_of(launcher) != "here" and BATCHED_LAUNCHER not in launcher


def check_shared(config: DictConfig, swept: Mapping[str, str]) -> None:
    """What every job of a sweep shares and no schema can check, checked before its parent run
    or sweep dir exists, so that a sweep no job can run is one line and leaves nothing: a device
    the machine lacks, a table that cannot be used. Swept values are each job's own to check
    (`job N rejected`). torch and pandas are imported only where there is such a thing."""
    if config.device.name == "cuda" and not any(key.startswith("device") for key in swept):
        from linreg_exp.train import resolve_device

        resolve_device("cuda")
    data = config.data
    if "path" in data and not any(key.startswith("data") for key in swept):
        from linreg_exp import data as datasets
        from linreg_exp.train import Scaling

        if OmegaConf.get_type(data) is not TableConfig:  # `--cfg`'s printed config: plain
            data = OmegaConf.merge(OmegaConf.structured(TableConfig), data)
        typed = OmegaConf.to_object(data)
        assert isinstance(typed, TableConfig)
        splits = datasets.load(typed, config.seed, Path.cwd(), "check")
        if config.model.standardize:
            Scaling.of(splits.train)


class Launch:
    """An open launch: its tracker, its lock, and closing them however the process ends."""

    def __init__(
        self,
        info: LaunchInfo,
        tracker: Tracker,
        lock: FileLock | None = None,
        made: MadeDirs | None = None,
    ) -> None:
        self.info, self.tracker, self.lock = info, tracker, lock
        self.made = made  # the run's or sweep's dirs this launch makes
        self.stopped_by: int | None = None  # a stop signal this process received
        self.extra_writers: list[Tracker] = []  # helper processes recording runs in parallel
        self._announced = False
        signals.install(on_stop=self._note_stop)
        atexit.register(self._close_at_exit)

    @classmethod
    def single(cls, config: DictConfig) -> Launch:
        """A single run: checked before its output dir exists, its helper starting at once."""
        validate(config)
        uri = resolve_tracking_uri(config.mlflow.tracking_uri, Path.cwd())
        name = config.mlflow.experiment_name
        preload = startup.HELPER_PRELOAD if config.plots.enabled else ()
        run_dir = Path(str(config.hydra.run.dir)).resolve()
        request = Open(uri, name, spool_dir=str(run_dir),
                       outage_timeout=config.mlflow.outage_timeout)  # fmt: skip
        info = LaunchInfo(uri, name, multirun=False, outage_timeout=config.mlflow.outage_timeout)
        made = MadeDirs.before_making(run_dir)  # before the helper, which may make it (to spool)
        return cls(info, tracking.in_helper(request, preload), made=made)

    @classmethod
    def sweep(cls, config: DictConfig) -> Launch:
        """A sweep: the values its jobs share checked, its sweep dir locked (a second launch into
        it would resume it at the same time), its parent run described and, where the jobs run
        elsewhere, created now: they need its id."""
        validate(config)
        overrides = list(config.hydra.overrides.task)
        check_shared(
            config, naming.swept_values(overrides, config.hydra.sweeper.get("params") or {})
        )
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        made = MadeDirs.before_making(sweep_dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(sweep_dir / ".linreg_exp.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise ConfigError(
                f"hydra.sweep.dir={sweep_dir} is in use by another sweep that is still running"
            ) from None
        try:
            prepare_study(config, sweep_dir)
            launch = cls._open_sweep(config, sweep_dir, lock)
        except BaseException:  # its study or its store cannot be used: nothing ran, nothing kept
            lock.release()
            if made is not None:
                made.remove()
            raise
        launch.made = made
        return launch

    @classmethod
    def _open_sweep(cls, config: DictConfig, sweep_dir: Path, lock: FileLock) -> Launch:
        overrides = list(config.hydra.overrides.task)
        swept = naming.swept_values(overrides, config.hydra.sweeper.get("params") or {})
        masked = [mask_override(o) for o in overrides]
        launcher = str(config.hydra.launcher._target_)
        parent = Parent(
            run_name=config.mlflow.run_name or naming.sweep_name(swept),
            tags={
                Tag.KIND: "sweep",
                Tag.SWEEP_DIR: str(sweep_dir),
                Tag.SWEEP_KEY: sweep_key(sweep_dir),
                Tag.OVERRIDES: " ".join(masked),
                Tag.COMMAND: sweep_command(config.hydra),
                Tag.LAUNCHER: launcher.rsplit(".", 1)[-1],
                Tag.SWEEPER: str(config.hydra.sweeper._target_).rsplit(".", 1)[-1],
                Tag.OBJECTIVE: f"{config.sweep.objective} {config.sweep.direction}",
            },
            jobs=jobs_of(launcher),
            objective=config.sweep.objective,
            direction=config.sweep.direction,
            register_best=config.mlflow.register_best,
            report=sweep_report.draw,  # injected: tracking never imports report
        )
        uri = resolve_tracking_uri(config.mlflow.tracking_uri, Path.cwd())
        name = config.mlflow.experiment_name
        timeout = config.mlflow.outage_timeout
        request = Open(uri, name, parent, spool_dir=str(sweep_dir), outage_timeout=timeout)
        tracker = tracking.in_helper(request, startup.HELPER_PRELOAD)
        parent_run_id = None
        if jobs_need_parent_id(launcher):
            try:
                parent_run_id = tracker.opened().parent_run_id
            except BaseException:
                tracker.close()
                raise
        info = LaunchInfo(uri, name, True, tuple(swept), parent_run_id, parent.jobs, timeout)
        launch = cls(info, tracker, lock)
        launch.announce()
        return launch

    def announce(self, wait: bool = False) -> None:
        """Say once where the sweep's parent run is, as soon as it exists (`wait`: for its
        store to create it, where it is created before the jobs: the batched launcher's)."""
        parent_run_id = self.tracker.parent_run_id
        if wait and parent_run_id is None and self.info.jobs != "here":
            parent_run_id = self.tracker.opened().parent_run_id
        if not self.info.multirun or self._announced or parent_run_id is None:
            return
        if is_offline(self.info.tracking_uri):  # its run id is a placeholder until synced
            return
        self._announced = True
        opened = self.tracker.opened()
        url = run_url(self.info.tracking_uri, opened.experiment_id, parent_run_id)
        resumed = " (resumed: FINISHED jobs are kept, the others run again)"
        log.info("MLflow parent run %s%s: %s", parent_run_id, resumed if opened.resumed else "",
                 url)  # fmt: skip

    def writers(self, count: int) -> list[Tracker]:
        """`count` trackers to record the runs of jobs run in this process (the batched
        launcher's), so that they are written to the store in parallel (the store's work is a
        batch's floor): this launch's own and `count - 1` helper processes on the sweep's parent.
        They are started at the first batch and kept for the sweep, so that a sweeper launching
        batch after batch (Optuna's) pays for their start once, and a batch's runs are stored
        while the next one trains; `close` ends them before the parent is summarised. Nothing
        asks for the store here: their processes import MLflow and its store while the jobs
        compose, and `open_writers` opens it once there are jobs to record."""
        info, spool = self.info, self.tracker.open_request.spool_dir
        while len(self.extra_writers) < count - 1:
            number = len(self.extra_writers) + 1
            self.extra_writers.append(tracking.in_helper(Open(
                info.tracking_uri, info.experiment_name, parent_run_id=info.parent_run_id,
                spool_dir=f"{spool}/.writers/{number}" if spool else None,
                outage_timeout=info.outage_timeout,
            )))  # fmt: skip
        return [self.tracker, *self.extra_writers[: max(0, count - 1)]]

    def open_writers(self) -> None:
        """Open the store for the writers (`writers`): this launch's first, then the others on
        the sweep's parent, which the first names if it was not known (it creates it)."""
        self.tracker.open()
        if not self.extra_writers:
            return
        if self.info.parent_run_id is None and self.info.multirun:
            self.info = replace(self.info, parent_run_id=self.tracker.opened().parent_run_id)
        for writer in self.extra_writers:
            writer.open(self.info.parent_run_id)

    def close(self, status: str | None = None) -> Closed:
        """End what is open (a sweep's parent: `status`, None for its jobs' outcomes). A run
        that a writer could not record fails the sweep (Abort), once its parent has ended."""
        atexit.unregister(self._close_at_exit)
        lost = self._close_writers()
        try:
            closed = self.tracker.close(status or (FAILED if lost else None))
        finally:
            if self.lock is not None:
                self.lock.release()
        # rejected: no parent reported, no run asked for (whose parent may exist unreported)
        never_ran = self.tracker.parent_run_id is None and not self.tracker.runs_started
        if self.made is not None and never_ran:
            self.made.remove()  # nothing to keep
        if closed.summary is not None:
            log.info("%s", closed.summary)
        if lost:
            raise Abort(RuntimeError("; ".join(lost)))
        return closed

    def _close_writers(self) -> list[str]:
        """Close the extra writers (each waits until its runs are stored); what any could not
        record."""
        errors = []
        writers, self.extra_writers = self.extra_writers, []
        for writer in writers:
            try:
                closed = writer.close()
            except Exception as error:
                errors.append(describe_error(error))
                continue
            if closed.error is not None:
                errors.append(closed.error)
        return errors

    def _note_stop(self, signum: int) -> None:
        """A stop signal: a store that does not answer is waited for no more (spooled)."""
        self.stopped_by = self.stopped_by or signum
        for tracker in (self.tracker, *self.extra_writers):
            tracker.stop_waiting()

    def _close_at_exit(self) -> None:
        try:
            self.close(KILLED if self.stopped_by else FAILED)
        except (Exception, Abort) as error:  # the process is ending: say so, and let it end
            log.error("could not close the launch: %s", error)
