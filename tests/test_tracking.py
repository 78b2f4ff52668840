"""Tracking against a real SQLite MLflow store under tmp_path, in this process and through the
helper process: one protocol, the same results."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from linreg_exp.errors import TrackingError
from linreg_exp.lifecycle import flatten
from linreg_exp.report import sweep as sweep_report
from linreg_exp.tracking import helper, recorder, uris
from linreg_exp.tracking import store as mlflow_store
from linreg_exp.tracking.helper import Helper
from linreg_exp.tracking.messages import (
    Closed,
    EpochBatch,
    Epochs,
    Failed,
    FinishRun,
    Open,
    Parent,
    Reply,
    Request,
    StartRun,
    Stored,
)
from linreg_exp.tracking.recorder import RunStream, Tracker, Transport, finished
from linreg_exp.tracking.session import InProcess, Session
from linreg_exp.vocab import Outcome
from tests.support.waiting import wait_until


def test_tracking_uri_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert uris.resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert uris.resolve_tracking_uri(None, tmp_path) == "http://127.0.0.1:1"
    assert uris.resolve_tracking_uri("sqlite:///x.db", tmp_path) == "sqlite:///x.db"


def test_default_store_is_absolute_even_from_a_relative_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert uris.resolve_tracking_uri(None, Path(".")) == f"sqlite:///{tmp_path}/mlflow.db"


@pytest.mark.parametrize(
    ("uri", "masked"),
    [
        (
            "postgresql+psycopg2://me:s3cret@db:5432/mlflow",
            "postgresql+psycopg2://me:***@db:5432/mlflow",
        ),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
    ],
)
def test_mask_uri(uri: str, masked: str) -> None:
    assert uris.mask_uri(uri) == masked
    assert uris.mask_override(f"mlflow.tracking_uri={uri}") == f"mlflow.tracking_uri={masked}"


@pytest.mark.parametrize(("uri", "module"), [
    ("sqlite:////tmp/mlflow.db", "mlflow.store.tracking.sqlalchemy_store"),
    ("postgresql+psycopg2://u:p@host/db", "mlflow.store.tracking.sqlalchemy_store"),
    ("https://mlflow.example.com", "mlflow.store.tracking.rest_store"),
    ("file:///tmp/mlruns", None),
])  # fmt: skip
def test_a_helper_imports_its_stores_module_ahead(uri: str, module: str | None) -> None:
    assert uris.store_module(uri) == module
    if module is not None:
        __import__(module)  # MLflow still keeps it there


def test_mask_uri_with_a_colon_in_the_password() -> None:
    assert uris.mask_uri("postgresql://u:pa:ss@h:1/d") == "postgresql://u:***@h:1/d"


def test_open_store_creates_store_and_artifacts_beside_it(store: str, tmp_path: Path) -> None:
    _, experiment_id = store_open(store)
    assert store_open(store)[1] == experiment_id
    experiment = MlflowClient(store).get_experiment(experiment_id)
    assert experiment.name == "linreg"
    assert experiment.artifact_location == (tmp_path / "mlruns").as_uri()
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_an_existing_experiment_gets_the_model_training_tag(store: str) -> None:
    client = MlflowClient(store)
    experiment_id = client.create_experiment("older")
    assert mlflow_store.open_store(store, "older")[1] == experiment_id
    kind = client.get_experiment(experiment_id).tags["mlflow.experimentKind"]
    assert kind == "custom_model_development"


def store_open(uri: str) -> tuple[MlflowClient, str]:
    return mlflow_store.open_store(uri, "linreg")


@pytest.mark.parametrize(
    "uri", ["foo://bar", "sqlite:////proc/no-such-dir/mlflow.db", "sqlite:////dev/null/mlflow.db"]
)
def test_unusable_store_is_one_clear_line(uri: str) -> None:
    with pytest.raises(TrackingError, match=r"mlflow\.tracking_uri=") as error:
        store_open(uri)
    assert "\n" not in str(error.value)


def test_flatten() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": None}}, "e": "x"}) == {
        "a.b": 1,
        "a.c.d": None,
        "e": "x",
    }


def epoch(loss: float = 1.0, weight: float = 2.0, bias: float = 3.0) -> dict[str, float]:
    return {"loss": loss, "weight": weight, "bias": bias}


CONFIG = {"optimizer": {"lr": 0.01}, "mlflow": {"experiment_name": "linreg"}}
PARAMS = {"optimizer.lr": "0.01", "mlflow.experiment_name": "linreg"}
TRANSPORTS: dict[str, Callable[[], Transport]] = {"in-process": InProcess, "helper": Helper}


def start(name: str | None = None, tags: dict[str, str] | None = None) -> StartRun:
    return StartRun("run", name, tags or {}, PARAMS, CONFIG)


def stream(
    tracker: Tracker, epochs: int, outcome: Outcome = Outcome.COMPLETED, **kwargs: float
) -> str:
    """One run of `epochs` epochs through `tracker`; returns its id once it has ended."""
    run = tracker.start_run(start("t", {"k": "v"}), **kwargs)  # type: ignore[arg-type]
    for step in range(epochs):
        run.epoch(step, epoch(1.0 / (step + 1), 2.0, float(step)))
    finished(run.finish(outcome, {"final_loss": 0.5}))
    return run.started().run_id


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_run_streams_its_epochs_and_ends_with_its_status(store: str, transport: str) -> None:
    tracker = Tracker(TRANSPORTS[transport](), Open(store, "linreg"))
    assert tracker.opened().parent_run_id is None
    outcomes = [Outcome.COMPLETED, Outcome.ERROR, Outcome.INTERRUPTED]
    run_ids = [stream(tracker, 3, outcome) for outcome in outcomes]
    assert tracker.close().summary is None
    client = MlflowClient(store)
    for run_id, status, outcome in zip(run_ids, ("FINISHED", "FAILED", "KILLED"), outcomes,
                                       strict=True):  # fmt: skip
        logged = client.get_run(run_id)
        assert logged.info.status == status and logged.info.run_name == "t"
        tags = logged.data.tags
        assert tags["k"] == "v" and tags["linreg.outcome"] == outcome
        assert tags["mlflow.source.name"] == "linreg_exp" and "mlflow.user" in tags
        assert logged.data.params["optimizer.lr"] == "0.01"
        assert logged.data.metrics["final_loss"] == 0.5
        assert [m.value for m in client.get_metric_history(run_id, "bias")] == [0.0, 1.0, 2.0]
        assert "config.yaml" in [a.path for a in client.list_artifacts(run_id)]
    assert mlflow.active_run() is None


def test_thinned_epochs_still_log_the_last_one(store: str) -> None:
    tracker = Tracker(InProcess(), Open(store, "linreg"))
    run_id = stream(tracker, 25, log_every_n_epochs=10)
    tracker.close()
    steps = [m.step for m in MlflowClient(store).get_metric_history(run_id, "loss")]
    assert sorted(steps) == [0, 10, 20, 24]


def test_a_batch_sent_twice_is_stored_once(store: str) -> None:
    session = Session()
    session.handle(Open(store, "linreg"))
    session.handle(start())
    names = ("loss", "weight", "bias")
    rows = [(step, 1000 + step, (1.0, 2.0, 3.0)) for step in range(5)]
    assert session.handle(Epochs([EpochBatch("run", names, rows[:3])])) == Stored(3)
    assert session.handle(Epochs([EpochBatch("run", names, rows)])) == Stored(2)
    run_id = session.runs["run"].run_id
    assert len(MlflowClient(store).get_metric_history(run_id, "loss")) == 5
    session.handle(FinishRun("run", Outcome.COMPLETED))


def test_a_started_run_that_is_never_finished_ends_killed(store: str) -> None:
    tracker = Tracker(InProcess(), Open(store, "linreg"))
    tracker.start_run(start()).epoch(0, epoch())
    tracker.close()
    (run,) = MlflowClient(store).search_runs([store_open(store)[1]])
    assert run.info.status == "KILLED" and run.data.tags["linreg.failure"]


def test_the_helper_ends_the_run_killed_with_its_epochs_when_the_job_vanishes(store: str) -> None:
    helper = Helper()
    tracker = Tracker(helper, Open(store, "linreg"))
    run = tracker.start_run(start())
    for step in range(300):
        run.epoch(step, epoch())
    run._send()  # the batch is on its way, as after a second of training
    wait_until(lambda: not tracker.busy and tracker.store_rate is not None, 120,
               "the batch stored")  # fmt: skip
    helper.conn.close()  # hang up without a word, as a job killed by SIGKILL would
    helper.process.wait(60)
    (logged,) = MlflowClient(store).search_runs([store_open(store)[1]])
    assert logged.info.status == "KILLED"
    assert "ended before reporting" in logged.data.tags["linreg.failure"]
    assert len(MlflowClient(store).get_metric_history(logged.info.run_id, "loss")) == 300


def test_a_tracker_asked_nothing_makes_no_store_and_its_helper_is_ended_at_once(
    tmp_path: Path,
) -> None:
    """A launch rejected before its first run (a job's config, the device) closes its tracker
    having asked nothing: the store is never opened, so never made, and the helper, which was
    only importing MLflow, is killed rather than waited for."""
    db = tmp_path / "mlflow.db"
    helper = Helper()
    tracker = Tracker(helper, Open(f"sqlite:///{db}", "linreg"))
    assert tracker.close() == Closed(None, None)
    assert helper.process.returncode is not None  # ended by close, not left to finish
    assert sorted(tmp_path.iterdir()) == []


def test_a_helper_started_early_serves_the_first_tracker_or_is_ended_at_exit(store: str) -> None:
    """`python -m linreg_exp` starts its helper before Hydra composes (helper.start_early): the
    launch's tracker takes it; a launch that never comes (bad input) leaves no process."""
    helper.start_early()
    early = helper._early
    assert early is not None
    taken = Helper()
    assert taken.process is early[0] and helper._early is None
    tracker = Tracker(taken, Open(store, "linreg"))
    run = tracker.start_run(start())
    run.epoch(0, epoch())
    assert finished(run.finish(Outcome.COMPLETED)).run_id == run.started().run_id
    tracker.close()
    code = ("from linreg_exp.tracking import helper; helper.start_early(); "
            "print(helper._early[0].pid, flush=True)")  # fmt: skip
    pid = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, timeout=120).stdout)  # fmt: skip
    with pytest.raises(ProcessLookupError):  # ended (and reaped) before its launcher exited
        os.kill(pid, 0)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_unusable_store_is_reported_before_any_run(transport: str) -> None:
    uri = "sqlite:////proc/no/such/dir/mlflow.db"
    tracker = Tracker(TRANSPORTS[transport](), Open(uri, "linreg"))
    with pytest.raises(TrackingError, match=r"mlflow\.tracking_uri="):
        tracker.opened()
    tracker.close()


