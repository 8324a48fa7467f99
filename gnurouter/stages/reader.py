"""Reader stage: socket bytes in, coalesced per peer, handed to the parser in arrival order."""

from __future__ import annotations

from typing import Any

from gnurouter.conditioning.backpressure import InputFlowControl
from gnurouter.mesh.peers import Peer
from gnurouter.seda.stage import Sink, Stage, report_failure
from gnurouter.stages.events import (
    BytesReceived,
    ParserEvent,
    PeerFinished,
    PeerLost,
    PeerOpened,
    ReaderEvent,
    StreamChunk,
)


class ReaderHandler:
    """Accounts bytes per peer and joins the chunks of one peer within a batch.

    Joining matters under load: many small TCP reads of one peer become one
    parser event, so the parser's per-event cost is paid once per batch.
    """

    def __init__(self, parser: Sink[ParserEvent], flow: InputFlowControl) -> None:
        self.parser = parser
        self.flow = flow
        self.stage: Stage[ReaderEvent] | None = None  # set by the graph builder

    def handle_events(self, batch: list[Any]) -> None:
        chunks: dict[Peer, list[bytes]] = {}
        for event in batch:
            try:
                if isinstance(event, BytesReceived):
                    event.peer.counters.bytes_in += len(event.data)
                    chunks.setdefault(event.peer, []).append(event.data)
                elif isinstance(event, PeerOpened | PeerFinished | PeerLost):
                    # Lifecycle events keep their place relative to the bytes (the
                    # housekeeping path would let "peer lost" overtake its last bytes).
                    self._flush(chunks)
                    self.parser.enqueue(event)
            except Exception as error:
                report_failure(self.stage, event, error)
        self._flush(chunks)
        self.flow.release_if_drained()

    def _flush(self, chunks: dict[Peer, list[bytes]]) -> None:
        for peer, parts in chunks.items():
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            # Stream stages are not thresholded by refusal (see backpressure),
            # so this enqueue always succeeds.
            self.parser.enqueue(StreamChunk(peer, data))
        chunks.clear()
