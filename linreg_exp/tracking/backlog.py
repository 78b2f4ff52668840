"""The live side of the spool: requests kept while the store is out, delivered once it is back.

The transport (transport.py) keeps here what it cannot deliver. Each request is written to the
spool (spool.py: what `linreg-exp sync` would replay if the run ended now) and, unless the run
is offline by design, its line noted (its number and where it starts: the requests themselves
stay on disk, however long the outage). Once the store answers,
`drain` sends the oldest first through the writer and marks each delivered in the spool's state
file, as sync marks it, with the run ids its placeholders became: a later sync sends none of
them again, and the store gets every request once, in order.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

from linreg_exp.tracking.journal import ParentNote, RunNote
from linreg_exp.tracking.messages import Epochs, FinishRun, Reply, Request, Started, StartRun
from linreg_exp.tracking.spool import PLACEHOLDER, Spool, with_report_drawn


class Delivery(Protocol):
    """What a drain needs of the writer (writer.Writer)."""

    parent_run_id: str | None

    def write(self, request: Request) -> Reply:
        """Do the request in the store; raise what kept it from being done."""

    def is_outage(self, error: Exception) -> bool:
        """Whether `error` says the store is out for now, rather than the request is wrong."""


def epochs_in(request: Request) -> int:
    return sum(len(b.rows) for b in request.batches) if isinstance(request, Epochs) else 0


@dataclass
class Drained:
    """What a drain did: the last reply (None if none), the epochs it delivered, and why it
    stopped early: the store out again (`outage`) or refusing a request (`refused`)."""

    reply: Reply | None = None
    epochs: int = 0
    outage: bool = False
    refused: str | None = None


class Backlog:
    """A spool and its requests not yet delivered (see the module docstring)."""

    def __init__(self, spool: Spool, drained: bool = True) -> None:
        """`drained`: False for a run spooled by design (offline), which only sync delivers."""
        self.spool, self.drained = spool, drained
        self.pending: deque[tuple[int, int]] = deque()  # (line number, its byte in the file)

    def __len__(self) -> int:
        return len(self.pending)

    def keep(self, request: Request) -> Reply:
        """Spool a request (a run's pictures drawn first, here); answered as the store would."""
        if isinstance(request, FinishRun) and request.report is not None:
            report = request.report  # drawn now, where its data is: the files wait
            request = with_report_drawn(request, report.run())
        line, offset, reply = self.spool.add(request)
        if self.drained:
            self.pending.append((line, offset))
        return reply

    def drain(self, writer: Delivery, owed: int | None) -> Drained:
        """Deliver the oldest requests until `owed` epochs (a request: at least one) are, or
        all of them (None). A new outage, or a request the store refuses, stops it: the rest
        wait (for the next drain, or for sync, which will name the error)."""
        done = Drained()
        while self.pending and (owed is None or owed > 0):
            line, offset = self.pending[0]
            request = self.spool.at(offset)
            assert not isinstance(request, RunNote | ParentNote), line  # we wrote a request
            try:
                done.reply = writer.write(request)
            except Exception as error:
                if writer.is_outage(error):
                    done.outage = True
                else:
                    done.refused = f"line {line}: {type(error).__name__}: {error}"[:5000]
                    self.drained = False  # sync's to deliver, and to explain
                done.reply = None
                return done
            self.spool.delivered(line)
            self._resolve(request, done.reply, writer.parent_run_id)
            self.pending.popleft()
            done.epochs += epochs_in(request)
            if owed is not None:
                owed -= max(1, epochs_in(request))
        return done

    def _resolve(self, request: Request, reply: Reply, parent_run_id: str | None) -> None:
        """The run ids the spool gave runs the store had not created yet, as they are now, in
        the state file (so that a later sync sends their requests there)."""
        if not isinstance(request, StartRun) or not isinstance(reply, Started):
            return
        spool = self.spool
        spooled = spool.run_ids.get(request.run, "")
        if spooled.startswith(PLACEHOLDER):
            spool.resolved(spooled, reply.run_id)
            spool.run_ids[request.run] = reply.run_id
        spooled_parent = spool.parent_run_id or ""
        if spooled_parent.startswith(PLACEHOLDER) and parent_run_id is not None:
            spool.resolved(spooled_parent, parent_run_id)
            spool.parent_run_id = parent_run_id
