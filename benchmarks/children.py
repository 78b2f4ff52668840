"""Child processes for the bench: `python -m linreg_exp` and the bare tutorial script, timed,
with their peak memory, and the memory of a job's MLflow helper process read from /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness import REPO

BARE = REPO / "benchmarks" / "bare_tutorial.py"
PYTHON = sys.executable


@dataclass(frozen=True)
class Child:
    seconds: float
    peak_bytes: int  # ru_maxrss of the child (the largest of it and the children it reaped)
    cpu_seconds: float = 0.0  # user + system time of the child and the children it reaped


def child_env(tracking_uri: str | None) -> dict[str, str]:
    """This environment without MLFLOW_* / HYDRA_* settings, plus the given tracking store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_"))}
    if tracking_uri is not None:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


def sqlite_env(db: Path) -> dict[str, str]:
    """child_env for a throw-away SQLite store at `db`."""
    return child_env(f"sqlite:///{db}")


def cli(*overrides: str) -> list[str]:
    return [PYTHON, "-m", "linreg_exp", *overrides]


def bare(*args: str) -> list[str]:
    """The bare tutorial script (benchmarks/bare_tutorial.py): every ratio's baseline."""
    return [PYTHON, str(BARE), *args]


# Linux records the memory a process had before exec in its ru_maxrss, and subprocess spawns with
# vfork: a child started straight from this (large) process would report at least this process's
# peak. So children start from a small launcher that times them and reports its children's
# rusage (checked: the bare script reads 300 MiB this way, as /usr/bin/time says; 910 MiB when
# forked from a parent holding 800 MB).
_LAUNCHER = """
import resource, subprocess, sys, time
report, argv = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
code = subprocess.call(argv)
seconds = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
peak, cpu = usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime
with open(report, "w") as out:
    out.write(f"{seconds} {peak} {code} {cpu}")
"""


def run_child(args: Sequence[str], cwd: Path, env: dict[str, str], log: Path) -> Child:
    """Wall seconds and peak RSS (ru_maxrss) of one child process; raise if it fails."""
    report = log.with_suffix(".report")
    with log.open("wb") as out:
        subprocess.run(
            [PYTHON, "-S", "-c", _LAUNCHER, str(report), *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            check=False,
        )
    try:
        seconds, peak, code, cpu = report.read_text().split()
        report.unlink()
    except (OSError, ValueError):
        seconds, peak, code, cpu = "nan", "0", "-1", "nan"
    if int(code) != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(args)} exited {code}:\n{tail}")
    return Child(float(seconds), int(peak), float(cpu))


# In the command line of a job's MLflow helper process (tracking/helper.py starts it).
HELPER_MARKS = (b"linreg_exp.tracking.helper_main",)


def proc_status_kib(pid: int, field: str) -> int | None:
    """A /proc/<pid>/status memory field (VmHWM: peak RSS, VmRSS: now) in KiB; None once the
    process is gone (or a zombie, which has no memory fields)."""
    with suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return None


def helper_of(job_pid: int) -> int | None:
    """The pid of the job's MLflow helper process: its child running tracking.helper_main
    (a child of this job, not of another process running beside the bench)."""
    for status in Path("/proc").glob("[0-9]*/status"):
        with suppress(OSError, ValueError):
            cmdline = (status.parent / "cmdline").read_bytes()
            if not any(mark in cmdline for mark in HELPER_MARKS):
                continue
            for line in status.read_text().splitlines():
                if line.startswith("PPid:") and int(line.split()[1]) == job_pid:
                    return int(status.parent.name)
    return None


def helper_peak_mib(args: Sequence[str], cwd: Path, env: dict[str, str]) -> float:
    """Peak RSS of a single run's MLflow helper process (ru_maxrss above reports only the
    largest process, the job), read from /proc while the run goes on."""
    process = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    helper: int | None = None
    peak_kib = 0
    while process.poll() is None:
        helper = helper or helper_of(process.pid)
        if helper is not None:
            peak_kib = max(peak_kib, proc_status_kib(helper, "VmHWM") or 0)
        time.sleep(0.05)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {process.returncode}")
    if helper is None:
        raise RuntimeError(f"{' '.join(args)}: no MLflow helper process found (HELPER_MARKS)")
    return peak_kib / 1024
