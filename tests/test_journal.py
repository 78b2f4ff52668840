"""The spool's format (journal.py, spool.py) and `linreg-exp sync` of it: plain data only, so a
spool someone else wrote runs none of their code. Fast: files under tmp_path, and a real SQLite
store only where a sync must deliver."""

from __future__ import annotations

import base64
import json
import math
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from linreg_exp.app import run_sync
from linreg_exp.errors import TrackingError
from linreg_exp.tracking import journal
from linreg_exp.tracking.journal import ParentNote, RunNote
from linreg_exp.tracking.messages import (
    Artifact,
    Close,
    DatasetInfo,
    EpochBatch,
    Epochs,
    FinishRun,
    Open,
    Parent,
    StartRun,
    Task,
)
from linreg_exp.tracking.session import Session
from linreg_exp.tracking.spool import SPOOL_FILE, Spool
from linreg_exp.tracking.sync import sync
from linreg_exp.vocab import Outcome

MARKER = "pwned"  # the file a malicious spool's code would create


class Evil:
    """An object that, unpickled, creates MARKER in the directory named."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.directory / MARKER,))


def make_marker(directory: str) -> list[str]:
    """A callable a malicious spool might name."""
    (Path(directory) / MARKER).touch()
    return []


def entries(base: Path) -> list[journal.Entry]:
    """One of every kind the format holds; files lie under `base`."""
    parent = Parent(
        "sweep",
        {"linreg.kind": "sweep"},
        jobs="scheduler",
        objective="val_mae",
        direction="maximize",
        register_best="m",
        report=journal.spooled_report,  # what a sweep's report reads back as: sync hands it one
    )
    config = {"trainer": {"epochs": 3, "lr": 0.5}, "tags": ["a", None, True], "inf": math.inf}
    dataset = DatasetInfo("synthetic", "abc123", {"seed": 7, "data": {"n": 100}})
    return [
        Open("sqlite:///x.db", "linreg", parent, "p1", str(base), 12.5),
        Open("offline", "linreg"),
        StartRun("run-0", "name", {"t": "1"}, {"p": "2"}, config, dataset, True),
        StartRun("run-1", None, {}, {}, {}),
        Epochs(
            [
                EpochBatch(
                    "run-0",
                    ("loss", "weight"),
                    [(0, 1000, (1.5, -math.inf)), (1, 1001, (0.25, 2.0))],
                ),
                EpochBatch("run-1", ("loss",), []),
            ]
        ),
        FinishRun(
            "run-0",
            Outcome.DIVERGED,
            {"final_loss": math.inf},
            {"linreg.failure": "x"},
            [Artifact(str(base / "fit.png")), Artifact(str(base / "logs" / "a.out"), "logs")],
            None,
            {"features": ["x", "z"], "weights": [2.0, -1.0], "bias": 1},
        ),
        FinishRun("run-1", Outcome.COMPLETED),
        Close(),
        Close("KILLED", "stopped"),
        RunNote("run-0", "offline-abc", 41),
        ParentNote("offline-def"),
        ParentNote(None),
    ]


@pytest.mark.parametrize("index", range(len(entries(Path("/")))))
def test_every_kind_goes_through_a_line_of_plain_json_and_back(tmp_path: Path, index: int) -> None:
    entry = entries(tmp_path)[index]
    line = journal.dump(journal.encode(entry, tmp_path))
    assert line.endswith("\n") and line.count("\n") == 1
    obj = json.loads(line)
    kind = {"RunNote": "Run", "ParentNote": "Parent"}.get(type(entry).__name__)
    assert obj["v"] == journal.VERSION and obj["kind"] == (kind or type(entry).__name__)
    del obj["v"]
    assert journal.decode(obj, tmp_path) == entry


def test_a_file_is_named_relative_to_the_spool_and_a_nan_comes_back(tmp_path: Path) -> None:
    finish = FinishRun("r", Outcome.ERROR, {"loss": math.nan}, files=[Artifact(f"{tmp_path}/a/b")])
    obj = journal.encode(finish, tmp_path)
    assert obj["files"] == [{"path": "a/b", "directory": None}]
    back = journal.decode(json.loads(json.dumps(obj)), tmp_path)
    assert isinstance(back, FinishRun) and math.isnan(back.metrics["loss"])
    with pytest.raises(ValueError):
        journal.encode(FinishRun("r", Outcome.ERROR, files=[Artifact("/elsewhere/x")]), tmp_path)


def offline_spool(directory: Path, log: Path) -> Session:
    """A run spooled the way an offline job spools it, through a real Session."""
    session = Session()
    session.handle(Open("offline", "linreg", spool_dir=str(directory)))
    session.handle(StartRun("r", "run", {"t": "1"}, {"lr": "0.1"}, {"lr": 0.1}))
    session.handle(
        Epochs([EpochBatch("r", ("loss",), [(s, 1000 + s, (1.0 / (s + 1),)) for s in range(5)])])
    )
    (directory / "fit.png").write_bytes(b"png")
    files = [Artifact(str(directory / "fit.png")), Artifact(str(log), "logs")]
    session.handle(FinishRun("r", Outcome.COMPLETED, {"final_loss": 0.2}, files=files))
    session.handle(Close())
    return session


def test_a_spool_is_json_lines_and_copies_in_the_files_from_elsewhere(tmp_path: Path) -> None:
    log = tmp_path / "scheduler" / "job_log.out"
    log.parent.mkdir()
    log.write_text("the job's log")
    offline_spool(tmp_path / "run", log)
    log.write_text("written later")
    lines = (tmp_path / "run" / SPOOL_FILE).read_text().splitlines()
    kinds = [json.loads(line)["kind"] for line in lines]
    assert kinds == ["Open", "StartRun", "Run", "Epochs", "FinishRun", "Close"]
    assert all(json.loads(line)["v"] == journal.VERSION == 2 for line in lines)
    files = json.loads(lines[4])["files"]
    assert files[0] == {"path": "fit.png", "directory": None}
    copied = tmp_path / "run" / files[1]["path"]
    assert files[1]["path"].startswith("mlflow-spool.files/") and copied.name == "job_log.out"
    assert copied.read_text() == "the job's log"  # as the store would have had it then


def test_a_report_or_an_open_is_not_appended(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.begin(Open("offline", "linreg"), {}, None)
    with pytest.raises(ValueError, match="drawn"):
        spool.append(FinishRun("r", Outcome.COMPLETED, report=Task(os.system, "true")))
    with pytest.raises(ValueError, match="first line"):
        spool.append(Open("offline", "linreg"))


def test_a_function_handed_to_tracking_must_cross_the_helpers_pipe_by_reference() -> None:
    """A lambda or a nested function would pickle in no process but the job's: refused in all."""

    def nested(_: object) -> list[str]:
        return []

    for function in (lambda _: [], nested):
        with pytest.raises(ValueError, match="module-level function"):
            Task(function, None)
        with pytest.raises(ValueError, match="module-level function"):
            Parent("s", {}, report=function)