def test_a_sweep_records_the_parent_with_its_first_run_and_summarises_it(store: str) -> None:
    parent = Parent("s", {"linreg.kind": "sweep"}, report=sweep_report.draw)  # the launch's
    tracker = Tracker(InProcess(), Open(store, "linreg", parent))
    assert tracker.opened().parent_run_id is None  # not before a job has started
    runs = [stream(tracker, 50, outcome) for outcome in (Outcome.COMPLETED, Outcome.DIVERGED)]
    closed = tracker.close()
    assert closed.error is None and closed.summary is not None
    assert "2 jobs, 1 finished, 1 diverged, 0 failed" in closed.summary
    client = MlflowClient(store)
    experiment_id = store_open(store)[1]
    (logged_parent,) = client.search_runs([experiment_id], "tags.`linreg.kind` = 'sweep'")
    assert logged_parent.info.status == "FINISHED"
    assert logged_parent.data.metrics["jobs_total"] == 2
    assert {a.path for a in client.list_artifacts(logged_parent.info.run_id)} == {
        "summary.csv",
        "sweep.png",
    }
    for run_id in runs:
        assert client.get_run(run_id).data.tags["mlflow.parentRunId"] == (logged_parent.info.run_id)


def test_a_sweep_whose_process_vanishes_leaves_parent_and_child_killed(store: str) -> None:
    helper = Helper()
    tracker = Tracker(helper, Open(store, "linreg", Parent("s", {})))
    tracker.start_run(start()).started()
    helper.conn.close()
    helper.process.wait(60)
    runs = MlflowClient(store).search_runs([store_open(store)[1]])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"KILLED"}


