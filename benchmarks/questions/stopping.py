"""§7 stopping a long run: `python -m linreg_exp trainer.epochs=1e8 plots.enabled=false` on a new
SQLite store, SIGTERM after some seconds of training, timed until the process exits.

The store is polled until the first loss point is there; the run then trains for the set time
and gets SIGTERM from this process group, as from a shell. Afterwards the store must hold the
run KILLED with every epoch the job says it did. Meanwhile /proc gives the memory of the job
and of its MLflow helper process, which §6 reports (questions/memory).
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass

from benchmarks.children import cli, helper_of, proc_status_kib, sqlite_env
from benchmarks.harness import Context, Row, Target, progress
from tests.support.store import store_count

LOSSES = "select count(*) from metrics where key = 'loss'"


@dataclass(frozen=True)
class Sizes:
    stop_reps: int
    stop_after_seconds: float  # training (from the first loss stored) before SIGTERM


FULL = Sizes(stop_reps=2, stop_after_seconds=15.0)
QUICK = Sizes(stop_reps=1, stop_after_seconds=6.0)


@dataclass(frozen=True)
class LongRun:
    stop_seconds: float  # SIGTERM to the job's exit
    trained_seconds: float  # first loss point stored to SIGTERM
    epochs: int  # the job's "interrupted after N epochs"
    stored_at_signal: int  # loss points in the store when the signal went
    job_peak_mib: float
    helper_peak_mib: float
    rss_mid_mib: tuple[float, float]  # job, helper: midway through training
    rss_end_mib: tuple[float, float]  # job, helper: at SIGTERM
    check: str  # what the store holds afterwards, against what the job printed


def span(values: Sequence[float], fmt: str = ".0f") -> str:
    low, high = min(values), max(values)
    return f"{low:{fmt}}" if f"{low:{fmt}}" == f"{high:{fmt}}" else f"{low:{fmt}}-{high:{fmt}}"


def measure(ctx: Context) -> list[LongRun]:
    """The long runs, once an invocation (§7 and §6 both read them)."""
    return ctx.once("stopping", lambda: _measure(ctx))


def _measure(ctx: Context) -> list[LongRun]:
    sizes = ctx.pick(FULL, QUICK)
    runs: list[LongRun] = []
    for rep in range(sizes.stop_reps):
        progress(
            f"7: long run {rep + 1}/{sizes.stop_reps}: SIGTERM after "
            f"{sizes.stop_after_seconds:g} s of training"
        )
        runs.append(long_run(ctx, sizes.stop_after_seconds, rep))
    return runs


def long_run(ctx: Context, stop_after_seconds: float, rep: int) -> LongRun:
    """`python -m linreg_exp trainer.epochs=1e8`, SIGTERM after `stop_after_seconds` of
    training: how long it takes to exit, and the memory of the job and its helper meanwhile."""
    root = ctx.folder(f"long/{rep}")
    db = root / "mlflow.db"
    env = sqlite_env(db)
    args = cli("trainer.epochs=100000000", "plots.enabled=false", f"hydra.run.dir={root}/run")
    err_log = root / "stderr.log"
    with err_log.open("wb") as err:
        job = subprocess.Popen(  # our process group: SIGTERM reaches the job, as from a shell
            args,
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=False,
        )
    helper: int | None = None
    peaks = [0, 0]  # KiB: job, helper

    def sample() -> tuple[float, float]:
        """Update the peaks; RSS now (MiB) of the job and its helper."""
        nonlocal helper
        helper = helper or helper_of(job.pid)
        now = [0.0, 0.0]
        for i, pid in enumerate((job.pid, helper)):
            if pid is not None:
                peaks[i] = max(peaks[i], proc_status_kib(pid, "VmHWM") or 0)
                now[i] = (proc_status_kib(pid, "VmRSS") or 0) / 1024
        return now[0], now[1]

    def fail(what: str) -> RuntimeError:
        with suppress(ProcessLookupError):
            job.kill()
        job.wait()
        return RuntimeError(f"{what}:\n{err_log.read_text(errors='replace')[-3000:]}")

    deadline = time.monotonic() + 180
    while store_count(db, LOSSES) == 0:  # the run exists and its first batch is stored
        sample()
        if job.poll() is not None:
            raise fail(f"the long run exited {job.returncode} before storing an epoch")
        if time.monotonic() > deadline:
            raise fail("the long run stored no epoch in 180 s")
        time.sleep(0.1)
    first = time.perf_counter()
    stop_at = first + stop_after_seconds
    mid: tuple[float, float] | None = None
    while (now := time.perf_counter()) < stop_at:
        rss = sample()
        if mid is None and now >= first + stop_after_seconds / 2:
            mid = rss
        if job.poll() is not None:
            raise fail(f"the long run exited {job.returncode} while training")
        time.sleep(0.1)
    end = sample()
    stored_at_signal = store_count(db, LOSSES)
    signalled = time.perf_counter()
    job.send_signal(signal.SIGTERM)
    while job.poll() is None:
        sample()
        if time.perf_counter() - signalled > 120:
            raise fail("the long run did not exit within 120 s of SIGTERM")
        time.sleep(0.02)
    stop_seconds = time.perf_counter() - signalled
    if helper is None:
        raise fail("no MLflow helper process found beside the long run (HELPER_MARKS)")
    text = err_log.read_text(errors="replace")
    printed = re.search(r"interrupted after (\d+) epochs", text)
    epochs = int(printed.group(1)) if printed else -1
    runs = store_count(db, "select count(*) from runs")
    killed = store_count(db, "select count(*) from runs where status = 'KILLED'")
    stored = store_count(db, LOSSES)
    steps = store_count(db, "select count(distinct step) from metrics where key = 'loss'")
    ok = job.returncode == 128 + signal.SIGTERM and runs == killed == 1 and stored == epochs
    check = (
        f"{'ok' if ok and steps == stored else 'MISMATCH'}: exit {job.returncode}, "
        f"{killed}/{runs} run(s) KILLED, {stored} loss points ({steps} steps) stored for "
        f"{epochs} epochs printed"
    )
    return LongRun(
        stop_seconds=stop_seconds,
        trained_seconds=signalled - first,
        epochs=epochs,
        stored_at_signal=stored_at_signal,
        job_peak_mib=peaks[0] / 1024,
        helper_peak_mib=peaks[1] / 1024,
        rss_mid_mib=mid or end,
        rss_end_mib=end,
        check=check,
    )


def run(ctx: Context) -> list[Row]:
    sizes = ctx.pick(FULL, QUICK)
    runs = measure(ctx)
    epochs = span([r.epochs for r in runs])
    behind = [r.epochs - r.stored_at_signal for r in runs]
    checks = "; ".join(r.check for r in runs)
    return [
        Row(
            7,
            f"stopping a long run: SIGTERM to exit, after {sizes.stop_after_seconds:g} s of "
            f"training ({epochs} epochs) of `trainer.epochs=1e8 plots.enabled=false`",
            [r.stop_seconds for r in runs],
            [],
            "s",
            Target(5.0, False, "≤ 5 s"),
            f"the store was {span(behind)} epochs behind the job at SIGTERM (loss points "
            f"polled); afterwards: {checks}",
        ),
    ]
