"""`linreg-exp sync PATH [--to URI]`: spooled runs (spool.py) delivered to a store.

Every spool under PATH (a run's output dir, a sweep dir, `outputs/`) is replayed, request by
request and in its order, through a Session on the store it was meant for (or `--to URI`):
the store ends up as if it had answered all along. A run that existed before its store went
down gets its epochs, outcome and end state on the same run; a run that never reached the store
(offline, or started during the outage) is created now, and every spool that names it by its
placeholder id (a sweep's jobs name their parent so) gets the real one. A sweep's own spool is
replayed last but for its end, so that its summary (Close) covers every job.

What was delivered is recorded beside each spool (`mlflow-spool.state.jsonl`), so a second sync
delivers nothing, and one that stopped half-way goes on where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from linreg_exp.errors import TrackingError
from linreg_exp.tracking.messages import (
    Close,
    Failed,
    Open,
    Request,
    Started,
    StartRun,
)
from linreg_exp.tracking.session import Session
from linreg_exp.tracking.spool import PLACEHOLDER, SPOOL_FILE, Spool, decode, is_offline
from linreg_exp.tracking.uris import mask_uri


@dataclass
class _Replay:
    """One spool on its way to the store."""

    spool: Spool
    open: Open
    parent_run_id: str | None  # as the spool names it (maybe a placeholder)
    requests: list[tuple[int, Request]] = field(default_factory=list)  # (line, request)
    runs: dict[str, str] = field(default_factory=dict)  # run key -> id, as the spool named it
    last_steps: dict[str, int] = field(default_factory=dict)  # run key -> its last epoch stored
    delivered: set[int] = field(default_factory=set)
    session: Session | None = None


def sync(root: Path, to: str | None = None) -> list[str]:
    """Deliver every spool under `root`; returns a line about each."""
    spools = sorted(root.rglob(SPOOL_FILE), key=lambda p: (len(p.parts), str(p)))
    if not spools:
        return [f"nothing spooled under {root}"]
    replays = [_read(Spool(path.parent)) for path in spools]
    known = _known_ids(replays)  # placeholder -> the run id the store gave it
    lines: list[str] = []
    closes: list[tuple[_Replay, int, Close]] = []
    for replay in replays:  # a sweep's own spool first: its parent, before its jobs name it
        lines.append(_deliver(replay, to, known, closes))
    for replay, index, close in closes:  # then each sweep's end, over every job
        _send(replay, index, close, known)
    return lines


def _read(spool: Spool) -> _Replay:
    replay: _Replay | None = None
    for index, entry in enumerate(spool.entries()):
        if "open" in entry:
            replay = _Replay(spool, decode(entry["open"]), entry.get("parent_run_id"))
        elif replay is None:
            raise TrackingError(f"{spool.path}: not a spool (no open entry first)")
        elif "run" in entry:
            replay.runs[entry["run"]] = entry["run_id"]
            replay.last_steps[entry["run"]] = int(entry.get("last_step", -1))
        elif "request" in entry:
            replay.requests.append((index, decode(entry["request"])))
        elif "parent_run_id" in entry:
            replay.parent_run_id = entry["parent_run_id"]
    if replay is None:
        raise TrackingError(f"{spool.path}: an empty spool")
    if spool.state.exists():
        for line in spool.state.read_text().splitlines():
            entry = json.loads(line) if line.strip() else {}
            if "delivered" in entry:
                replay.delivered.add(int(entry["delivered"]))
    return replay


def _known_ids(replays: list[_Replay]) -> dict[str, str]:
    known: dict[str, str] = {}
    for replay in replays:
        if replay.spool.state.exists():
            for line in replay.spool.state.read_text().splitlines():
                entry = json.loads(line) if line.strip() else {}
                if "placeholder" in entry:
                    known[entry["placeholder"]] = entry["run_id"]
    return known


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
    _write_state(replay, {"delivered": index})


def _remember(replay: _Replay, placeholder: str, run_id: str, known: dict[str, str]) -> None:
    known[placeholder] = run_id
    _write_state(replay, {"placeholder": placeholder, "run_id": run_id})


def _write_state(replay: _Replay, entry: dict[str, Any]) -> None:
    with replay.spool.state.open("a") as out:
        out.write(json.dumps(entry) + "\n")


def _is_placeholder(run_id: str | None) -> bool:
    return bool(run_id) and str(run_id).startswith(PLACEHOLDER)
