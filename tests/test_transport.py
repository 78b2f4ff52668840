"""The resilient transport (tracking/transport.py, backlog.py, outages.py) in milliseconds: a fake
clock and a fake store of our own behind it, a real spool under tmp_path. Outages ridden out,
past the timeout into the spool, the store back and the spool drained in order with no step
twice, a stop during an outage, a drain cut short, a reply lost after the store took a batch."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from linreg_exp.tracking.messages import (
    Close,
    Closed,
    EpochBatch,
    Epochs,
    Failed,
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
from linreg_exp.tracking.spool import SPOOL_FILE, Spool
from linreg_exp.tracking.sync import sync
from linreg_exp.tracking.transport import Resilient
from linreg_exp.vocab import Outcome

NAMES = ("loss", "weight", "bias")


class Outage(Exception):
    """What our fake store raises while it is down."""


class FakeClock:
    """Time that passes only when slept."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeStore:
    """A writer of our own: runs, their steps and their end, in memory; down between `down`
    and `back` (clock time), or refusing requests of a kind, or losing a reply after storing."""

    experiment_id = "exp"

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.down, self.back = float("inf"), float("inf")
        self.fail_after_writes: int | None = None  # down again after this many more writes
        self.lose_next_reply = False  # store the next Epochs, then fail as if cut off
        self.refuse: type[Request] | None = None
        self.parent_run_id: str | None = None
        self.runs: dict[str, str] = {}  # open runs: key -> id
        self.steps: dict[str, list[int]] = {}  # by run id, in the order stored
        self.status: dict[str, str] = {}  # by run id
        self.requests: list[Request] = []  # done, in order
        self.tries: list[float] = []  # when each write was tried
        self.samplers = 0  # restarts

    @property
    def up(self) -> bool:
        return not self.down <= self.clock.now < self.back

    def write(self, request: Request) -> Reply:
        self.tries.append(self.clock.now)
        if self.fail_after_writes is not None:
            if self.fail_after_writes == 0:
                self.down, self.back, self.fail_after_writes = self.clock.now, float("inf"), None
            else:
                self.fail_after_writes -= 1
        if not self.up:
            raise Outage("connection refused")
        if self.refuse is not None and isinstance(request, self.refuse):
            raise ValueError("the store refuses this")
        reply = self._do(request)
        self.requests.append(request)
        if self.lose_next_reply and isinstance(request, Epochs):
            self.lose_next_reply = False
            raise Outage("connection reset after the store took it")
        return reply

    def _do(self, request: Request) -> Reply:
        match request:
            case Open():
                return Opened(self.experiment_id, None)
            case StartRun():
                run_id = self.runs[request.run] = f"run-{len(self.steps)}"
                self.steps[run_id] = []
                return Started(request.run, run_id, self.experiment_id, None)
            case Epochs():
                count = 0
                for batch in request.batches:
                    steps = self.steps[self.runs[batch.run]]
                    new = [row[0] for row in batch.rows if not steps or row[0] > steps[-1]]
                    steps += new
                    count += len(new)
                return Stored(count)
            case FinishRun():
                run_id = self.runs.pop(request.run)
                self.status[run_id] = request.outcome.status
                self.tags = request.tags
                return Finished(run_id)
            case Close():
                for run_id in self.runs.values():
                    self.status[run_id] = "KILLED"
                self.runs.clear()
                return Closed(None, None)
        raise TypeError(request)

    def is_outage(self, error: Exception) -> bool:
        return isinstance(error, Outage)

    def probe(self) -> None:
        if not self.up:
            raise Outage("connection refused")

    def open_runs(self) -> dict[str, tuple[str, int]]:
        return {k: (r, (self.steps[r] or [-1])[-1]) for k, r in self.runs.items()}

    def stop_samplers(self) -> None:
        pass

    def restart_samplers(self) -> None:
        self.samplers += 1


