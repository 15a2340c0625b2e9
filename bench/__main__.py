"""`python -m bench [--quick]`: the whole benchmark suite (bench/suite.py) in one command."""

import sys

from bench.suite import main

sys.exit(main())
