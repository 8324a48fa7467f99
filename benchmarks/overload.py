#!/usr/bin/env python3
"""The overload benchmark; the same code as `gnurouter bench overload` (see its --help)."""

import sys

from gnurouter.bench.overload import main

if __name__ == "__main__":
    sys.exit(main())
