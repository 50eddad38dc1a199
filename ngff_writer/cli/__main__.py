"""``python -m ngff_writer.cli``: the ``ngff-writer`` command."""

import sys

from . import main

sys.exit(main())
