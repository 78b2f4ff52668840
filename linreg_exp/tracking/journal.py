"""The spool's file format: versioned JSON lines of plain data, one message or note a line.

A spool may come from another machine or another person, and `linreg-exp sync` reads it, so
reading one must never run code from it: every line is plain JSON (no pickle), decoded by hand,
kind by kind, field by field, into our own dataclasses (messages.py) and nothing else. A line of
an unknown kind, with a field we do not know or of the wrong type, is refused, naming its line.

- Every line has `"v"` (the format version, VERSION) and `"kind"`: a request (Open, StartRun,
  Epochs, FinishRun, Close) with its fields, or a note of the spool's own: Run (the run id a
  run key had, and its last stored epoch) and Parent (the sweep's parent run id).
- A run's files are named relative to the spool's directory; a name that leaves it (`..`, an
  absolute path, a link out) is refused, so that sync uploads only what the spool holds.
- Callables are never named. A sweep's report (`Parent.report`) is written as `true` or `false`
  and read back as `spooled_report`, a stand-in that sync replaces with the report it is handed;
  a run's report (FinishRun.report, a Task) is drawn before it is spooled. (Spools of version 1
  wrote the report's name: the one name we ever wrote reads as `true`.)
- Floats that are not finite are written as Python's json writes them (NaN, Infinity).
- A newer version is refused, naming both versions (spool.lines, which also skips a last line
  cut short by a power cut, with a warning).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal, TypeVar, cast

from linreg_exp.errors import TrackingError
from linreg_exp.tracking.messages import (
    Artifact,
    Close,
    DatasetInfo,
    EpochBatch,
    Epochs,
    FinishRun,
    LinearModelSpec,
    Open,
    Parent,
    Request,
    StartRun,
    SweepSummary,
)
from linreg_exp.vocab import Outcome

VERSION = 2  # 2: a sweep's report is a flag; version 1 (its name) is read too
LEGACY_REPORT = "linreg_exp.report.sweep:draw"  # what version 1 wrote for a sweep's report
_T = TypeVar("_T")


@dataclass(frozen=True)
class RunNote:
    """A run key's run id (maybe a placeholder) and the last epoch its store has."""

    run: str
    run_id: str
    last_step: int = -1


@dataclass(frozen=True)
class ParentNote:
    """The sweep's parent run id, once the spool has one (maybe a placeholder)."""

    parent_run_id: str | None


Entry = Request | RunNote | ParentNote


class BadLine(TrackingError):
    """A line that is not what this format says (not one cut short: see spool.lines)."""


def dump(obj: dict[str, Any]) -> str:
    """One line of the format (with its version), newline included."""
    return json.dumps({"v": VERSION, **obj}) + "\n"


def encode(entry: Entry, base: Path) -> dict[str, Any]:
    """An entry as plain JSON values; its files relative to `base` (ValueError if outside)."""
    match entry:
        case Open():
            parent = entry.parent
            return {"kind": "Open", "tracking_uri": entry.tracking_uri,
                    "experiment_name": entry.experiment_name,
                    "parent": None if parent is None else {
                        "run_name": parent.run_name, "tags": parent.tags, "jobs": parent.jobs,
                        "objective": parent.objective, "direction": parent.direction,
                        "register_best": parent.register_best,
                        "report": parent.report is not None},
                    "parent_run_id": entry.parent_run_id, "spool_dir": entry.spool_dir,
                    "outage_timeout": entry.outage_timeout}  # fmt: skip
        case StartRun():
            data = entry.dataset
            return {"kind": "StartRun", "run": entry.run, "name": entry.name, "tags": entry.tags,
                    "params": entry.params, "config": entry.config,
                    "dataset": None if data is None else {
                        "name": data.name, "digest": data.digest, "source": data.source},
                    "system_metrics": entry.system_metrics}  # fmt: skip
        case Epochs():
            return {"kind": "Epochs", "batches": [
                {"run": b.run, "names": list(b.names), "rows": [list(r) for r in b.rows]}
                for b in entry.batches]}  # fmt: skip
        case FinishRun():
            if entry.report is not None:
                raise ValueError("a FinishRun's report is drawn before it is spooled")
            files = [{"path": relative(f.path, base), "directory": f.directory}
                     for f in entry.files]  # fmt: skip
            model = entry.model and {
                "features": entry.model["features"],
                "weights": entry.model["weights"],
                "bias": entry.model["bias"],
            }
            return {"kind": "FinishRun", "run": entry.run, "outcome": str(entry.outcome),
                    "metrics": entry.metrics, "tags": entry.tags, "files": files,
                    "model": model}  # fmt: skip
        case Close():
            return {"kind": "Close", "status": entry.status, "reason": entry.reason}
        case RunNote():
            return {"kind": "Run", "run": entry.run, "run_id": entry.run_id,
                    "last_step": entry.last_step}  # fmt: skip
        case ParentNote():
            return {"kind": "Parent", "parent_run_id": entry.parent_run_id}
    raise TypeError(type(entry).__name__)  # pragma: no cover