def test_the_first_epochs_reach_the_store_within_seconds(store: str) -> None:
    tracker = Tracker(InProcess(), Open(store, "linreg"))
    run = tracker.start_run(start())
    run_id = run.started().run_id
    client, started, step = MlflowClient(store), time.monotonic(), 0
    while not client.get_metric_history(run_id, "loss"):  # training goes on meanwhile
        assert time.monotonic() - started < 15, "no epoch stored yet"  # ~0.1 s when idle
        for _ in range(10):
            run.epoch(step, epoch())
            step += 1
        time.sleep(0.05)
    finished(run.finish(Outcome.COMPLETED))
    tracker.close()


class FlakyLink:
    """A real in-process Session behind a link that loses its `lose`-th batch of epochs."""

    def __init__(self, lose: int) -> None:
        self.inner, self.lose, self.batches = InProcess(), lose, 0

    def request(self, message: Request) -> Reply:
        if isinstance(message, Epochs):
            self.batches += 1
            if self.batches == self.lose:
                return Failed("the link dropped the batch", user_error=False)
        return self.inner.request(message)

    def close(self) -> None:
        self.inner.close()


def test_a_batch_the_store_lost_stops_training_and_the_run_ends_failed(store: str) -> None:
    tracker = Tracker(FlakyLink(lose=2), Open(store, "linreg"))
    run = tracker.start_run(start(), log_every_seconds=0.05)
    step, hang_guard = 0, time.monotonic() + 120
    with pytest.raises(RuntimeError, match="the link dropped the batch"):
        while time.monotonic() < hang_guard:
            run.epoch(step, epoch())
            step += 1
    error_tags = {"linreg.error": "the link dropped the batch"}
    finished(run.finish(Outcome.ERROR, tags=error_tags))
    assert tracker.close().error is None
    logged = MlflowClient(store).get_run(run.started().run_id)
    assert logged.info.status == "FAILED" and logged.data.tags["linreg.outcome"] == "error"
    assert "not stored" in logged.data.tags["linreg.error"]


