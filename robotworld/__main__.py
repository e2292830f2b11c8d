"""``python -m robotworld``: the ``robotworld`` command, where the console script is not installed."""

import sys

from robotworld.cli import main

sys.exit(main())
