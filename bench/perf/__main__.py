"""``python -m bench.perf``: see :mod:`bench.perf.throughput`."""

import sys

from bench.perf.throughput import main

sys.exit(main())
