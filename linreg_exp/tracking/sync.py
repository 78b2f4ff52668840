"""`linreg-exp sync PATH [--to URI]`: spooled runs (spool.py) delivered to a store.

Every spool under PATH (a run's output dir, a sweep dir, `outputs/`) is replayed, request by
request and in its order, through a Session on the store it was meant for (or `--to URI`):
the store ends up as if it had answered all along. A run that existed before its store went
down gets its epochs, outcome and end state on the same run; a run that never reached the store
(offline, or started during the outage) is created now, and every spool that names it by its
placeholder id (a sweep's jobs name their parent so) gets the real one. A sweep's own spool is
replayed last but for its end, so that its summary (Close) covers every job.

What was delivered is recorded beside each spool (`mlflow-spool.state.jsonl`, versioned JSON
lines like the spool: Delivered, the spool's line; Placeholder, the run id it became), so a
second sync delivers nothing, and one that stopped half-way goes on where it stopped.

A spool is read whole, and refused at its first bad line (journal.py), before anything is sent:
sync only ever makes our own requests of plain data, and logs only files inside the spool's dir.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from linreg_exp.errors import TrackingError
from linreg_exp.tracking.journal import ParentNote, RunNote, spooled_report
from linreg_exp.tracking.messages import (
    Close,
    Failed,
    Open,
    Request,
    Started,
    StartRun,
    SweepReport,
)
from linreg_exp.tracking.session import Session
from linreg_exp.tracking.spool import (
    PLACEHOLDER,
    SPOOL_FILE,
    Spool,
    drop_cut_line,
    is_offline,
    json_lines,
)
from linreg_exp.tracking.uris import mask_uri


@dataclass
class _Replay:
    """One spool on its way to the store."""

    spool: Spool
    open: Open
    parent_run_id: str | None  # as the spool names it (maybe a placeholder)
    requests: list[tuple[int, Request]] = field(default_factory=list)  # (line number, request)
    runs: dict[str, str] = field(default_factory=dict)  # run key -> id, as the spool named it
    last_steps: dict[str, int] = field(default_factory=dict)  # run key -> its last epoch stored
    delivered: set[int] = field(default_factory=set)  # line numbers
    placeholders: dict[str, str] = field(default_factory=dict)  # -> the id the store gave
    session: Session | None = None


def sync(root: Path, to: str | None = None, report: SweepReport | None = None) -> list[str]:
    """Deliver every spool under `root`; returns a line about each. Every spool is read (and
    so checked) before any is delivered. `report`: what draws a spooled sweep's report (the
    caller's: tracking never imports report), for each sweep whose spool says it had one."""
    spools = sorted(root.rglob(SPOOL_FILE), key=lambda p: (len(p.parts), str(p)))
    if not spools:
        return [f"nothing spooled under {root}"]
    read = [(path, _read(Spool(path.parent), report)) for path in spools]
    replays = [replay for _, replay in read if replay is not None]
    lines = [f"{path.parent}: nothing in its spool" for path, replay in read if replay is None]
    known = {k: v for replay in replays for k, v in replay.placeholders.items()}
    closes: list[tuple[_Replay, int, Close]] = []
    for replay in replays:  # a sweep's own spool first: its parent, before its jobs name it
        lines.append(_deliver(replay, to, known, closes))
    for replay, index, close in closes:  # then each sweep's end, over every job
        _send(replay, index, close, known)
    return lines


def _read(spool: Spool, report: SweepReport | None = None) -> _Replay | None:
    """A spool's requests and notes, and what its state file says was delivered; a sweep that
    had a report gets `report` (journal.spooled_report)."""
    replay: _Replay | None = None
    for number, entry in spool.entries():
        if replay is None:
            if not isinstance(entry, Open):
                raise TrackingError(f"{spool.path} line {number}: not a spool (no Open first)")
            parent = entry.parent
            if parent is not None and parent.report is spooled_report:
                entry = dataclasses.replace(
                    entry, parent=dataclasses.replace(parent, report=report)
                )
            replay = _Replay(spool, entry, None)  # its parent id: the notes that follow
        elif isinstance(entry, RunNote):
            replay.runs[entry.run] = entry.run_id
            replay.last_steps[entry.run] = entry.last_step
        elif isinstance(entry, ParentNote):
            replay.parent_run_id = entry.parent_run_id
        elif isinstance(entry, Open):
            raise TrackingError(f"{spool.path} line {number}: a second Open")
        else:
            replay.requests.append((number, entry))
    if replay is not None and spool.state.exists():
        _read_state(replay)
        drop_cut_line(spool.state)  # (read, and warned of): the next line goes after the last
    return replay


def _read_state(replay: _Replay) -> None:
    for number, entry in json_lines(replay.spool.state):
        kind, fields = entry.pop("kind", None), sorted(entry)
        if kind == "Delivered" and fields == ["line"] and type(entry["line"]) is int:
            replay.delivered.add(entry["line"])
        elif (
            kind == "Placeholder"
            and fields == ["placeholder", "run_id"]
            and all(isinstance(value, str) for value in entry.values())
        ):
            replay.placeholders[entry["placeholder"]] = entry["run_id"]
        else:
            raise TrackingError(f"{replay.spool.state} line {number}: not a line of sync's state")


def _deliver(replay: _Replay, to: str | None, known: dict[str, str], closes: list[Any]) -> str:
    pending = [(i, r) for i, r in replay.requests if i not in replay.delivered]
    where = replay.spool.path.parent
    if not pending:
        return f"{where}: delivered before, nothing left"
    uri = to or replay.open.tracking_uri
    if is_offline(uri):
        raise TrackingError(f"{where} holds offline runs: say where they go with --to URI")
    parent_id = known.get(replay.parent_run_id or "", replay.parent_run_id)
    opened = dataclasses.replace(
        replay.open, tracking_uri=uri, spool_dir=None,
        parent_run_id=None if _is_placeholder(parent_id) else parent_id,
    )  # fmt: skip
    session = replay.session = Session()
    reply = session.handle(opened)
    if isinstance(reply, Failed):
        raise TrackingError(f"{where}: {reply.message}")
    if replay.parent_run_id and _is_placeholder(replay.parent_run_id) and session.parent_run_id:
        _remember(replay, replay.parent_run_id, session.parent_run_id, known)
    for key, run_id in replay.runs.items():  # runs the store has: their requests go to them
        real = known.get(run_id, run_id)
        if not _is_placeholder(real):
            session.adopt(key, real, replay.last_steps.get(key, -1))
    count = 0
    for index, request in pending:
        if isinstance(request, Close) and replay.open.parent is not None:
            closes.append((replay, index, request))  # after every job of the sweep
            continue
        _send(replay, index, request, known)
        count += 1
    return f"{where}: {count} requests delivered to {mask_uri(uri)}"


def _send(replay: _Replay, index: int, request: Request, known: dict[str, str]) -> None:
    session = replay.session
    assert session is not None
    reply = session.handle(request)
    if isinstance(reply, Failed):
        raise TrackingError(f"{replay.spool.path.parent}: {reply.message}")
    if isinstance(request, StartRun) and isinstance(reply, Started):
        spooled = replay.runs.get(request.run)
        if spooled is not None and _is_placeholder(spooled):
            _remember(replay, spooled, reply.run_id, known)
    replay.spool.delivered(index)


def _remember(replay: _Replay, placeholder: str, run_id: str, known: dict[str, str]) -> None:
    known[placeholder] = run_id
    replay.spool.resolved(placeholder, run_id)


def _is_placeholder(run_id: str | None) -> bool:
    return bool(run_id) and str(run_id).startswith(PLACEHOLDER)
