"""``python -m raycrawl``: the ``raycrawl`` command (for ``ray job submit -- python -m ...``)."""

import sys

from raycrawl.cli import main

sys.exit(main())
