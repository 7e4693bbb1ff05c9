"""``python -m reportgen`` (what ``torchrun -m reportgen run ...`` starts)."""

import sys

from .cli import main

sys.exit(main())
