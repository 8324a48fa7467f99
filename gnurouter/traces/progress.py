"""Progress bars (tqdm) for long trace operations, shown only on a terminal."""

from __future__ import annotations

import sys
from typing import Any


class _Silent:
    """The progress bar when stderr is not a terminal: does nothing."""

    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(
    total: float | None, desc: str, unit: str = "rec", *, enabled: bool | None = None
) -> Any:
    """A tqdm bar on stderr when it is a TTY (or `enabled`), else a silent stand-in."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return _Silent()
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=True,
        dynamic_ncols=True,
        leave=False,
        file=sys.stderr,
    )


class FileProgress:
    """Bytes consumed from a file, for a bar that tracks a streaming reader's offset."""

    def __init__(self, bar: Any, reader: Any) -> None:
        self.bar = bar
        self.reader = reader
        self._last = 0

    def tick(self, *_: object) -> None:
        offset = self.reader.offset
        if offset != self._last:
            self.bar.update(offset - self._last)
            self._last = offset
