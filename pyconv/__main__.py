"""``python -m pyconv``: see :mod:`pyconv._cli`."""
import sys

from pyconv._cli import main

if __name__ == "__main__":
    sys.exit(main())
