"""``python -m cnncc.cli``: the same as the ``cnncc`` script."""

import sys

from cnncc.cli import main

sys.exit(main())
