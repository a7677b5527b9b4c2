"""``python -m handmocap.inference``: the same command line tool as ``handmocap``."""

import sys

from .cli import main

sys.exit(main())
