"""``python -m loadtest.bench``: see ``--help``."""

import sys

from .cli import main

sys.exit(main())
