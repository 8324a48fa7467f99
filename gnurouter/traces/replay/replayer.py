"""The replayer: a `ReplaySchedule` carried out over `ReplayLink`s on a Twisted reactor.

One timer wakes the replayer when the schedule says something is due; every
record due by then is handed to its link, one write per link per wake-up, and
its lateness (time handed to the socket minus time due) is reported.  A link
that is not ready (handshaking, or its socket full) holds its records; while
more than `max_pending_bytes` wait in all, the schedule stops reading ahead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from gnurouter.edge.gctuning import tune_for_serving
from gnurouter.edge.servent import DEFAULT_HEADERS
from gnurouter.protocol.handshake import Headers
from gnurouter.protocol.messages import type_name
from gnurouter.traces.format import Kind, TraceReader
from gnurouter.traces.replay.link import LinkFactory, ReplayLink
from gnurouter.traces.replay.report import ReplayReport, SentRecord, format_report
from gnurouter.traces.replay.schedule import END_OF_PASS, ConnectionKey, Due, ReplaySchedule

log = logging.getLogger(__name__)

#: Records written per wake-up at `speed=None`, so that a replay as fast as
#: possible still lets the reactor read what comes back.
_MAX_BATCH_AT_FULL_SPEED = 5000
#: How long the last links may take to close before the report is made anyway.
_CLOSE_WAIT = 5.0
#: How often a replay waiting for its last writes looks again.
_DRAIN_POLL = 0.01
#: Seconds between progress bar updates.
_PROGRESS_INTERVAL = 0.25

_CLOSED_BY_TARGET = "link closed by the target"


@dataclass
class ReplayOptions:
    speed: float | None = 1.0  # None: as fast as the links take it
    loops: int = 1  # 0: forever
    deflate: bool = False
    lead: float = 0.2
    lookahead: float = 1.0
    max_connections: int = 1000
    max_pending_bytes: int = 16 << 20
    drain: float = 1.0  # seconds to keep reading after the last message
    connect_timeout: float = 10.0
    close_timeout: float = 3.0
    headers: tuple[tuple[str, str], ...] = DEFAULT_HEADERS
    progress: bool = False


class Replayer:
    """Replays `path` against `target`; `run()` returns a Deferred firing with the report."""

    def __init__(
        self,
        reactor: Any,
        path: str,
        target: tuple[str, int],
        options: ReplayOptions | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reactor = reactor
        self.path = str(path)
        self.target = target
        self.options = options or ReplayOptions()
        self.clock = clock
        self.report = ReplayReport(trace=self.path, speed=self.options.speed)
        self.received = [0] * 256
        self.schedule = ReplaySchedule(
            lambda: TraceReader(self.path),
            self.report,
            speed=self.options.speed,
            loops=self.options.loops,
            lead=self.options.lead,
            lookahead=self.options.lookahead,
        )
        pairs = list(self.options.headers)
        if self.options.deflate:
            pairs.append(("Accept-Encoding", "deflate"))
        self._headers = Headers.from_pairs(pairs)
        self.links: dict[ConnectionKey, ReplayLink] = {}
        self._gone: set[ConnectionKey] = set()  # closed by the target: later records are unsent
        self._live = 0
        self._timer: Any = None
        self.done: defer.Deferred[ReplayReport] = defer.Deferred()
        self._finishing = False
        self._started = 0.0
        self._bar: Any = None
        self._last_progress = 0.0

    # -- lifecycle -------------------------------------------------------------------

    def run(self) -> defer.Deferred[ReplayReport]:
        from gnurouter.traces.progress import progress

        self._bar = progress(None, "replay", unit="msg", enabled=self.options.progress)
        self._started = self.clock()
        # Time 0 of the schedule: far enough ahead for the first handshakes.
        self.schedule.start(self._started + self.options.lead + 0.05)
        self._wake()
        return self.done

    def stop(self) -> None:
        """End now: close every link and report (for a replay inside a stopping router)."""
        if not self._finishing:
            self.report.interrupted = True
        self.schedule.stop()
        self._finish()

    # -- carrying the schedule out -----------------------------------------------------

    def _wake(self) -> None:
        self._timer = None
        if self._finishing:
            return
        now = self.clock()
        schedule = self.schedule
        pending_bytes = sum(link.pending_bytes for link in self.links.values())
        if pending_bytes <= self.options.max_pending_bytes:
            schedule.read_ahead(now)
        for key in schedule.due_opens(now):
            self._connect(key)
        # Each ready link's records of this wake-up, written with one call.
        batches: dict[ReplayLink, list[bytes]] = {}
        written: list[SentRecord] = []
        max_batch = _MAX_BATCH_AT_FULL_SPEED if self.options.speed is None else 1 << 30
        while len(written) < max_batch:
            item = schedule.next_due(now)
            if item is None:
                break
            self._hand_out(item, batches, written)
        for link, parts in batches.items():
            self._write(link, parts)
        if written:
            # Lateness counts until the bytes are handed to the sockets.
            self.report.sent(self.clock(), written)
        self._progress(now)
        if schedule.finished:
            self._drain_then_finish()
            return
        delay = max(0.0, schedule.wake_at(now) - self.clock())
        self._timer = self.reactor.callLater(delay, self._wake)

    def _hand_out(
        self, item: Due, batches: dict[ReplayLink, list[bytes]], written: list[SentRecord]
    ) -> None:
        """Give one due record to its link: into this wake-up's batch, or held by the link."""
        record = item.record
        if record is END_OF_PASS:
            for ending in [link for link in batches if link.key[0] == item.pass_number]:
                self._write(ending, batches.pop(ending))
            self._end_pass_connections(item.pass_number)
            return
        report = self.report
        is_message = record.kind == Kind.MESSAGE
        link = self.links.get(item.key)
        if link is None:
            if item.key in self._gone:
                if is_message:
                    report.unsent[_CLOSED_BY_TARGET] += 1
                return
            if record.kind == Kind.CLOSE:
                return
            link = self._connect(item.key)  # no OPEN record: open on first use
        if record.kind == Kind.CLOSE:
            parts = batches.pop(link, None)
            if parts:
                self._write(link, parts)
            link.request_close()
            return
        if link.closed or link.close_requested:
            if is_message:
                report.unsent[_CLOSED_BY_TARGET if link.closed else "after close"] += 1
            return
        if link.ready:
            batches.setdefault(link, []).append(record.data)
            written.append((item.at, is_message, len(record.data)))
        else:
            link.hold(item.at, record.data, is_message)

    def _write(self, link: ReplayLink, parts: list[bytes]) -> None:
        if link.closed:
            return
        link.write(parts[0] if len(parts) == 1 else b"".join(parts))

    def _progress(self, now: float) -> None:
        if self._bar is not None and now - self._last_progress > _PROGRESS_INTERVAL:
            self._last_progress = now
            self._bar.update(self.report.messages_sent - self._bar.n)

    # -- links (LinkOwner) ---------------------------------------------------------------

    def _connect(self, key: ConnectionKey) -> ReplayLink:
        old = self.links.get(key)
        if old is not None and not old.closed:
            return old
        options = self.options
        link = ReplayLink(
            self,
            key,
            headers=self._headers,
            deflate=options.deflate,
            close_timeout=options.close_timeout,
        )
        self.links[key] = link
        report = self.report
        report.connections_opened += 1
        self._live += 1
        report.max_concurrent = max(report.max_concurrent, self._live)
        if self._live > options.max_connections:
            report.error(f"more than {options.max_connections} connections at once")
        host, port = self.target
        self.reactor.connectTCP(host, port, LinkFactory(link), timeout=options.connect_timeout)
        return link

    def link_established(self, link: ReplayLink) -> None:
        self.report.connections_established += 1

    def connect_failed(self, link: ReplayLink, reason: Failure) -> None:
        self.report.connect_failures += 1
        self.report.error(
            f"connect to {self.target[0]}:{self.target[1]}: {reason.getErrorMessage()}"
        )
        self.link_lost(link, reason)

    def link_lost(self, link: ReplayLink, reason: Failure) -> None:
        if link.closed:
            return
        link.closed = True
        self._live -= 1
        link.unpause()
        if link.pending:
            why = _CLOSED_BY_TARGET if link.established else "handshake failed"
            self.report.unsent[why] += link.drop_pending()
        if not link.close_requested and not self._finishing and link.established:
            self.report.closed_by_target += 1
        if self.links.get(link.key) is link:
            del self.links[link.key]
            if not link.close_requested:
                self._gone.add(link.key)  # later records of this connection are unsendable
        if not link.lost.called:
            link.lost.callback(None)

    def _end_pass_connections(self, pass_number: int) -> None:
        """A pass is over: close its links (the trace ends, so do its connections)."""
        for key, link in list(self.links.items()):
            if key[0] == pass_number:
                link.request_close()
        self._gone = {key for key in self._gone if key[0] != pass_number}

    # -- the end ---------------------------------------------------------------------

    def _drain_then_finish(self) -> None:
        """Wait for queued writes, then `drain` seconds for answers, then close and report."""
        self._timer = None
        if self._finishing:
            return
        if any(link.pending and not link.closed for link in self.links.values()):
            self._timer = self.reactor.callLater(_DRAIN_POLL, self._drain_then_finish)
            return
        self._timer = self.reactor.callLater(self.options.drain, self._finish)

    @defer.inlineCallbacks
    def _finish(self) -> Any:
        if self._finishing:
            return
        self._finishing = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.schedule.close()
        waiting = []
        for link in list(self.links.values()):
            if not link.closed:
                waiting.append(link.lost)
                link.request_close(discard_pending=True)
        if waiting:
            done = defer.DeferredList(waiting, consumeErrors=True)
            timeout = self.reactor.callLater(_CLOSE_WAIT, done.cancel)
            try:
                yield done
            except defer.CancelledError:  # pragma: no cover - a link that would not close
                self.report.error(f"some links did not close within {_CLOSE_WAIT:g} s")
            if timeout.active():
                timeout.cancel()
        report = self.report
        report.wall_seconds = self.clock() - self._started
        report.received_by_type = {type_name(t): n for t, n in enumerate(self.received) if n}
        if self._bar is not None:
            self._bar.update(report.messages_sent - self._bar.n)
            self._bar.close()
        self.done.callback(report)


