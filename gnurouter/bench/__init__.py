"""Benchmarks shipped with the router: `gnurouter bench overload`, the SEDA experiment.

`router_command` is how every benchmark (here and under benchmarks/) starts the
router it measures: its own process, on loopback, dialling nobody.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

#: Benchmarks run on loopback only.
HOST = "127.0.0.1"


def router_command(
    port: int, *options: str, control_port: int | None = None, host: str = HOST
) -> list[str]:
    """`gnurouter run` listening on host:port, with no outgoing links, plus `options`."""
    control = ("--control", f"{host}:{control_port}") if control_port is not None else ()
    return [
        sys.executable,
        "-m",
        "gnurouter",
        "run",
        "--listen",
        f"{host}:{port}",
        *control,
        "--target-peers",
        "0",
        *options,
    ]


def run_module(module: str, *arguments: str) -> list[str]:
    """The command that runs a Python module with this interpreter."""
    return [sys.executable, "-m", module, *arguments]


__all__: Sequence[str] = ("HOST", "router_command", "run_module")