class HoldingLink:
    """A real in-process Session behind a link that holds batch `hold` of epochs, unanswered,
    until the test says (`answer`): then it fails it with `failure`, or stores it. A store that
    is behind, or the race a loaded machine runs (batch 2 answered after batch 3 was queued),
    driven on purpose."""

    def __init__(self, hold: int, failure: str | None = None) -> None:
        self.inner, self.hold, self.failure, self.batches = InProcess(), hold, failure, 0
        self.holding = threading.Event()  # the batch is in the link, unanswered
        self.answer = threading.Event()  # the test says: answer it now

    def request(self, message: Request) -> Reply:
        if isinstance(message, Epochs):
            self.batches += 1
            if self.batches == self.hold:
                self.holding.set()
                assert self.answer.wait(60), "hang guard"
                if self.failure is not None:
                    return Failed(self.failure, user_error=False)
        return self.inner.request(message)

    def close(self) -> None:
        self.inner.close()


def test_a_lost_batch_answered_after_the_next_was_queued_is_seen(store: str) -> None:
    link = HoldingLink(hold=2, failure="the store lost batch 2")
    tracker = Tracker(link, Open(store, "linreg"))
    run = tracker.start_run(start(), log_every_seconds=3600)  # batches leave when we say
    run.epoch(0, epoch())
    run.group._send()  # batch 1: stored
    run.epoch(1, epoch())
    run.group._send()  # batch 2: held in the link
    assert link.holding.wait(60), "hang guard"
    run.epoch(2, epoch())
    run.group._send()  # batch 3: queued while batch 2 is unanswered
    link.answer.set()  # now batch 2 fails, and batch 3 is stored after it
    with pytest.raises(RuntimeError, match=r"the store lost batch 2 \(epoch 1 not stored"):
        hang_guard = time.monotonic() + 60
        step = 3
        while time.monotonic() < hang_guard:
            run.epoch(step, epoch())
            run.group._send()
            step += 1
    # a job that went on regardless (say, it caught the error) cannot end the run FINISHED
    finished(run.finish(Outcome.COMPLETED))
    tracker.close()
    logged = MlflowClient(store).get_run(run.started().run_id)
    assert logged.info.status == "FAILED" and logged.data.tags["linreg.outcome"] == "error"
    assert "epoch 1 not stored" in logged.data.tags["linreg.error"]
    steps = [m.step for m in MlflowClient(store).get_metric_history(logged.info.run_id, "loss")]
    assert 1 not in steps and {0, 2} <= set(steps)


