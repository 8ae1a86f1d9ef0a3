"""``python -m torchstn ...``: the same program as the ``torchstn`` command (usable with ``torchrun``)."""

import sys

from torchstn.experiments.cli import main

if __name__ == "__main__":
    sys.exit(main())
