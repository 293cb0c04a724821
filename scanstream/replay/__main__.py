"""`python -m scanstream.replay ...`: the same as `scanstream replay ...`."""

import sys

from scanstream.replay.cli import main

sys.exit(main(sys.argv[1:]))
