"""``python -m sim.cli``: the same as the ``mcasim`` command."""
import sys

from . import main

sys.exit(main())