def relative(path: str, base: Path) -> str:
    """`path` as the format names it: relative to `base`, in which it must lie."""
    inside = Path(path).resolve().relative_to(base.resolve())  # ValueError outside it
    return inside.as_posix()


def decode(obj: dict[str, Any], base: Path) -> Entry:
    """A line's object (its version checked) as our own dataclass; BadLine if it is not one."""
    f = _Fields(obj)
    kind = f.text("kind")
    if kind == "Open":
        entry: Entry = Open(f.text("tracking_uri"), f.text("experiment_name"),
                            f.nested("parent", _parent), f.text_or_none("parent_run_id"),
                            f.text_or_none("spool_dir"), f.number("outage_timeout"))  # fmt: skip
    elif kind == "StartRun":
        entry = StartRun(f.text("run"), f.text_or_none("name"), f.texts("tags"),
                         f.texts("params"), f.mapping("config"), f.nested("dataset", _dataset),
                         f.flag("system_metrics"))  # fmt: skip
    elif kind == "Epochs":
        entry = Epochs([_batch(_Fields(_object(b, "batches"))) for b in f.items("batches")])
    elif kind == "FinishRun":
        files = [_artifact(_Fields(_object(a, "files")), base) for a in f.items("files")]
        model = f.nested("model", _model)
        entry = FinishRun(f.text("run"), Outcome(f.among("outcome", *Outcome)),
                          f.numbers("metrics"), f.texts("tags"), files, None, model)  # fmt: skip
    elif kind == "Close":
        entry = Close(f.text_or_none("status"), f.text("reason"))
    elif kind == "Run":
        entry = RunNote(f.text("run"), f.text("run_id"), f.integer("last_step"))
    elif kind == "Parent":
        entry = ParentNote(f.text_or_none("parent_run_id"))
    else:
        raise BadLine(f"an unknown kind {kind!r}")
    return f.done(entry)


def spooled_report(summary: SweepSummary, out_dir: str) -> list[str]:
    """What a spooled sweep's report reads back as: it had one, which sync draws with the
    report it is handed (sync.sync's `report`). Never called itself."""
    raise TrackingError("a spooled sweep's report is drawn by the report sync is handed")


def _parent(f: _Fields) -> Parent:
    wanted = f.peek("report")
    if wanted == LEGACY_REPORT:
        wanted = True
    if wanted is not None and type(wanted) is not bool:
        raise BadLine(f"parent.report {wanted!r}: true or false (a report is never named)")
    report = spooled_report if wanted else None
    jobs = f.among("jobs", "here", "workers", "scheduler")
    direction = f.among("direction", "minimize", "maximize")
    return Parent(f.text("run_name"), f.texts("tags"),
                  cast(Literal["here", "workers", "scheduler"], jobs), f.text("objective"),
                  cast(Literal["minimize", "maximize"], direction),
                  f.text_or_none("register_best"), report)  # fmt: skip


