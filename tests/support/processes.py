"""Jobs a test keeps alive only to wait for something outside them, at a low priority.

Some end-to-end tests start a job that trains without end and wait for an event it does not
cause: SLURM's time-limit signal, a tracking server's return, a browser reading its run. Until
then the job trains as fast as it can, a whole core the rest of the suite is short of (the
time-limit test's job alone used 35 s of CPU out of a suite's 740). Once the job streams, the
test lowers its priority with `lower_priority`: it keeps training, and still answers its signals,
on the CPU nobody else wants. Only the job's own threads change; its tracking helper, a process
of its own, keeps its priority, so delivery and outages behave as before.
"""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path

# A nice value of 10 weighs about a tenth of a normal process: the job still gets enough CPU to
# answer a signal within seconds on a loaded machine (19 weighs 1/70, too little for that).
BACKGROUND = 10


def lower_priority(pid: int, niceness: int = BACKGROUND) -> None:
    """Lower every thread of process `pid` (Linux's setpriority sets one thread each); threads it
    starts later inherit the value. A process already gone is left alone."""
    with suppress(FileNotFoundError, ProcessLookupError):
        for thread in os.listdir(f"/proc/{pid}/task"):
            with suppress(ProcessLookupError):
                os.setpriority(os.PRIO_PROCESS, int(thread), niceness)


def pids_running(fragment: str) -> list[int]:
    """The processes whose command line contains `fragment` (a job started by a scheduler,
    which the test knows only by the paths on its command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError):
            if fragment in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace"
            ):
                found.append(int(entry.name))
    return found
