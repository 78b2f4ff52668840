"""The spool: tracking requests kept on disk until a store takes them.

When a run's store is down for longer than `mlflow.outage_timeout`, when the job is stopped
while it is down, or when the run is offline (`mlflow.tracking_uri=offline`), its requests go
into a spool, `mlflow-spool.jsonl` in the launch's output dir, in the order they were made:
exactly the requests the store would have had. A run still alive when its store is back
delivers them itself (backlog.py); `linreg-exp sync` (sync.py) hands those of a run that ended
first, in that order, to a Session on a real store, which so ends up as if it had been up all
along. A state file beside the spool (`mlflow-spool.state.jsonl`) records what was delivered,
by either, and which MLflow run each run became, so no request is ever delivered twice.

The file is plain data (journal.py: versioned JSON lines, no pickle), so that syncing a spool
someone else wrote runs none of their code. A run's files are named relative to the spool's
directory; one from elsewhere (a scheduler's log) is copied into `mlflow-spool.files/` beside
it, so the spool holds all it names and can be synced from another place.

A spooled request is answered at once (`acknowledge`), as the store would have answered it, but
for run ids: a run the store has not created yet gets a placeholder id (`offline-...`), which
sync replaces. Nothing here imports MLflow: the job itself spools, when its helper is gone.
"""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from linreg_exp.errors import TrackingError
from linreg_exp.tracking import journal
from linreg_exp.tracking.journal import VERSION, Entry, ParentNote, RunNote
from linreg_exp.tracking.messages import (
    Artifact,
    Close,
    Closed,
    Epochs,
    Finished,
    FinishRun,
    Open,
    Opened,
    Reply,
    Request,
    Started,
    StartRun,
    Stored,
)

SPOOL_FILE = "mlflow-spool.jsonl"
FILES_DIR = "mlflow-spool.files"  # copies of the files it names that were not in its directory
PLACEHOLDER = "offline-"  # a run id the store has not given yet
OFFLINE = "offline"  # mlflow.tracking_uri=offline: every request is spooled, nothing sent


def is_offline(uri: str) -> bool:
    return uri == OFFLINE


def placeholder() -> str:
    return f"{PLACEHOLDER}{uuid.uuid4().hex}"