def write(path: Path, *objs: dict[str, Any] | str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    lines = [o if isinstance(o, str) else json.dumps(o) for o in objs]
    (path / SPOOL_FILE).write_text("\n".join(lines) + "\n")
    return path


OPEN = {
    "v": 1,
    "kind": "Open",
    "tracking_uri": "offline",
    "experiment_name": "linreg",
    "parent": None,
    "parent_run_id": None,
    "spool_dir": None,
    "outage_timeout": 300.0,
}
FINISH = {
    "v": 1,
    "kind": "FinishRun",
    "run": "r",
    "outcome": "completed",
    "metrics": {},
    "tags": {},
    "files": [],
    "model": None,
}
CLOSE = {"v": 1, "kind": "Close", "status": None, "reason": "x"}


def test_a_last_line_cut_short_is_skipped_with_one_warning(tmp_path: Path) -> None:
    directory = tmp_path / "run"
    offline_spool(directory, tmp_path / "none")
    path = directory / SPOOL_FILE
    whole = path.read_bytes()
    path.write_bytes(whole[:-20])  # the Close line, cut
    warnings: list[str] = []
    read = list(Spool(directory).entries(warnings.append))
    assert [type(e).__name__ for _, e in read][-1] == "FinishRun"
    assert len(warnings) == 1 and "line 6 is cut short" in warnings[0]
    path.write_bytes(whole[:-20] + b"\0" * 30)  # a power cut can leave zeros
    assert len(list(Spool(directory).entries(warnings.append))) == 5 and len(warnings) == 2
    spool = Spool(directory)  # spooling again into it: the torn line goes, the next is whole
    spool.begin(Open("offline", "linreg"), {}, None)
    spool.append(Close())
    assert [type(e).__name__ for _, e in Spool(directory).entries()][-1] == "Close"


def test_a_bad_line_before_the_last_is_an_error_naming_it(tmp_path: Path) -> None:
    directory = write(tmp_path, OPEN, '{"v": 1, "kind": "Clo', CLOSE)
    with pytest.raises(TrackingError, match=r"line 2: not a line of JSON"):
        list(Spool(directory).entries())
    write(tmp_path, OPEN, {"v": 1, "kind": "Close", "status": 3, "reason": "x"}, OPEN)
    with pytest.raises(TrackingError, match=r"line 2: status: expected a string"):
        list(Spool(tmp_path).entries())
    write(tmp_path, OPEN, {"v": 1, "kind": "Shell", "command": "rm -rf /"})
    with pytest.raises(TrackingError, match=r"line 2: an unknown kind 'Shell'"):
        list(Spool(tmp_path).entries())


def test_a_newer_format_is_refused_in_one_line_with_exit_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "run", {**OPEN, "v": 3})
    assert run_sync([str(tmp_path), "--to", f"sqlite:///{tmp_path / 'mlflow.db'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "version 3" in err and "version 2" in err, err
    assert not (tmp_path / "mlflow.db").exists()


def malicious_lines(tmp_path: Path) -> list[tuple[list[dict[str, Any] | str], str]]:
    """Spools that would run code if sync trusted them, and why each is refused."""
    payload = base64.b64encode(pickle.dumps(Evil(tmp_path))).decode()
    report = {
        "run_name": "s",
        "tags": {},
        "jobs": "here",
        "objective": "val_mse",
        "direction": "minimize",
        "register_best": None,
        "report": "tests.test_journal:make_marker",
    }
    task = {"function": "tests.test_journal:make_marker", "argument": str(tmp_path)}
    return [
        ([{"open": payload, "parent_run_id": None}, CLOSE], "line 1: no format version"),
        ([OPEN, {"v": 1, "kind": "StartRun", "request": payload}], "line 2: no field 'run'"),
        ([OPEN, {**FINISH, "report": task}], "line 2: unknown fields: report"),
        ([OPEN, {"v": 1, "kind": "Task", **task}], "line 2: an unknown kind 'Task'"),
        ([OPEN, pickle.dumps(Evil(tmp_path), protocol=0).decode(), CLOSE], "line 2: not a line"),
        (
            [{**OPEN, "parent": report}, CLOSE],
            "line 1: parent.report 'tests.test_journal:make_marker': true or false (a report is "
            "never named)",
        ),
    ]


def test_a_sweeps_report_is_spooled_as_a_flag_and_sync_is_handed_the_function(
    tmp_path: Path,
) -> None:
    """The report crosses no file by name: `true`, read back as the stand-in that sync replaces
    with the report its caller hands it; version 1's one name reads as `true`."""
    parent = Parent("s", {}, report=make_marker)
    obj = journal.encode(Open("offline", "linreg", parent), tmp_path)
    assert obj["parent"]["report"] is True
    read = journal.decode(obj, tmp_path)
    assert isinstance(read, Open) and read.parent is not None
    assert read.parent.report is journal.spooled_report
    legacy = {**obj, "parent": {**obj["parent"], "report": journal.LEGACY_REPORT}}
    legacy_read = journal.decode(legacy, tmp_path)
    assert isinstance(legacy_read, Open) and legacy_read.parent is not None
    assert legacy_read.parent.report is journal.spooled_report
    none = {**obj, "parent": {**obj["parent"], "report": False}}
    none_read = journal.decode(none, tmp_path)
    assert isinstance(none_read, Open) and none_read.parent is not None
    assert none_read.parent.report is None


def test_the_malicious_payloads_are_live(tmp_path: Path) -> None:
    """(So that the test below proves something: unpickled, the payload makes the marker.)"""
    pickle.loads(pickle.dumps(Evil(tmp_path)))
    assert (tmp_path / MARKER).exists()


@pytest.mark.parametrize("index", range(len(malicious_lines(Path("/")))))
def test_a_malicious_spool_runs_no_code_and_is_refused(
    tmp_path: Path, index: int, capsys: pytest.CaptureFixture[str]
) -> None:
    lines, why = malicious_lines(tmp_path)[index]
    write(tmp_path / "run", *lines)
    store = tmp_path / "mlflow.db"
    assert run_sync([str(tmp_path), "--to", f"sqlite:///{store}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and why in err, err
    assert not (tmp_path / MARKER).exists() and not store.exists()


def test_a_file_outside_the_spool_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("not yours")
    (tmp_path / "run").mkdir()
    os.symlink(tmp_path / "secret", tmp_path / "run" / "link")
    for path, directory in (
        ("../secret", None),
        (str(tmp_path / "secret"), None),
        ("link", None),
        ("ok", "../up"),
        ("ok", "/abs"),
    ):
        finish = {**FINISH, "files": [{"path": path, "directory": directory}]}
        write(tmp_path / "run", OPEN, finish)
        with pytest.raises(
            TrackingError, match=r"line 2: files: .* (leaves|leads out of) the spool"
        ):
            sync(tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}")
        assert not (tmp_path / "mlflow.db").exists()


def contents(uri: str) -> list[tuple[Any, ...]]:
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return sorted(
        (
            r.info.run_name,
            r.info.status,
            sorted(r.data.params.items()),
            sorted(r.data.metrics.items()),
            sorted(r.data.tags.items()),
            [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, "loss")],
            sorted(a.path for a in client.list_artifacts(r.info.run_id)),
            sorted(a.path for a in client.list_artifacts(r.info.run_id, "logs")),
        )
        for r in client.search_runs(experiments)
    )


def test_syncing_a_spool_twice_adds_nothing(tmp_path: Path, store: str) -> None:
    log = tmp_path / "job_log.out"
    log.write_text("log")
    offline_spool(tmp_path / "run", log)
    (first,) = sync(tmp_path / "run", store)
    assert "4 requests delivered" in first
    stored = contents(store)
    ((name, status, params, metrics, _, losses, files, logs),) = stored
    assert (name, status, params) == ("run", "FINISHED", [("lr", "0.1")])
    assert metrics == [("final_loss", 0.2), ("loss", 0.2)] and len(losses) == 5
    assert files == ["config.yaml", "fit.png", "logs"] and logs == ["logs/job_log.out"]
    assert sync(tmp_path / "run", store) == [f"{tmp_path / 'run'}: delivered before, nothing left"]
    assert contents(store) == stored
    state = (tmp_path / "run" / "mlflow-spool.state.jsonl").read_text().splitlines()
    assert {json.loads(line)["kind"] for line in state} == {"Delivered", "Placeholder"}