def _model(f: _Fields) -> LinearModelSpec:
    features = [_of(name, "model.features", str) for name in f.items("features")]
    weights = [_number(weight, "model.weights") for weight in f.items("weights")]
    return LinearModelSpec(features=features, weights=weights, bias=f.number("bias"))


def _dataset(f: _Fields) -> DatasetInfo:
    return DatasetInfo(f.text("name"), f.text("digest"), f.mapping("source"))


def _batch(f: _Fields) -> EpochBatch:
    rows = []
    for row in f.items("rows"):
        if not (isinstance(row, list) and len(row) == 3 and isinstance(row[2], list)):
            raise BadLine("rows: each is [step, ms timestamp, [values]]")
        values = tuple(_number(value, "rows") for value in row[2])
        rows.append((_of(row[0], "rows", int), _of(row[1], "rows", int), values))
    names = tuple(_of(name, "names", str) for name in f.items("names"))
    return f.done(EpochBatch(f.text("run"), names, rows))


def _artifact(f: _Fields, base: Path) -> Artifact:
    """A file named relative to the spool's directory, as an absolute path inside it; refused
    if the name leaves the directory (`..`, absolute, a link out of it)."""
    name, directory = f.text("path"), f.text_or_none("directory")
    for what, value in (("path", name), ("directory", directory or ".")):
        path = PurePosixPath(value)
        if not value or path.is_absolute() or ".." in path.parts:
            raise BadLine(f"files: {what} {value!r} leaves the spool's directory")
    resolved = (base / name).resolve()
    if not resolved.is_relative_to(base.resolve()):
        raise BadLine(f"files: path {name!r} leads out of the spool's directory")
    return f.done(Artifact(str(resolved), directory))


class _Fields:
    """A JSON object's fields, each taken with its type checked; `done` refuses any left."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj, self.taken = obj, set[str]()

    def peek(self, key: str) -> Any:
        if key not in self.obj:
            raise BadLine(f"no field {key!r}")
        self.taken.add(key)
        return self.obj[key]

    def text(self, key: str) -> str:
        return _of(self.peek(key), key, str)

    def text_or_none(self, key: str) -> str | None:
        value = self.peek(key)
        return None if value is None else _of(value, key, str)

    def among(self, key: str, *allowed: str) -> str:
        value = self.text(key)
        if value not in allowed:
            raise BadLine(f"{key} {value!r} is not one of {', '.join(allowed)}")
        return value

    def integer(self, key: str) -> int:
        return _of(self.peek(key), key, int)

    def number(self, key: str) -> float:
        return _number(self.peek(key), key)

    def flag(self, key: str) -> bool:
        return _of(self.peek(key), key, bool)

    def items(self, key: str) -> list[Any]:
        return _of(self.peek(key), key, list)

    def mapping(self, key: str) -> dict[str, Any]:
        return _object(self.peek(key), key)

    def texts(self, key: str) -> dict[str, str]:
        return {k: _of(v, key, str) for k, v in self.mapping(key).items()}

    def numbers(self, key: str) -> dict[str, float]:
        return {k: _number(v, key) for k, v in self.mapping(key).items()}

    def nested(self, key: str, make: Callable[[_Fields], _T]) -> _T | None:
        value = self.peek(key)
        if value is None:
            return None
        inner = _Fields(_object(value, key))
        return inner.done(make(inner))

    def done(self, made: _T) -> _T:
        extra = sorted(set(self.obj) - self.taken)
        if extra:
            raise BadLine(f"unknown fields: {', '.join(extra)}")
        return made


def _of(value: object, key: str, kind: type[_T]) -> _T:
    """`value`, if JSON gave it as `kind` (true is no integer here)."""
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadLine(f"{key}: expected {_NAMES[kind]}")
    return value


def _object(value: object, key: str) -> dict[str, Any]:
    return _of(value, key, dict)


def _number(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadLine(f"{key}: expected a number")
    return float(value)


_NAMES = {str: "a string", int: "an integer", bool: "true or false", list: "a list",
          dict: "an object"}  # fmt: skip