# -- entry points ----------------------------------------------------------------------------


def run_replay(path: str, target: tuple[str, int], options: ReplayOptions) -> ReplayReport:
    """Run a replay on the global reactor until it ends (the `trace replay` command)."""
    from twisted.internet import reactor as global_reactor

    reactor: Any = global_reactor
    # As in `gnurouter run`: GC walks show up as lateness.
    tune_for_serving()
    result: list[ReplayReport] = []
    failure: list[Failure] = []
    replayer = Replayer(reactor, path, target, options)

    def start() -> None:
        done = replayer.run()
        done.addCallbacks(result.append, failure.append)
        done.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", replayer.stop)
    reactor.run(installSignalHandlers=True)
    if failure:
        failure[0].raiseException()
    if not result:  # interrupted before the report was made
        replayer.report.interrupted = True
        return replayer.report
    return result[0]


def attach_replay(reactor: Any, router: Any, args: Any) -> Replayer:
    """`gnurouter run --replay FILE`: a replayer in the router's reactor, over loopback."""
    from gnurouter.stages.catcher import CatcherHandler

    host, port = router.listening_address()
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if "target_peers" not in vars(args):
        catcher = router.stages["catcher"].handler
        if isinstance(catcher, CatcherHandler):
            catcher.target_peers = 0  # replay traffic only, no outgoing connections
    options = ReplayOptions(
        speed=args.replay_speed,
        loops=0 if args.replay_loop else 1,
        lead=getattr(args, "replay_lead", 0.2),
    )
    TraceReader(args.replay).close()  # fail now on a bad file
    replayer = Replayer(reactor, args.replay, (host, port), options)

    def report(result: ReplayReport) -> ReplayReport:
        how = "stopped with the router" if result.interrupted else "finished"
        log.info("replay of %s %s:\n%s", args.replay, how, format_report(result))
        return result

    def start() -> None:
        replayer.run().addCallback(report)

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", replayer.stop)
    log.info("replaying %s against %s:%d", args.replay, host, port)
    return replayer
