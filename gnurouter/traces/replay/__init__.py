"""Replaying a trace against a router: one real peer link per trace connection, on schedule.

Every trace connection becomes a TCP connection to the target that does the
real 0.6 handshake (`PeerConnection`, as the router itself does), opened
`lead` seconds of wall time before its OPEN record so that the handshake is
over when its first message is due.  Each IN message (and RAW record) is
written at its trace time divided by `speed`; OUT records are only counted
(what the recording node sent).  CLOSE records close the link once
everything before them is written.

* `schedule.py`: what to send when (`ReplaySchedule`), sans I/O: the trace
  read as a stream, at most `lookahead` seconds ahead of the clock.
* `link.py`: one connection (`ReplayLink`), a Twisted protocol framing
  through `PeerConnection`; it holds records while its socket is full.
* `replayer.py`: the `Replayer` that carries the schedule out on a reactor
  with a monotonic clock, one write per link per wake-up; `run_replay` (the
  `trace replay` command) and `attach_replay` (`gnurouter run --replay`).
* `report.py`: the `ReplayReport` (rates, lateness percentiles, what was
  unsent and why, connections, what came back) and its text.
"""

from gnurouter.traces.replay.link import ReplayLink
from gnurouter.traces.replay.replayer import Replayer, ReplayOptions, attach_replay, run_replay
from gnurouter.traces.replay.report import ReplayReport, format_report
from gnurouter.traces.replay.schedule import Due, ReplaySchedule

__all__ = [
    "Due",
    "ReplayLink",
    "ReplayOptions",
    "ReplayReport",
    "ReplaySchedule",
    "Replayer",
    "attach_replay",
    "format_report",
    "run_replay",
]
