"""The spool: tracking requests kept on disk until a store takes them.

When a run's store is down for longer than `mlflow.outage_timeout`, when the job is stopped
while it is down, or when the run is offline (`mlflow.tracking_uri=offline`), its requests go
into a spool, `mlflow-spool.jsonl` in the launch's output dir, in the order they were made:
exactly the requests the store would have had. `linreg-exp sync` (sync.py) hands them, in that
order, to a Session on a real store, which so ends up as if it had been up all along; a state
file beside the spool (`.state.jsonl`) records what was delivered and which MLflow run each
run became, so a sync is never repeated.

A spooled request is answered at once (`acknowledge`), as the store would have answered it, but
for run ids: a run the store has not created yet gets a placeholder id (`offline-...`), which
sync replaces. Nothing here imports MLflow: the job itself spools, when its helper is gone.
"""

from __future__ import annotations

import base64
import json
import pickle
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from linreg_exp.tracking.messages import (
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
            self._write({"open": _encode(request), "parent_run_id": parent_run_id})
        self.parent_run_id = parent_run_id or self.parent_run_id
        for run, run_id in run_ids.items():
            self.note_run(run, run_id, last_steps.get(run, -1))

    def note_run(self, run: str, run_id: str, last_step: int = -1) -> None:
        self.run_ids[run] = run_id
        self._write({"run": run, "run_id": run_id, "last_step": last_step})

    def append(self, request: Request) -> Reply:
        """Keep a request; answer it as the store would have (acknowledge)."""
        if isinstance(request, FinishRun) and request.report is not None:
            raise ValueError("a FinishRun's report is drawn before it is spooled")
        self._write({"request": _encode(request)})
        return self.acknowledge(request)

    def acknowledge(self, request: Request) -> Reply:
        match request:
            case Open():
                return Opened(self.experiment_id, self.parent_run_id)
            case StartRun():
                if self.owns_parent and self.parent_run_id is None:  # made with its first run
                    self.parent_run_id = placeholder()
                    self._write({"parent_run_id": self.parent_run_id})
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

    def _write(self, entry: dict[str, Any]) -> None:
        with self.path.open("a") as out:  # a line at a time, flushed: a kill loses no line
            out.write(json.dumps(entry) + "\n")

    def entries(self) -> Iterator[dict[str, Any]]:
        with self.path.open() as lines:
            for line in lines:
                if line.strip():
                    yield json.loads(line)


def _encode(message: object) -> str:
    return base64.b64encode(pickle.dumps(message)).decode()


def decode(text: str) -> Any:
    return pickle.loads(base64.b64decode(text))


def with_report_drawn(request: FinishRun, files: list[str]) -> FinishRun:
    """A FinishRun whose report (its pictures) was drawn: its files, logged as the others."""
    from linreg_exp.tracking.messages import Artifact

    return replace(request, report=None, files=[*request.files, *(Artifact(f) for f in files)])
