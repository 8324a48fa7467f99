"""The one exception type for a peer that broke the protocol."""

from __future__ import annotations


class ProtocolError(Exception):
    """The peer sent something the protocol does not allow; the link is unusable.

    `bye_code` is the Bye (0x02) code to send before closing, in the ranges the
    Bye-Packet proposal (gtk-gnutella doc/gnutella/bye) defines: 400 for
    oversized or malformed data, 403 for messages living too long
    (hops + TTL above the limit), 413 for a broken QRP table update (what
    gtk-gnutella sends), 501 for a desynchronised stream. Local mistakes
    (calling a method in the wrong state, encoding out-of-range values) are
    ordinary `RuntimeError` / `ValueError`, never this type.
    """

    def __init__(self, reason: str, *, bye_code: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.bye_code = bye_code

    def __str__(self) -> str:
        return self.reason

    def __repr__(self) -> str:
        return f"ProtocolError({self.reason!r}, bye_code={self.bye_code})"

    def __reduce__(self) -> tuple[object, ...]:
        # The keyword-only bye_code would otherwise be lost when an error
        # crosses a process boundary (multiprocessing, pickled logs).
        return (_rebuild, (self.reason, self.bye_code))


def _rebuild(reason: str, bye_code: int) -> ProtocolError:
    return ProtocolError(reason, bye_code=bye_code)
