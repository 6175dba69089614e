"""``python -m quickstudy``, the same as the ``quickstudy`` command."""

import sys

from quickstudy.cli import main

sys.exit(main())
