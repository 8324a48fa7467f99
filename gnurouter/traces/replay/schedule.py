"""What to send when: a trace turned into a timeline of monotonic-clock times, sans I/O.

Time 0 of the trace is `t0` on the caller's clock; a record at trace time t
is due at t0 + t / speed (at t0 for every record with `speed=None`, "as fast
as the links take it").  Passes follow each other 1 ms of trace time apart,
each with connections of its own: a record's connection is the pair (pass,
trace connection id).  An OPEN record is due `lead` seconds early, so that
its handshake is over when its connection's first message is due.

The schedule reads the trace as a stream, at most `lookahead` seconds of
wall time ahead of the clock, and never touches a socket, a reactor or a
clock: the caller passes `now` and does the sending (`Replayer`), so it can
be driven by hand, record by record, in a test.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import NamedTuple, Protocol

from gnurouter.traces.format import Direction, Kind, Record, TraceError
from gnurouter.traces.replay.report import ReplayReport

#: (pass number, trace connection id): one replayed connection.
ConnectionKey = tuple[int, int]

#: Due after the last record of a pass when the trace is replayed again:
#: the pass's connections end there.
END_OF_PASS = Record(0, 0, 0, 0, b"")

#: Records read per `read_ahead()`, so that reading never holds sending up for long.
_READ_AHEAD_LIMIT = 1000
#: Trace time (us) between the last record of a pass and the first of the next.
_PASS_GAP_US = 1000
#: Wake-up interval when nothing at all is pending.
_IDLE_WAKE = 0.01


class RecordSource(Protocol):
    """One pass over a trace's records (a `TraceReader`)."""

    def __iter__(self) -> Iterator[Record]: ...

    def close(self) -> None: ...


class Due(NamedTuple):
    """A record and when it is due."""

    at: float
    record: Record
    pass_number: int

    @property
    def key(self) -> ConnectionKey:
        return (self.pass_number, self.record.conn)


class ReplaySchedule:
    """The timeline of one replay; counts what it reads into `report`.

    Drive it with `start(t0)`, then at each wake-up: `read_ahead(now)` (unless
    the links are backed up), `due_opens(now)` for the connections to open,
    `next_due(now)` until it returns None for the records to send (and the
    `END_OF_PASS` markers), and `wake_at(now)` for when to come back.
    `finished` is true once everything has been handed out.
    """

    def __init__(
        self,
        open_pass: Callable[[], RecordSource],
        report: ReplayReport,
        *,
        speed: float | None,
        loops: int,
        lead: float,
        lookahead: float,
    ) -> None:
        self._open_pass = open_pass
        self._report = report
        self._speed = speed
        self._loops = loops  # 0: forever
        self.lead = lead
        # Reading ahead must cover the lead, or OPEN records would be read too late.
        self._lookahead = max(lookahead, lead + 0.2)
        self._queue: deque[Due] = deque()  # MESSAGE, RAW and CLOSE records, and END_OF_PASS
        self._opens: deque[Due] = deque()
        self._source: RecordSource | None = None
        self._records: Iterator[Record] | None = None
        self._pass = 0
        self._t0 = 0.0
        self._first_us: int | None = None
        self._pass_offset_us = 0
        self._last_us = 0
        self._last_due = 0.0
        self._exhausted = False
        self._stopped = False

    # -- the trace, pass after pass ------------------------------------------------

    def start(self, t0: float) -> None:
        """Trace time 0 is `t0` (the caller's monotonic clock); opens the first pass."""
        self._t0 = t0
        self._start_pass()

    def stop(self) -> None:
        """Read nothing more: the current pass is closed, no further one starts."""
        self._stopped = True
        self._exhausted = True
        self.close()

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None

    def _start_pass(self) -> None:
        self._source = self._open_pass()
        self._records = iter(self._source)
        self._pass += 1
        self._report.loops = self._pass

    def _next_record(self) -> Record | None:
        """The next record, continuing into the next pass; None at the end."""
        while True:
            assert self._records is not None
            try:
                return next(self._records)
            except StopIteration:
                pass
            except TraceError as failure:
                self._report.trace_error = failure
                self.close()
                return None
            self.close()
            if self._stopped or (self._loops and self._pass >= self._loops):
                return None
            self._queue.append(Due(self._last_due, END_OF_PASS, self._pass))
            self._pass_offset_us = self._last_us + _PASS_GAP_US
            self._first_us = None
            self._start_pass()

    def _due(self, record: Record) -> float:
        if self._first_us is None:
            self._first_us = record.time_us
        trace_us = self._pass_offset_us + record.time_us - self._first_us
        self._last_us = trace_us
        self._report.trace_span = trace_us / 1e6
        speed = self._speed
        due = self._t0 if speed is None else self._t0 + trace_us / 1e6 / speed
        self._last_due = due
        return due

    # -- the timeline --------------------------------------------------------------

    def read_ahead(self, now: float) -> None:
        """Read records until `lookahead` seconds (wall) past `now` are scheduled."""
        queue = self._queue
        report = self._report
        horizon = now + self._lookahead
        taken = 0
        while (
            not self._exhausted
            and (not queue or queue[-1].at <= horizon)
            and taken < _READ_AHEAD_LIMIT
        ):
            record = self._next_record()
            if record is None:
                self._exhausted = True
                break
            taken += 1
            item = Due(self._due(record), record, self._pass)
            report.records += 1
            kind = record.kind
            if kind == Kind.OPEN:
                self._opens.append(item)
            elif kind == Kind.MESSAGE:
                if record.direction == Direction.OUT:
                    report.messages_out_in_trace += 1  # what the recording node sent
                    continue
                report.messages_scheduled += 1
                queue.append(item)
            elif kind == Kind.RAW:
                if record.direction == Direction.OUT:
                    continue
                report.raw_scheduled += 1
                queue.append(item)
            elif kind == Kind.CLOSE:
                queue.append(item)

    def due_opens(self, now: float) -> list[ConnectionKey]:
        """The connections to open by `now` (`lead` before their OPEN record)."""
        opens = self._opens
        keys = []
        while opens and opens[0].at - self.lead <= now:
            keys.append(opens.popleft().key)
        return keys

    def next_due(self, now: float) -> Due | None:
        """The next record due by `now`, in trace order; None when none is."""
        queue = self._queue
        if queue and queue[0].at <= now:
            return queue.popleft()
        return None

    def wake_at(self, now: float) -> float:
        """When something next falls due, or reading ahead should go on."""
        candidates = []
        if self._queue:
            candidates.append(self._queue[0].at)
        if self._opens:
            candidates.append(self._opens[0].at - self.lead)
        if not self._exhausted:
            # Keep reading ahead, a bounded chunk per wake-up.
            last = self._queue[-1].at if self._queue else now
            candidates.append(max(now, last - self._lookahead))
        return min(candidates) if candidates else now + _IDLE_WAKE

    @property
    def finished(self) -> bool:
        """Everything is read and handed out."""
        return self._exhausted and not self._queue and not self._opens
