"""``python -m edgesam.cli``: the same as the ``edgesam`` command."""
import sys

from edgesam.cli import main

sys.exit(main())
