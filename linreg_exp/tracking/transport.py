"""The resilient transport: a store that stops answering is waited for, spooled past, caught up.

It stands between a Tracker's requests and the writer (writer.py), which only makes the store
calls. A request the store does not answer (an outage, as the writer tells) is sent again with
back-off, training waiting meanwhile (its queue is full), until the store answers or
`outage_timeout` passes, or `stop_waiting()` says the job is stopping or gone. From then on the
run trains on, its requests kept in the spool (backlog.py) and acknowledged at once, while a
thread asks the store every `probe_every` seconds whether it is back. Once it is, each request
is kept behind the others and then the oldest are delivered, CATCH_UP times the new request's
epochs a call: the backlog shrinks, and training, which waits for these calls as it waits for a
slow store, goes at most a third of the store's pace until it is caught up. Close delivers all
that is left.

Two console lines an outage: the store does not answer; it is back, N epochs delivered late. A
run that ends before it is back says instead where its spool is and how to sync it. An offline
run (`mlflow.tracking_uri=offline`) is spooled from its Open on, and never drained. Time comes
from a Clock, so that a test drives an outage in milliseconds.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from linreg_exp.errors import LinregError, TrackingError
from linreg_exp.tracking.backlog import Backlog, Delivery, epochs_in
from linreg_exp.tracking.messages import (
    Close,
    Failed,
    Open,
    Opened,
    Reply,
    Request,
    describe_error,
)
from linreg_exp.tracking.outages import Clock, Outages, SystemClock
from linreg_exp.tracking.spool import Spool, is_offline
from linreg_exp.tracking.uris import mask_uri
from linreg_exp.vocab import KILLED

log = logging.getLogger(__name__)

OUTAGE_LOG = "mlflow-outages.log"  # each outage's whole error and its course, beside the spool
PROBE_SECONDS = 5.0  # while spooling, how often the store is asked whether it is back
FIRST_DELAY, LONGEST_DELAY = 1.0, 15.0  # the back-off between tries while the run waits
CATCH_UP = 3  # spooled epochs delivered a call, per epoch of the call's own request


class Writer(Delivery, Protocol):
    """What the transport needs of the layer that makes the store calls (writer.Writer)."""

    experiment_id: str

    def probe(self) -> None:
        """A cheap call that needs the store; raises if it does not answer."""

    def open_runs(self) -> dict[str, tuple[str, int]]:
        """Runs created and not ended: (run id, last epoch stored), by key."""

    def stop_samplers(self) -> None: ...

    def restart_samplers(self) -> None: ...


def say(line: str) -> None:
    """One line for the user, wherever this runs (the helper shares the job's console)."""
    print(line, file=sys.stderr, flush=True)


def in_a_thread(work: Callable[[], None]) -> None:
    threading.Thread(target=work, name="linreg-probe", daemon=True).start()


class Resilient:
    """The transport of one Tracker's requests to one Writer (see the module docstring)."""

    def __init__(
        self,
        writer: Writer,
        stop_waiting: Callable[[], bool] = lambda: False,
        clock: Clock | None = None,
        *,
        tell: Callable[[str], None] = say,
        start: Callable[[Callable[[], None]], None] = in_a_thread,
        probe_every: float = PROBE_SECONDS,
    ) -> None:
        self.writer, self.stop_waiting = writer, stop_waiting
        self.clock = clock or SystemClock()
        self.tell, self.start, self.probe_every = tell, start, probe_every
        self.request: Open | None = None
        self.backlog: Backlog | None = None  # spooling: every request goes there first
        self.outages = Outages(self.clock)  # the outage clock, and what each run lived through
        self.back_at: float | None = None  # when the probe found it answering again
        self.late = 0  # epochs delivered late in this outage
        self.answers = threading.Event()  # the probe found the store answering
        self.probing = False
        self.closed = False  # Close was answered: nothing is left to end

    def handle(self, request: Request) -> Reply:
        """Answer one request; an error is a Failed reply, and the transport goes on."""
        try:
            if isinstance(request, Open):
                return self._open(request)
            self.outages.see(request)
            self.closed = self.closed or isinstance(request, Close)
            try:
                return self._live(request) if self.backlog is None else self._spooled(request)
            finally:
                self.outages.saw(request)
        except LinregError as error:
            return Failed(str(error), user_error=True)
        except Exception as error:
            log.exception("tracking failed on %s", type(request).__name__)
            return Failed(describe_error(error), user_error=False)

    def close_all(self, reason: str) -> None:
        """The job is gone without a word (killed outright): end what it left open, KILLED."""
        if not self.closed:
            with contextlib.suppress(Exception):
                self.handle(Close(KILLED, reason))

    def _open(self, request: Open) -> Reply:
        self.request = request
        if not is_offline(request.tracking_uri):
            return self.writer.write(request)  # an outage now is an error: no run exists yet
        if request.spool_dir is None:
            raise TrackingError("mlflow.tracking_uri=offline: no directory to spool runs in")
        spool = Spool(request.spool_dir)
        spool.begin(request, {}, request.parent_run_id)
        self.backlog = Backlog(spool, drained=False)
        return Opened(spool.experiment_id, spool.parent_run_id)

    def _live(self, request: Request) -> Reply:
        try:
            return self.writer.write(self.outages.tagged(request))
        except Exception as error:
            if not self.writer.is_outage(error) or self._spool_dir is None:
                raise
            return self._ride_out(request, error)

    def _ride_out(self, request: Request, error: Exception) -> Reply:
        """Wait for a store that stopped answering and send `request` again; spool it after
        the outage timeout, or at once if the job is stopping or gone."""
        assert self.request is not None
        timeout, delay, began = self.request.outage_timeout, FIRST_DELAY, self.outages.begin()
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        self.tell(f"linreg_exp: the tracking store {self._uri} does not answer ({first_line}); "
                  f"the run waits for it up to {timeout:g} s, then trains on and delivers "
                  "later")  # fmt: skip
        self._log(f"the tracking store does not answer: {describe_error(error)}")
        while (waited := self.clock.monotonic() - began) < timeout and not self.stop_waiting():
            self._pause(min(delay, timeout - waited))
            delay = min(2 * delay, LONGEST_DELAY)
            try:
                reply = self.writer.write(self.outages.tagged(request))
            except Exception as again:
                if not self.writer.is_outage(again):
                    self.outages.end(self.clock.monotonic())
                    raise
                continue
            self.late = epochs_in(request)
            self._caught_up(self.clock.monotonic())
            return reply
        return self._start_spooling(request, waited)

    def _pause(self, seconds: float) -> None:
        """Sleep between tries, but not past the job saying it stops."""
        until = self.clock.monotonic() + seconds
        while self.clock.monotonic() < until and not self.stop_waiting():
            self.clock.sleep(min(0.25, max(0.0, until - self.clock.monotonic())))

    def _start_spooling(self, request: Request, waited: float) -> Reply:
        """From now on requests go to the spool, this one first; the store is probed."""
        assert self._spool_dir is not None and self.request is not None
        spool = Spool(self._spool_dir)
        self._log(f"after {waited:.0f} s, spooling to {spool.path}")
        runs = self.writer.open_runs()
        ids, last = {k: run[0] for k, run in runs.items()}, {k: run[1] for k, run in runs.items()}
        spool.begin(self.request, ids, self.writer.parent_run_id, last)
        spool.experiment_id = self.writer.experiment_id or spool.experiment_id
        self.writer.stop_samplers()
        self.backlog = Backlog(spool)
        self._probe()
        return self._spooled(request)

    def _spooled(self, request: Request) -> Reply:
        """Keep a request in the spool; if the store answers again, deliver the oldest ones
        (all of them for Close). The store's own answer, if this request got there."""
        assert self.backlog is not None
        request = self.outages.tagged(request)
        reply, final = self.backlog.keep(request), isinstance(request, Close)
        if self.backlog.drained and self.answers.is_set():
            done = self.backlog.drain(
                self.writer, None if final else CATCH_UP * epochs_in(request) + 1
            )
            self.late += done.epochs
            if done.outage:  # gone again: spool on, and ask again
                self.answers.clear()
                self._probe()
            elif done.refused is not None:
                self._refused(done.refused)
            elif not self.backlog:
                self.backlog = None
                self._caught_up(self.back_at or self.clock.monotonic())
                return done.reply or reply
        if final and self.backlog.drained:
            self.tell(f"linreg_exp: the tracking store did not come back (after "
                      f"{self.outages.so_far():.0f} s): the runs are kept in "
                      f"{self.backlog.spool.path}; deliver them with: linreg-exp sync "
                      f"{self._spool_dir}")  # fmt: skip
        return reply

    def _refused(self, why: str) -> None:
        """A spooled request the store refuses: the spool is left whole to sync, which says why."""
        assert self.backlog is not None
        self._log(f"the tracking store refused the spool's {why}")
        self.tell(f"linreg_exp: the tracking store refused a spooled request ({why[:200]}); the "
                  f"runs are kept in {self.backlog.spool.path}: linreg-exp sync {self._spool_dir}"
                  " delivers them or says why not")  # fmt: skip

    def _probe(self) -> None:
        """Ask the store in the background, every `probe_every` s, whether it is back."""
        if not self.probing:
            self.probing = True
            self.start(self._probe_until_it_answers)

    def _probe_until_it_answers(self) -> None:
        try:
            while not self.closed:
                self.clock.sleep(self.probe_every)
                try:
                    self.writer.probe()
                except Exception as error:
                    if self.writer.is_outage(error):
                        continue
                self.back_at = self.clock.monotonic()
                self.probing = False  # before answers: a drain that fails at once probes again
                self.answers.set()
                return
        finally:
            self.probing = False

    def _caught_up(self, back_at: float) -> None:
        """The store answers and has every request: the outage is over; say so."""
        lasted = self.outages.end(back_at)
        self.writer.restart_samplers()
        self.tell(f"linreg_exp: the tracking store {self._uri} is back after {lasted:.0f} s; "
                  f"{self.late} epochs delivered late")  # fmt: skip
        self._log(f"the tracking store is back after {lasted:.0f} s; {self.late} epochs late")
        self.late, self.back_at = 0, None
        self.answers.clear()

    def _log(self, line: str) -> None:
        """A line in the log file beside the spool (the console has one line an outage)."""
        if self._spool_dir is None:
            return
        with contextlib.suppress(OSError):
            Path(self._spool_dir).mkdir(parents=True, exist_ok=True)
            with (Path(self._spool_dir) / OUTAGE_LOG).open("a") as out:
                out.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    @property
    def _spool_dir(self) -> str | None:
        return self.request.spool_dir if self.request is not None else None

    @property
    def _uri(self) -> str:
        return mask_uri(self.request.tracking_uri) if self.request is not None else "?"