def test_only_a_batch_of_epochs_waits_for_a_store_that_is_behind(store: str) -> None:
    link = HoldingLink(hold=1)  # a store that is behind
    tracker = Tracker(link, Open(store, "linreg"))
    first = tracker.start_run(start("first"), log_every_seconds=3600)  # batches leave when we say
    first.epoch(0, epoch())
    first.group._send()  # batch 1: held in the link
    assert link.holding.wait(60), "hang guard"
    first.epoch(1, epoch())
    first.group._send()  # batch 2: queued behind it
    assert tracker.busy
    # a run's end and the next run's start queue at once (a sweep's next batch starts) ...
    ends: list[Future[Reply]] = []
    second: list[RunStream] = []

    def move_on() -> None:
        ends.append(first.finish(Outcome.COMPLETED))
        second.append(tracker.start_run(start("second"), log_every_seconds=3600))

    moving_on = threading.Thread(target=move_on)
    moving_on.start()
    moving_on.join(60)
    assert not moving_on.is_alive() and second, "a run's end or start waited for the store"
    # ... while a third batch of epochs waits until the second is taken
    second[0].epoch(0, epoch())
    third = threading.Thread(target=second[0].group._send)
    third.start()
    third.join(0.2)
    assert third.is_alive()
    link.answer.set()
    third.join(60)
    assert not third.is_alive(), "hang guard"
    finished(ends[0])
    finished(second[0].finish(Outcome.COMPLETED))
    tracker.close()
    client = MlflowClient(store)
    for run, steps in ((first, [0, 1]), (second[0], [0])):
        logged = client.get_run(run.started().run_id)
        assert logged.info.status == "FINISHED"
        history = client.get_metric_history(logged.info.run_id, "loss")
        assert sorted(m.step for m in history) == steps


class SlowLink:
    """A real in-process Session behind a link that takes `seconds_per_epoch` for each epoch
    it carries: a store much slower than training."""

    def __init__(self, seconds_per_epoch: float) -> None:
        self.inner = InProcess()
        self.delay = seconds_per_epoch
        self.stored = 0
        self.busy = 0.0  # seconds spent carrying requests and storing them

    def request(self, message: Request) -> Reply:
        started = time.monotonic()
        if isinstance(message, Epochs):
            time.sleep(self.delay * sum(len(batch.rows) for batch in message.batches))
        reply = self.inner.request(message)
        self.busy += time.monotonic() - started
        if isinstance(reply, Stored):
            self.stored += reply.count
        return reply

    def close(self) -> None:
        self.inner.close()


def test_training_waits_for_a_slow_store_and_stays_seconds_ahead(store: str) -> None:
    link = SlowLink(seconds_per_epoch=0.001)  # 1,000 epochs a second
    tracker = Tracker(link, Open(store, "linreg"))
    run = tracker.start_run(start(), log_every_seconds=0.2)
    step, deadline, most_ahead, largest_batch = 0, time.monotonic() + 6, 0, 0
    while time.monotonic() < deadline:  # as fast as it can: far faster than the store
        run.epoch(step, epoch())
        step += 1
        most_ahead = max(most_ahead, step - link.stored)
        # the batch size follows the store's measured rate, which a busy machine lowers late
        largest_batch = max(largest_batch, tracker.batch_limit)
    started, busy_before = time.monotonic(), link.busy
    finished(run.finish(Outcome.INTERRUPTED))
    catch_up, storing = time.monotonic() - started, link.busy - busy_before
    tracker.close()
    # training stayed a few batches, i.e. a few seconds of the store's time, ahead ...
    assert most_ahead <= 4 * largest_batch + 2 * recorder.FIRST_BATCH
    # ... and catching up is storing that backlog, not waiting (both slow alike when busy)
    assert catch_up < storing + 1.5, (catch_up, storing)
    assert link.stored == step  # and nothing was dropped
    assert len(MlflowClient(store).get_metric_history(run.started().run_id, "loss")) == step


def test_an_epoch_the_engine_saw_but_a_signal_kept_from_the_queue_is_sent_at_the_end(
    store: str,
) -> None:
    tracker = Tracker(InProcess(), Open(store, "linreg"))
    run = tracker.start_run(start(), log_every_seconds=3600)
    for step in range(5):
        run.epoch(step, epoch())
    last = (5, tuple(epoch().values()))  # seen by the engine, never queued (a signal came)
    finished(run.group.finish(run.run, Outcome.INTERRUPTED, last=last))
    tracker.close()
    steps = [m.step for m in MlflowClient(store).get_metric_history(run.started().run_id, "loss")]
    assert sorted(steps) == [0, 1, 2, 3, 4, 5]
