"""``python -m poet_runtime``: the command line (see ``poet_runtime.cli``)."""

import sys

from poet_runtime.cli import main

if __name__ == "__main__":
    sys.exit(main())