class Rig:
    """A transport over a fake store, its console lines and its probes (run when we say)."""

    def __init__(self, tmp_path: Path, timeout: float = 300.0, uri: str = "http://store") -> None:
        self.clock = FakeClock()
        self.store = FakeStore(self.clock)
        self.lines: list[str] = []
        self.probes: list[Callable[[], None]] = []
        self.stopping = False
        self.dir = tmp_path
        self.transport = Resilient(self.store, lambda: self.stopping, self.clock,
                                   tell=self.lines.append, start=self.probes.append)  # fmt: skip
        opened = self.transport.handle(Open(uri, "linreg", spool_dir=str(tmp_path),
                                            outage_timeout=timeout))  # fmt: skip
        assert isinstance(opened, Opened), opened
        self.step = 0

    def start(self, key: str = "r") -> Reply:
        return self.transport.handle(StartRun(key, "run", {}, {}, {}))

    def epochs(self, count: int, key: str = "r") -> Reply:
        rows = [(s, 1000 + s, (1.0, 2.0, 3.0)) for s in range(self.step, self.step + count)]
        self.step += count
        return self.transport.handle(Epochs([EpochBatch(key, NAMES, rows)]))

    def probe(self) -> None:
        """The background probe, run now (in this thread): until the store answers."""
        assert len(self.probes) == 1, "one probe at a time"
        self.probes.pop()()

    def state(self) -> list[dict[str, object]]:
        path = Spool(self.dir).state
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def spooled_requests(self) -> list[int]:
        """The line numbers of the requests in the spool (not its Open, not its notes)."""
        return [n for n, entry in Spool(self.dir).entries()
                if isinstance(entry, StartRun | Epochs | FinishRun | Close)]  # fmt: skip


