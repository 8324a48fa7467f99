import sys

from gnurouter.cli import main

sys.exit(main())
