"""``python -m repsim ...``: the ``repsim`` command itself (the console script calls
``repsim.cli:main`` too), for an environment whose scripts folder is not on PATH."""

import sys

from repsim.cli import main

if __name__ == "__main__":
    sys.exit(main())