class Spool:
    """An append-only journal of requests (and of the run ids they concern)."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / SPOOL_FILE
        self.state = self.path.with_suffix(".state.jsonl")
        self.run_ids: dict[str, str] = {}  # the tracker's run key -> its run's id, or placeholder
        self.parent_run_id: str | None = None
        self.owns_parent = False  # a sweep's own tracker: its parent is made with its first run
        self.experiment_id = OFFLINE
        self.lines = 0  # lines in the file: the next one written is number lines + 1

    @property
    def started(self) -> bool:
        return self.path.exists()

    def begin(
        self,
        request: Open,
        run_ids: dict[str, str],
        parent_run_id: str | None,
        last_steps: Mapping[str, int] = MappingProxyType({}),
    ) -> None:
        """Start spooling a tracker's requests: where they go, the runs that exist already and
        the last epoch each has stored (sync skips those the store has)."""
        self.owns_parent = request.parent is not None
        if parent_run_id is None and request.parent is not None and request.parent.jobs != "here":
            parent_run_id = placeholder()  # its jobs, elsewhere, need its id now
        if not self.started:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._write(request)
            if parent_run_id is not None:
                self._write(ParentNote(parent_run_id))
        else:
            drop_cut_line(self.path)
            self.lines = self.path.read_bytes().count(b"\n")
        self.parent_run_id = parent_run_id or self.parent_run_id
        for run, run_id in run_ids.items():
            self.note_run(run, run_id, last_steps.get(run, -1))

    def note_run(self, run: str, run_id: str, last_step: int = -1) -> None:
        self.run_ids[run] = run_id
        self._write(RunNote(run, run_id, last_step))

    def append(self, request: Request) -> Reply:
        """Keep a request; answer it as the store would have (acknowledge)."""
        return self.add(request)[2]

    def add(self, request: Request) -> tuple[int, int, Reply]:
        """Keep a request: its line number, the byte its line starts at (where a live run
        reads it back to deliver it: a long outage is on disk, not in memory) and the answer
        (acknowledge)."""
        if isinstance(request, Open):
            raise ValueError("a spool's Open is its first line (begin)")
        if isinstance(request, FinishRun):
            if request.report is not None:
                raise ValueError("a FinishRun's report is drawn before it is spooled")
            request = replace(request, files=[f for f in map(self._held, request.files) if f])
        line, offset = self._write(request)
        return line, offset, self.acknowledge(request)

    def at(self, offset: int) -> Entry:
        """The entry on the line that starts at byte `offset` (as `add` said)."""
        with self.path.open("rb") as lines:
            lines.seek(offset)
            obj = json.loads(lines.readline())
        obj.pop("v", None)
        return journal.decode(obj, self.path.parent)

    def delivered(self, line: int) -> None:
        """Note in the state file that the request on `line` reached the store (sync, or the
        live run draining its spool): no later sync sends it again."""
        self._write_state({"kind": "Delivered", "line": line})

    def resolved(self, placeholder: str, run_id: str) -> None:
        """Note in the state file the run id a placeholder became."""
        self._write_state({"kind": "Placeholder", "placeholder": placeholder, "run_id": run_id})

    def _write_state(self, entry: dict[str, Any]) -> None:
        with self.state.open("a") as out:
            out.write(journal.dump(entry))

    def acknowledge(self, request: Request) -> Reply:
        match request:
            case Open():
                return Opened(self.experiment_id, self.parent_run_id)
            case StartRun():
                if self.owns_parent and self.parent_run_id is None:  # made with its first run
                    self.parent_run_id = placeholder()
                    self._write(ParentNote(self.parent_run_id))
                if request.run not in self.run_ids:
                    self.note_run(request.run, placeholder())
                run_id = self.run_ids[request.run]
                return Started(request.run, run_id, self.experiment_id, self.parent_run_id)
            case Epochs():
                return Stored(sum(len(batch.rows) for batch in request.batches))
            case FinishRun():
                return Finished(self.run_ids.get(request.run, ""))
            case Close():
                summary = None
                if self.owns_parent:
                    summary = (
                        f"the sweep is spooled in {self.path.parent} (offline or its store was "
                        f"down); deliver it with: linreg-exp sync {self.path.parent} --to URI"
                    )
                return Closed(summary, None)
        raise TypeError(type(request).__name__)  # pragma: no cover

    def _held(self, file: Artifact) -> Artifact | None:
        """A run's file as the spool holds it: in its directory, where it is, else a copy in
        FILES_DIR (taken now, as the store would have taken it); None if it is gone."""
        source, home = Path(file.path), self.path.parent.resolve()
        if source.resolve().is_relative_to(home):
            return file
        if not source.is_file():
            return None  # the store would have skipped it too
        copy = home / FILES_DIR / uuid.uuid4().hex[:12] / source.name
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, copy)
        return replace(file, path=str(copy))

    def _write(self, entry: Entry) -> tuple[int, int]:
        """Append an entry's line (a line at a time, flushed: a kill loses no line); its
        number and the byte it starts at."""
        line = journal.dump(journal.encode(entry, self.path.parent)).encode()
        with self.path.open("ab") as out:
            offset = out.seek(0, 2)
            out.write(line)
        self.lines += 1
        return self.lines, offset

    def entries(self, warn: Callable[[str], None] | None = None) -> Iterator[tuple[int, Entry]]:
        """What the spool holds, with line numbers (TrackingError at a bad line)."""
        return read(self.path, warn)


def json_lines(
    path: Path, warn: Callable[[str], None] | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each line's JSON object with its line number (from 1), its version checked. A last line
    that is not JSON was cut short (a power cut mid-write): skipped, with a warning."""
    numbered = [
        (n, line)
        for n, line in enumerate(path.read_bytes().split(b"\n"), 1)
        if line.strip(b" \t\r\0")
    ]
    for position, (number, line) in enumerate(numbered):
        try:
            obj = json.loads(line.decode())
        except (ValueError, RecursionError):
            if position < len(numbered) - 1:
                raise TrackingError(f"{path} line {number}: not a line of JSON (corrupt)") from None
            (warn or _warn)(f"{path} line {number} is cut short (the write was interrupted): "
                            "skipped")  # fmt: skip
            return
        if not isinstance(obj, dict):
            raise TrackingError(f"{path} line {number}: not a JSON object (corrupt)")
        version = obj.pop("v", None)
        if version is None:
            raise TrackingError(f"{path} line {number}: no format version (an older "
                                "linreg_exp's spool, of pickled requests, which this one does "
                                "not read): sync it with the linreg_exp that wrote it")  # fmt: skip
        if type(version) is not int or version < 1:
            raise TrackingError(f"{path} line {number}: format version {version!r} is not one")
        if version > VERSION:
            raise TrackingError(f"{path}: format version {version} is newer than this "
                                f"linreg_exp reads (version {VERSION}): sync it with a newer "
                                "linreg_exp")  # fmt: skip
        yield number, obj


def drop_cut_line(path: Path) -> None:
    """A file of lines whose last was cut short (a power cut mid-write) goes on after its last
    whole line, so that the next line written is not glued to the torn one."""
    with path.open("rb+") as lines:
        size = lines.seek(0, 2)
        if size == 0 or (lines.seek(size - 1) >= 0 and lines.read(1) == b"\n"):
            return
        lines.seek(0)
        lines.truncate(lines.read().rfind(b"\n") + 1)


def read(path: Path, warn: Callable[[str], None] | None = None) -> Iterator[tuple[int, Entry]]:
    """The spool at `path`, entry by entry with its line number; TrackingError at a bad line."""
    for number, obj in json_lines(path, warn):
        try:
            yield number, journal.decode(obj, path.parent)
        except journal.BadLine as error:
            raise TrackingError(f"{path} line {number}: {error}") from None


def _warn(line: str) -> None:
    print(f"linreg_exp: warning: {line}", file=sys.stderr, flush=True)


def with_report_drawn(request: FinishRun, files: list[str]) -> FinishRun:
    """A FinishRun whose report (its pictures) was drawn: its files, logged as the others."""
    return replace(request, report=None, files=[*request.files, *(Artifact(f) for f in files)])