def test_an_outage_within_the_timeout_is_ridden_out_with_back_off_in_two_lines(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    rig.start()
    assert rig.epochs(10) == Stored(10)
    rig.store.down, rig.store.back = rig.clock.now, 20.0
    assert rig.epochs(10) == Stored(10)  # waited (training with it) and sent again
    assert rig.store.tries[-6:] == [0, 1, 3, 7, 15, 30]  # back-off: 1, 2, 4, 8, 15 s
    assert rig.transport.handle(FinishRun("r", Outcome.COMPLETED)) == Finished("run-0")
    assert rig.store.steps["run-0"] == list(range(20))
    assert rig.store.tags["linreg.outages"] == "30 s"
    assert len(rig.lines) == 2, rig.lines
    assert "does not answer (connection refused)" in rig.lines[0] and "300 s" in rig.lines[0]
    assert "is back after 30 s; 10 epochs delivered late" in rig.lines[1]
    assert not (tmp_path / SPOOL_FILE).exists() and not rig.probes
    assert "does not answer" in (tmp_path / "mlflow-outages.log").read_text()


def test_past_the_timeout_requests_go_to_the_spool_and_training_goes_on(tmp_path: Path) -> None:
    rig = Rig(tmp_path, timeout=10)
    rig.start()
    rig.epochs(5)
    rig.store.down = rig.clock.now
    assert rig.epochs(5) == Stored(5)  # spooled after the timeout
    waited = rig.clock.now
    assert 10 <= waited < 16
    for _ in range(20):
        assert rig.epochs(100) == Stored(100)
    assert rig.clock.now == waited  # spooling does not wait for the store
    assert rig.transport.handle(FinishRun("r", Outcome.INTERRUPTED)) == Finished("run-0")
    assert rig.transport.handle(Close()) == Closed(None, None)
    assert len(rig.lines) == 2, rig.lines
    assert "did not come back" in rig.lines[1]
    assert f"deliver them with: linreg-exp sync {tmp_path}" in rig.lines[1]
    assert len(rig.spooled_requests()) == 23 and rig.state() == []  # all for sync
    assert rig.store.steps["run-0"] == list(range(5))
    assert len(rig.probes) == 1  # the store was being asked; it ends with the Close
    rig.probe()
    assert rig.store.tries[-1] < waited + 1  # no probe after Close


def test_a_stop_during_an_outage_spools_at_once(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.start()
    rig.store.down = rig.clock.now
    rig.stopping = True  # SIGTERM: the job stops, and does not wait for the store
    assert rig.epochs(5) == Stored(5)
    assert rig.clock.now == 0
    finished = rig.transport.handle(FinishRun("r", Outcome.INTERRUPTED))
    assert finished == Finished("run-0")
    assert rig.transport.handle(Close()) == Closed(None, None)
    assert [type(e).__name__ for _, e in Spool(tmp_path).entries()][-3:] == [
        "Epochs", "FinishRun", "Close"]  # fmt: skip
    assert "linreg-exp sync" in rig.lines[-1]


def spool_an_outage(rig: Rig) -> None:
    """Run r streams, the store goes down past the timeout, r goes on spooled, a run s starts
    and ends during the outage (the store has never heard of it), r goes on."""
    rig.start()
    rig.epochs(50)
    rig.store.down, rig.store.back = rig.clock.now, rig.clock.now + 60
    rig.epochs(1000)  # waits 10 s, then is spooled: the spool begins
    for _ in range(5):
        rig.epochs(1000)
    assert isinstance(started := rig.start("s"), Started)
    assert started.run_id.startswith("offline-")  # a placeholder, for now
    rig.transport.handle(Epochs([EpochBatch("s", NAMES, [(0, 1, (1.0, 2.0, 3.0))])]))
    rig.transport.handle(FinishRun("s", Outcome.COMPLETED))
    rig.epochs(1000)


def test_the_store_back_a_live_run_drains_its_spool_in_order_while_it_trains(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path, timeout=10)
    spool_an_outage(rig)
    backlog = rig.transport.backlog
    assert backlog is not None and len(backlog) == 10
    rig.clock.now = 70  # the store has been back for 10 s
    rig.probe()  # the probe finds it (in the background, with a real transport)
    assert rig.store.up and len(rig.lines) == 1 and rig.clock.now == 75  # (its 5 s sleep)
    sizes = []
    while rig.transport.backlog is not None:  # each call delivers 3x its own epochs
        assert rig.epochs(100) == Stored(100)
        sizes.append(len(backlog))
        assert len(sizes) < 100, "hang guard"
    assert sizes[:3] == [10, 10, 10]  # 1000 epochs spooled a line, 100 added: one a call ...
    assert rig.clock.now == 75  # ... and the store is not waited for
    assert rig.store.steps["run-0"] == list(range(rig.step))  # every step, once, in order
    assert rig.store.steps["run-1"] == [0] and rig.store.status["run-1"] == "FINISHED"
    assert [type(r).__name__ for r in rig.store.requests[-3:]] == ["Epochs"] * 3
    assert len(rig.lines) == 2, rig.lines
    assert f"is back after 75 s; {rig.step - 50 + 1} epochs delivered late" in rig.lines[1]
    assert rig.store.samplers == 1
    # the spool's state says it all went: a sync sends nothing more
    delivered = [e["line"] for e in rig.state() if e["kind"] == "Delivered"]
    assert delivered == rig.spooled_requests()
    (placeholder,) = [e for e in rig.state() if e["kind"] == "Placeholder"]
    assert placeholder["run_id"] == "run-1"
    assert sync(tmp_path) == [f"{tmp_path}: delivered before, nothing left"]
    # live again
    tries = len(rig.store.tries)
    assert rig.epochs(10) == Stored(10) and len(rig.store.tries) == tries + 1
    rig.transport.handle(FinishRun("r", Outcome.INTERRUPTED))
    assert rig.store.tags["linreg.outages"] == "75 s" and rig.store.status["run-0"] == "KILLED"


def test_the_job_ending_while_the_spool_drains_delivers_all_and_ends_its_run(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path, timeout=10)
    spool_an_outage(rig)
    rig.clock.now = 70
    rig.probe()
    rig.stopping = True  # SIGTERM after the store came back
    rig.epochs(10)
    assert rig.transport.backlog is not None  # not all yet
    assert isinstance(rig.transport.handle(FinishRun("r", Outcome.INTERRUPTED)), Finished)
    assert rig.transport.handle(Close()) == Closed(None, None)  # the store's own answer
    assert rig.transport.backlog is None
    assert rig.store.status == {"run-0": "KILLED", "run-1": "FINISHED"}
    assert rig.store.steps["run-0"] == list(range(rig.step))
    assert "is back after" in rig.lines[-1] and len(rig.lines) == 2


def test_a_drain_cut_short_by_a_new_outage_goes_on_where_it_stopped(tmp_path: Path) -> None:
    rig = Rig(tmp_path, timeout=10)
    spool_an_outage(rig)
    rig.clock.now = 70
    rig.probe()
    rig.store.fail_after_writes = 2  # answers the probe, takes two requests, is gone again
    for _ in range(3):
        rig.epochs(1000)  # (owed 3001 epochs a call: all it can, then spooled on)
    assert len(rig.probes) == 1 and rig.transport.backlog is not None
    partly = [e["line"] for e in rig.state() if e["kind"] == "Delivered"]
    assert partly == rig.spooled_requests()[:2]
    rig.store.back = rig.clock.now + 30
    rig.probe()
    rig.transport.handle(FinishRun("r", Outcome.COMPLETED))
    rig.transport.handle(Close())
    assert rig.transport.backlog is None
    delivered = [e["line"] for e in rig.state() if e["kind"] == "Delivered"]
    assert delivered == rig.spooled_requests()  # each once, in order
    assert rig.store.steps["run-0"] == list(range(rig.step))
    assert rig.store.status == {"run-0": "FINISHED", "run-1": "FINISHED"}
    assert len(rig.lines) == 2, rig.lines


def test_a_batch_the_store_took_whose_reply_was_lost_is_stored_once(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.start()
    rig.store.lose_next_reply = True  # cut off after the store took it: it is sent again
    assert rig.epochs(10) == Stored(0)  # the second time, the store has every step
    rig.epochs(10)
    assert rig.store.steps["run-0"] == list(range(20))
    assert "is back after 1 s" in rig.lines[-1]


def test_a_spooled_request_the_store_refuses_is_left_for_sync_in_one_line(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path, timeout=10)
    spool_an_outage(rig)
    rig.clock.now = 70
    rig.probe()
    rig.store.refuse = StartRun  # run s, spooled, cannot be created
    for _ in range(8):
        assert isinstance(rig.epochs(1000), Stored)
    assert rig.transport.backlog is not None and not rig.probes  # left alone
    assert len(rig.lines) == 2 and "refused a spooled request" in rig.lines[1]
    assert f"linreg-exp sync {tmp_path}" in rig.lines[1]
    assert "ValueError: the store refuses this" in rig.lines[1]
    assert isinstance(rig.transport.handle(Close()), Closed)
    assert len(rig.lines) == 2


def test_an_offline_run_is_spooled_by_design_and_never_drained(tmp_path: Path) -> None:
    rig = Rig(tmp_path, uri="offline")
    assert isinstance(rig.start(), Started)
    assert rig.epochs(10) == Stored(10)
    assert rig.transport.handle(Close()) == Closed(None, None)
    assert rig.store.tries == [] and not rig.probes and rig.lines == []
    assert len(rig.spooled_requests()) == 3


@pytest.mark.parametrize("stop", [False, True])
def test_without_a_spool_dir_an_outage_is_a_failed_reply(tmp_path: Path, stop: bool) -> None:
    transport = Resilient(FakeStore(FakeClock()), lambda: stop, FakeClock(), tell=print)
    transport.handle(Open("http://store", "linreg"))
    transport.writer.down = 0.0  # type: ignore[attr-defined]
    reply = transport.handle(StartRun("r", "run", {}, {}, {}))
    assert isinstance(reply, Failed) and "Outage: connection refused" in reply.message
